"""Unit layer: the hub's user names, uids and pins (hub/persistent_hub/accounts.py, hub/requirements*.txt)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from persistent_hub import accounts
from persistent_hub.accounts import AccountError

HUB = Path(__file__).resolve().parents[2] / "hub"


@pytest.mark.parametrize("name", ["alice", "j.doe", "a_b-c", "x" * 32, "r2d2"])
def test_names_a_container_can_hold_are_taken(name):
    """Names of lower-case letters, digits and . _ - starting with a letter should be taken as given."""
    assert accounts.check_username(name) == name


@pytest.mark.parametrize("name", ["", "Alice", "bob smith", "a/b", "ünï", "9lives", "-x", ".x", "x" * 33, "a:b"])
def test_other_names_are_refused_saying_what_is_taken(name):
    """Any other name should be refused with what a name may hold."""
    with pytest.raises(AccountError, match="lower-case letters, digits"):
        accounts.check_username(name)


def test_uids_are_kept_and_new_ones_follow(tmp_path, monkeypatch):
    """Each user should keep their uid; a new user gets the next free one; a given uid is used as given."""
    monkeypatch.setattr(accounts, "STATE_DIR", tmp_path)
    monkeypatch.setattr(accounts, "USERS_FILE", tmp_path / "users.json")
    assert accounts.ids_of("alice") == (accounts.FIRST_UID, accounts.FIRST_UID)
    assert accounts.ids_of("bob", 20000, 100) == (20000, 100)
    assert accounts.ids_of("carol") == (20001, 20001)
    assert accounts.ids_of("alice") == (accounts.FIRST_UID, accounts.FIRST_UID)
    with pytest.raises(AccountError, match="already has uid"):
        accounts.ids_of("alice", 5)
    with pytest.raises(AccountError, match="above 0"):
        accounts.ids_of("root", 0)
    accounts.forget("bob")
    assert set(json.loads((tmp_path / "users.json").read_text())) == {"alice", "carol"}
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600


def pins(path: Path) -> dict[str, str]:
    found = (re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()) for line in path.read_text().splitlines())
    return {m.group(1).lower().replace("_", "-"): m.group(2) for m in found if m}


def test_users_servers_carry_the_hubs_jupyterhub():
    """The users' image should pin the same jupyterhub as the hub (the single-user server must match it)."""
    hub, user = pins(HUB / "requirements.txt"), pins(HUB / "requirements-singleuser.txt")
    assert hub["jupyterhub"] == user["jupyterhub"], (hub["jupyterhub"], user["jupyterhub"])
    assert hub["jupyterhub"].startswith("6.") and hub["dockerspawner"].startswith("14."), hub
