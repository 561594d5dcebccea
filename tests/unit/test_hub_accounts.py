"""Unit layer: the hub's user names, uids and pins (hub/persistent_hub/accounts.py, hub/requirements*.txt)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from persistent_hub import accounts, deployment, logins
from persistent_hub.accounts import AccountError

HUB = Path(__file__).resolve().parents[2] / "hub"


@pytest.fixture
def named_as_docker_spawner(monkeypatch):
    """DockerSpawner's escaping (. _ - as three characters) without DockerSpawner, which the hub's image holds
    (tests/test_hub.py checks the real one)."""
    def container_name(user, prefix):
        return f"{prefix}-{''.join(c if c.isalnum() else f'-{ord(c):x}' for c in user)}"

    monkeypatch.setattr(deployment, "container_name", container_name)


@pytest.mark.parametrize("name", ["alice", "j.doe", "a_b-c", "x" * 32, "r2d2"])
def test_names_a_container_can_hold_are_taken(name, named_as_docker_spawner):
    """Names of lower-case letters, digits and . _ - starting with a letter should be taken as given."""
    assert accounts.check_username(name, "persistent-notebooks-hub-user") == name


@pytest.mark.parametrize("name", ["", "Alice", "bob smith", "a/b", "ünï", "9lives", "-x", ".x", "x" * 33, "a:b"])
def test_other_names_are_refused_saying_what_is_taken(name, named_as_docker_spawner):
    """Any other name should be refused with what a name may hold."""
    with pytest.raises(AccountError, match="lower-case letters, digits"):
        accounts.check_username(name, "persistent-notebooks-hub-user")


def test_names_too_long_for_a_container_are_refused_with_the_limit(named_as_docker_spawner):
    """A name whose escaped container name would pass 63 characters should be refused saying how long a name
    may be here; the same name under a shorter prefix is taken."""
    name = "j.r.r.tolkien.the.hobbit"  # 24 characters, 36 escaped
    with pytest.raises(AccountError, match=r"too long.* holds at most 63\. Here a name may have 33 characters"):
        accounts.check_username(name, "persistent-notebooks-hub-user")
    assert accounts.check_username(name, "hub-user") == name


def test_failed_logins_lock_out_one_client_for_growing_spells_kept_across_restarts(tmp_path):
    """After the allowed failures a key should be refused for a spell, doubling each time up to the longest;
    another key is untouched; a success forgets the key; a new store (a restarted hub) reads the spells back."""
    path = tmp_path / "login-failures.json"
    store = logins.LoginFailures(path, allowed=3, first_spell=60, longest_spell=200)
    attacker, user = "client 10.0.0.9 user alice", "device alice 1f2e user alice"
    assert [store.failed(attacker, now=1000) for _ in range(3)] == [0, 0, 60]
    assert store.locked_for(attacker, now=1030) == 30 and store.locked_for(user, now=1030) == 0
    assert logins.LoginFailures(path, 3, 60, 200).locked_for(attacker, now=1030) == 30, "a restart forgot"
    assert [store.failed(attacker, now=1100) for _ in range(3)] == [0, 0, 120]
    assert [store.failed(attacker, now=1300) for _ in range(3)] == [0, 0, 200], "spells grow up to the longest"
    store.failed(user, now=1300)
    store.succeeded(user)
    assert user not in path.read_text() and path.stat().st_mode & 0o777 == 0o600
    path.write_text("{damaged")
    assert logins.LoginFailures(path, 3, 60).locked_for(attacker) == 0


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
