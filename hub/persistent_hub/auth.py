"""The hub's authenticator: NativeAuthenticator's password store (bcrypt hashes in the hub's database),
checked so that a login tells an outsider nothing and a guesser locks out only themselves.

NativeAuthenticator 1.3.0's own pages (its login form, sign-up, authorization area) do not work with
JupyterHub 6 (their handlers call the hub's removed `statsd`: every login is a 500), and sign-up is
off here anyway: users are made by an admin (scripts/hub user add). So none of its pages are
registered; the hub's LoginHandler calls authenticate() below, which replaces NativeAuthenticator's:
theirs hashes on the event loop, answers an unknown user at once and a too-long password with a 500,
and locks a name out in memory for anyone who types it wrong. tests/test_hub.py logs in through the
form, so an upgrade that breaks this fails there.
"""

from __future__ import annotations

import asyncio
import secrets

from nativeauthenticator import NativeAuthenticator

from . import accounts, logins, passwords

DEVICE_COOKIE = "persistent-hub-device"
DEVICE_DAYS = 90


class HashedPasswordAuthenticator(NativeAuthenticator):
    """NativeAuthenticator's passwords: checked off the event loop, in equal time, locked out per client."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # NativeAuthenticator's settings say how many failures start a spell, and the first spell's length.
        self.failures = logins.LoginFailures(accounts.STATE_DIR / "login-failures.json",
                                             self.allowed_failed_logins, self.seconds_before_next_try)
        passwords._CHECKER.submit(passwords.stand_in)  # made now, not in an unknown user's first login

    def get_handlers(self, app):
        return []

    def validate_username(self, username):
        if not super().validate_username(username):
            return False
        try:
            accounts.check_username(username)
        except accounts.AccountError as exc:
            self.log.warning("%s", exc)
            return False
        return True

    def _client_key(self, handler, name: str) -> str:
        """A browser that logged in as NAME before is its own client (its signed cookie), wherever it is;
        any other is its address (every client reaching the hub through the host's published port shares
        the Docker gateway's: the cookie is what keeps their logins apart)."""
        device = handler.get_signed_cookie(DEVICE_COOKIE, max_age_days=DEVICE_DAYS)
        if device and device.decode(errors="replace").split(" ")[0] == name:
            return f"device {device.decode(errors='replace')}"
        return f"client {handler.request.remote_ip} user {name}"

    async def authenticate(self, handler, data):
        name = self.normalize_username(str(data.get("username") or ""))
        password = str(data.get("password") or "")
        key = self._client_key(handler, name)
        wait = self.failures.locked_for(key)
        if wait:
            self.log.warning("login as %r from %s refused: locked for %d s more after failed logins", name,
                             handler.request.remote_ip, wait)
            return None
        user = self.get_user(name) if self.validate_username(name) else None
        matches = await passwords.check_off_loop(password, user.password if user is not None else None)
        if matches and user.is_authorized and (not user.has_2fa or user.is_valid_token(data.get("2fa"))):
            await asyncio.to_thread(self.failures.succeeded, key)
            if not key.startswith("device "):
                handler.set_signed_cookie(DEVICE_COOKIE, f"{name} {secrets.token_hex(16)}",
                                          expires_days=DEVICE_DAYS, httponly=True, path=handler.hub.base_url)
            return name
        spell = await asyncio.to_thread(self.failures.failed, key)  # (an fsynced write)
        if spell:
            self.log.warning("failed logins as %r from %s: refused for %d s", name, handler.request.remote_ip,
                             spell)
        return None
