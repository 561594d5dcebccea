"""Failed logins, kept in the hub's volume: a client that keeps guessing is held off for growing spells,
per client and name, so that nobody else's failures lock a user out, and a hub restart forgets nothing."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

from . import accounts


@dataclasses.dataclass
class Failures:
    """One client's failed logins as one user: how many since the last spell, and the spells so far."""

    count: int = 0
    spells: int = 0
    until: float = 0.0  # refused until then (epoch seconds)
    last: float = 0.0


class LoginFailures:
    """Failed logins per key ("client ADDRESS user NAME" or "device ID user NAME"), in a private file."""

    def __init__(self, path: Path, allowed: int, first_spell: float, longest_spell: float = 3600.0,
                 forget_after: float = 86400.0, most_keys: int = 10000):
        self.path, self.allowed = path, allowed
        self.first_spell, self.longest_spell = first_spell, longest_spell
        self.forget_after, self.most_keys = forget_after, most_keys
        self._lock = threading.Lock()
        self._keys: dict[str, Failures] = {}
        try:
            kept = json.loads(path.read_text())
            self._keys = {key: Failures(**value) for key, value in kept.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError) as exc:  # damaged: start again rather than refuse every login
            print(f"persistent_hub: {path} is unreadable ({exc}); failed logins start from none", flush=True)

    def locked_for(self, key: str, now: float | None = None) -> float:
        """Seconds this key is still refused (0: it may try)."""
        now = time.time() if now is None else now
        with self._lock:
            failures = self._keys.get(key)
            return max(0.0, failures.until - now) if failures else 0.0

    def failed(self, key: str, now: float | None = None) -> float:
        """Count a failure; the seconds of the spell it starts (0: none yet)."""
        now = time.time() if now is None else now
        with self._lock:
            failures = self._keys.setdefault(key, Failures())
            if now - failures.last > self.forget_after:
                failures.count, failures.spells = 0, 0
            failures.count, failures.last = failures.count + 1, now
            spell = 0.0
            if self.allowed and failures.count >= self.allowed:
                spell = min(self.longest_spell, self.first_spell * 2 ** failures.spells)
                failures.count, failures.spells, failures.until = 0, failures.spells + 1, now + spell
            self._save(now)
            return spell

    def succeeded(self, key: str) -> None:
        with self._lock:
            if self._keys.pop(key, None) is not None:
                self._save(time.time())

    def _save(self, now: float) -> None:
        keys = {key: f for key, f in self._keys.items()
                if now - f.last <= self.forget_after or f.until > now}
        if len(keys) > self.most_keys:  # a flood of names: the oldest go first
            keys = dict(sorted(keys.items(), key=lambda item: item[1].last)[-self.most_keys:])
        self._keys = keys
        accounts.write_private(self.path, json.dumps({k: dataclasses.asdict(f) for k, f in keys.items()}))
