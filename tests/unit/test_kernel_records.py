"""The kernel records' contract (state.kernels): what parses, what is damaged and set aside, and by whom."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from persistent_notebooks.state import kernels
from persistent_notebooks.state.kernels import DamagedRecord, KernelRecord

GOOD = {"kernel_id": "k1", "kernel_name": "python3", "connection_file": "/c/kernel-k1.json", "pid": 12,
        "start_time": 345, "pgid": 12, "instance": "boot/1", "ip": "127.0.0.1", "cwd": "/workspace",
        "env": {"JPY_SESSION_NAME": "/workspace/a.ipynb"}, "notebook": "a.ipynb", "notebook_seen": 1.5,
        "restored_at": None}


def test_a_record_goes_through_its_json_unchanged():
    record = KernelRecord.parse(GOOD, "k1.json")
    assert record.env == GOOD["env"] and record.notebook_seen == 1.5
    assert KernelRecord.parse(json.loads(record.to_json()), "k1.json") == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.pid = 1  # type: ignore[misc]
    assert record.replace(pid=13).pid == 13 and record.pid == 12


def test_only_the_four_keys_a_kernel_needs_are_required_and_unknown_keys_are_ignored():
    minimal = {k: GOOD[k] for k in ("kernel_id", "kernel_name", "connection_file", "pid")}
    record = KernelRecord.parse({**minimal, "written_by": "a later version"}, "k1.json")
    assert (record.env, record.start_time, record.notebook) == ({}, None, None)


@pytest.mark.parametrize(("data", "problem"), [
    ([1, 2], "a JSON list, not an object"),
    ({**GOOD, "pid": None}, "'pid' is missing"),
    ({**GOOD, "pid": "12"}, "'pid' is not a int"),
    ({**GOOD, "pid": True}, "'pid' is not a int"),
    ({**GOOD, "start_time": 1.5}, "'start_time' is not a int"),
    ({**GOOD, "env": {"A": 1}}, "'env' holds something other than strings"),
    ({**GOOD, "kernel_id": "k2"}, "kernel_id 'k2' is not its file name"),
])
def test_a_damaged_record_says_what_is_wrong(data, problem):
    with pytest.raises(DamagedRecord, match=problem):
        KernelRecord.parse(data, "k1.json")


def test_only_the_owner_sets_a_damaged_record_aside(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "KERNELS_DIR", tmp_path)
    kernels.write(KernelRecord.parse(GOOD, "k1.json"))
    assert oct(os.stat(tmp_path / "k1.json").st_mode & 0o777) == "0o600"
    (tmp_path / "k2.json").write_text('{"kernel_id": "k2"')
    assert [r.kernel_id for r in kernels.all_records()] == ["k1"]
    assert (tmp_path / "k2.json").exists(), "a reader that is not the owner moved a record"
    assert [r.kernel_id for r in kernels.all_records(owner=True)] == ["k1"]
    assert not (tmp_path / "k2.json").exists() and (tmp_path / "k2.json.damaged").exists()
    assert kernels.live() == [], "a record of a process that is not running counts as live"
    kernels.remove("k1")
    assert kernels.read("k1") is None
