"""The run records' contract (state.runs): what parses, what is refused, what they say, and when a run was cut short."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from persistent_notebooks import paths
from persistent_notebooks.state import runs
from persistent_notebooks.state.runs import RunRecord, RunState

NO_PID = 2**22 + 7  # above the largest pid_max Linux allows: no process has it

# A record as the previous version (dicts) wrote it: every key it had, its state a plain string.
PREVIOUS = {"id": "ab12cd34", "notebook": "a/b.ipynb", "path": "/workspace/a/b.ipynb", "kernel_id": "k1" * 18,
            "kernel_name": "python3", "selection": "all", "keep_going": False, "cells_total": 4, "cells_done": 2,
            "cell": 3, "cell_index": 3, "state": "running", "reason": None, "error": None, "started": 1700000000.5,
            "ended": None, "updated": 1700000010.25, "runner_pid": 41, "runner_start": 123456, "resume": True,
            "resumed_from": None, "last_cell": 7, "saved_to": None, "notes": ["cell 2 was edited"],
            "errors": [{"cell": 1, "error": "ValueError"}], "write_error": None}


def record(**changes) -> RunRecord:
    return dataclasses.replace(RunRecord.from_dict(PREVIOUS), **changes)


def test_a_record_goes_through_its_json_unchanged():
    original = record(state=RunState.SAVING, queued=[{"id": "c1", "source": "x = 1"}], resumed_by="-",
                      resume_error="no kernel", cell="c1c1c1c1 (not saved)", write_error="disk full")
    data = json.loads(original.to_json())
    assert data["state"] == "saving" and data["queued"] == [{"id": "c1", "source": "x = 1"}]
    assert RunRecord.from_dict(data) == original


def test_a_record_the_previous_version_wrote_reads_with_its_keys_unchanged():
    parsed = RunRecord.from_dict(PREVIOUS)
    assert parsed.state is RunState.RUNNING and parsed.cell == 3 and parsed.notes == ["cell 2 was edited"]
    assert parsed.errors == [{"cell": 1, "error": "ValueError"}] and parsed.queued == [] and parsed.resumed_by is None
    assert PREVIOUS.items() <= json.loads(parsed.to_json()).items(), "a key was renamed or a value changed"


def test_unknown_keys_are_ignored_and_null_is_the_default():
    parsed = RunRecord.from_dict({**PREVIOUS, "written_by": "a later version", "notes": None})
    assert parsed == record(notes=[])


@pytest.mark.parametrize(("data", "problem"), [
    ([PREVIOUS], "not a list"),
    ({k: v for k, v in PREVIOUS.items() if k != "state"}, "without its 'state'"),
    ({**PREVIOUS, "id": None}, "without its 'id'"),
    ({k: v for k, v in PREVIOUS.items() if k != "notebook"}, "without its 'notebook'"),
    ({**PREVIOUS, "state": "paused"}, "'paused' is not a valid RunState"),
    ({**PREVIOUS, "notes": "cell 2 was edited"}, "'notes' is not a list"),
])
def test_a_record_without_an_id_a_notebook_or_a_known_state_or_damaged_is_refused(data, problem):
    with pytest.raises(ValueError, match=problem):
        RunRecord.from_dict(data)


@pytest.mark.parametrize(("changes", "text"), [
    ({"state": RunState.DONE, "errors": [{"cell": 2, "error": "ZeroDivisionError"}, {"cell": 5, "error": "KeyError"}]},
     "done, with errors in cell 2 (ZeroDivisionError), cell 5 (KeyError)"),
    ({"state": RunState.DONE, "errors": []}, "done"),
    ({"state": RunState.FAILED, "cell": 2, "error": "ZeroDivisionError"}, "failed at cell 2 (ZeroDivisionError)"),
    ({"state": RunState.FAILED, "cell": 2}, "failed at cell 2"),
    ({"state": RunState.INTERRUPTED, "resumed_by": "ef56ab78"},
     "interrupted by a container stop at cell 3, resumed as run ef56ab78"),
    ({"state": RunState.INTERRUPTED, "reason": runs.RUNNER_GONE},
     "interrupted by the end of the runner (it was killed) at cell 3"),
    ({"state": RunState.WAITING}, "waiting at cell 3: the kernel is busy with another request"),
    ({"state": RunState.SAVING, "write_error": "could not save a/b.ipynb: disk full"},
     "ran to cell 3; its outputs are kept and saved once the notebook can be written (could not save a/b.ipynb: "
     "disk full)"),
    ({"state": RunState.SAVING}, "ran to cell 3; its outputs are kept and saved once the notebook can be written "
                                 "(retrying)"),
    ({"state": RunState.RUNNING, "resumed_from": "01234567"},
     "running cell 3 (resumed run 01234567 after a container restart)"),
])
def test_describe_says_what_the_run_did(changes, text):
    assert record(**changes).describe() == text


def test_an_active_run_whose_runner_is_gone_was_cut_short_and_a_finished_one_was_not():
    assert record(runner_pid=NO_PID).cut_short()
    assert record(runner_pid=None).cut_short()
    assert not record(runner_pid=NO_PID, state=RunState.DONE).cut_short()
    alive = record(runner_pid=os.getpid(), runner_start=paths.process_start_time(os.getpid()))
    assert not alive.runner_alive(), "a process that is not the runner counts as the run's runner"


def test_the_store_writes_reads_and_shows_a_cut_short_run_as_interrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    assert runs.all_runs() == [] and runs.read_run("ab12cd34") is None
    going = record(runner_pid=NO_PID)
    runs.save(going)
    runs.save(record(id="0000beef", state=RunState.DONE, started=1.0))
    file = tmp_path / "runs" / "ab12cd34.json"
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    assert runs.load(file) == going, "load shows the record as written"
    (tmp_path / "runs" / "ab12cd34.pending.json").write_text(json.dumps({"run_id": "ab12cd34", "results": {}}))
    (tmp_path / "runs" / "damaged.json").write_text('{"id": "damaged"')
    (tmp_path / "runs" / "other.json").write_text(going.to_json())  # a record under another run's name
    assert [r.id for r in runs.all_runs()] == ["ab12cd34", "0000beef"], "newest first; only the records"
    shown = runs.read_run("ab12cd34")
    assert shown.state is RunState.INTERRUPTED and shown.reason == runs.RUNNER_GONE
    assert runs.active_by_kernel() == {}, "a run whose runner is gone counts as active"
    assert runs.load(file).state is RunState.RUNNING, "a reader rewrote the record"
