"""Passwords as the hub keeps them: bcrypt hashes (NativeAuthenticator's table), checked by one low-priority
thread off the hub's event loop, in the same time and with the same answer whether or not the user exists."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import secrets
import threading

import bcrypt

MOST_BYTES = 72  # bcrypt reads no more (bcrypt 5 refuses more; earlier versions cut silently)
MIN_CHARACTERS = 8


def problem(password: str) -> str | None:
    """Why a new password cannot be taken, saying what would be; None if it can."""
    if len(password) < MIN_CHARACTERS:
        return f"the password has {len(password)} characters; at least {MIN_CHARACTERS} are needed."
    if len(password.encode()) > MOST_BYTES:
        return (f"the password is {len(password.encode())} bytes long; bcrypt reads only the first {MOST_BYTES}, "
                f"so at most {MOST_BYTES} bytes (UTF-8) are taken: use a shorter one.")
    return None


def hashed(password: str) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt())


@functools.cache
def stand_in() -> bytes:
    """A hash no password matches, of the same cost as users' hashes: checked for unknown users."""
    return hashed(secrets.token_urlsafe(24))


def check(password: str, stored: bytes) -> bool:
    """Whether the password matches; the same work for any length (the check of a longer one fails)."""
    given = password.encode()
    matches = bcrypt.checkpw(given[:MOST_BYTES], stored)
    return matches and len(given) <= MOST_BYTES


def _lower_priority() -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # the event loop's core comes first


# One thread: concurrent logins queue here rather than take every core from the hub (bcrypt lets go of
# the GIL while it hashes, so the event loop runs meanwhile).
_CHECKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt",
                                                 initializer=_lower_priority)


async def check_off_loop(password: str, stored: bytes | None) -> bool:
    """check() in the checking thread; stored None (no such user) checks the stand-in and fails."""
    target = stand_in() if stored is None else stored
    matches = await asyncio.get_running_loop().run_in_executor(_CHECKER, check, password, target)
    return matches and stored is not None
