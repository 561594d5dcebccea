"""Unit layer: the notebook logic of server-side runs (container/persistent_notebooks/runner/nbfile.py), no Docker."""

from __future__ import annotations

import errno
import json
import os
import re
import threading

import pytest
from persistent_notebooks import paths
from persistent_notebooks.runner import nbfile


def notebook(*cells: dict, minor: int = 5) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": minor}


def code(source: str, cid: str) -> dict:
    return {"cell_type": "code", "id": cid, "metadata": {}, "source": source, "outputs": [], "execution_count": None}


@pytest.mark.parametrize(("text", "message"), [
    ("{", "is not valid JSON"),
    ('{"a": 1}', "is not a Jupyter notebook"),
    ('{"nbformat": 3, "worksheets": []}', "nbformat 3"),
    ('{"nbformat": 4, "cells": {}}', "no 'cells' list"),
    ('{"nbformat": 4, "cells": [{"cell_type": "sql"}]}', "cell 1 is not a notebook cell"),
])
def test_parse_refuses_what_is_not_an_nbformat_4_notebook(text, message):
    """parse should refuse anything but an nbformat 4 notebook, naming the file and the problem."""
    with pytest.raises(nbfile.NotebookError, match=message) as info:
        nbfile.parse(text, "x.ipynb")
    assert "x.ipynb" in str(info.value)


def test_ensure_ids_adds_missing_and_duplicate_ids_and_upgrades_minor():
    """ensure_ids should give every cell a unique id and mark the notebook 4.5."""
    nb = notebook({"cell_type": "markdown", "source": "a", "metadata": {}}, code("x", "same"), code("y", "same"),
                  minor=4)
    assert nbfile.ensure_ids(nb)
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == 3 and ids[1] == "same" and nb["nbformat_minor"] == 5
    assert not nbfile.ensure_ids(nb), "a notebook with ids should be left as it is"


def test_parse_range_and_plan_count_cells_as_the_editor_does():
    """Cell numbers should count every cell from 1; the plan should hold the non-empty code cells only."""
    nb = notebook(code("a", "1"), {"cell_type": "markdown", "id": "2", "metadata": {}, "source": "m"},
                  code("  \n", "3"), code(["b", "c"], "4"))
    assert nbfile.parse_range("2-4", 4) == (2, 4)
    assert nbfile.parse_range("3", 4) == (3, 3)
    assert nbfile.parse_range("2-", 4) == (2, 4)
    for bad in ("0-2", "3-2", "2-5", "x", "1-y"):
        with pytest.raises(nbfile.NotebookError):
            nbfile.parse_range(bad, 4)
    assert [(c["id"], c["number"], c["source"]) for c in nbfile.plan(nb)] == [("1", 1, "a"), ("4", 4, "bc")]
    assert [c["number"] for c in nbfile.plan(nb, 2, 4)] == [4]


def test_merge_changes_only_the_executed_cells_outputs():
    """merge should keep every edit made meanwhile and set only the executed cells' outputs and counts."""
    current = notebook(code("added by the user", "new"), code("edited", "a"),
                       {"cell_type": "markdown", "id": "b", "metadata": {}, "source": "now markdown"})
    current["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "theirs"}]
    results = {"a": {"outputs": [{"output_type": "stream", "name": "stdout", "text": "ours"}], "execution_count": 7},
               "b": {"outputs": [], "execution_count": 8}, "gone": {"outputs": [], "execution_count": 9}}
    merged, missing = nbfile.merge(current, results, {"state": "running"})
    assert [c["source"] for c in merged["cells"]] == ["added by the user", "edited", "now markdown"]
    assert merged["cells"][0]["outputs"][0]["text"] == "theirs"
    assert merged["cells"][1]["outputs"][0]["text"] == "ours" and merged["cells"][1]["execution_count"] == 7
    assert "outputs" not in merged["cells"][2], "a markdown cell must not get outputs"
    assert sorted(missing) == ["b", "gone"]
    assert merged["metadata"]["persistent_notebooks"] == {"run": {"state": "running"}}


def test_cell_outputs_are_built_as_frontends_build_them():
    """Streams should coalesce, \\r overwrite, clear_output(wait) wait, display updates reach earlier cells."""
    displays: dict = {}
    first = nbfile.CellOutputs(displays)
    first.add("execute_input", {"execution_count": 3})
    first.add("stream", {"name": "stdout", "text": "a\n"})
    first.add("stream", {"name": "stdout", "text": "b\n"})
    first.add("stream", {"name": "stderr", "text": "e\n"})
    first.add("stream", {"name": "stderr", "text": "10%\r"})
    first.add("stream", {"name": "stderr", "text": "\r50%\r"})
    first.add("stream", {"name": "stderr", "text": "100%\n"})
    first.add("display_data", {"data": {"text/plain": "v1"}, "metadata": {}, "transient": {"display_id": "d"}})
    assert [o.get("text") for o in first.result()["outputs"][:2]] == ["a\nb\n", "e\n100%\n"]
    second = nbfile.CellOutputs(displays)
    second.add("update_display_data", {"data": {"text/plain": "v2"}, "metadata": {}, "transient": {"display_id": "d"}})
    assert first.outputs[2]["data"] == {"text/plain": "v2"}, "update_display_data should reach the earlier display"
    second.add("stream", {"name": "stdout", "text": "old"})
    second.add("clear_output", {"wait": True})
    assert second.outputs, "clear_output(wait=True) should wait for the next output"
    second.add("execute_result", {"data": {"text/plain": "1"}, "metadata": {}, "execution_count": 4})
    assert [o["output_type"] for o in second.outputs] == ["execute_result"]
    assert second.execution_count == 4 and first.execution_count == 3
    second.add("clear_output", {"wait": False})
    assert second.outputs == []
    snapshot = first.result()
    first.add("stream", {"name": "stdout", "text": "more"})
    assert snapshot["outputs"][0]["text"] == "a\nb\n", "a result taken for writing must not change afterwards"


def test_atomic_write_leaves_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    """A failed write (disk full) should leave the notebook as it was and no temporary file."""
    path = tmp_path / "nb.ipynb"
    path.write_text("old")
    os.chmod(path, 0o640)
    nbfile.atomic_write(path, "new")
    assert path.read_text() == "new\n" and path.stat().st_mode & 0o777 == 0o640, "not whole, or no final newline"
    text = "é" * (nbfile.WRITE_SLICE + 7) + "\n"  # across a slice, characters of two bytes
    nbfile.atomic_write(path, text)
    assert path.read_text() == text

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        nbfile.atomic_write(path, json.dumps({"big": "x" * 1000}))
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]


def test_side_file_beside_the_notebook_else_in_the_state_volume(tmp_path):
    """The side file of a deleted notebook should go beside it, or to the fallback folder if that is gone."""
    assert nbfile.side_file(tmp_path / "a.ipynb", "abcd", tmp_path / "runs") == tmp_path / "a.run-abcd.ipynb"
    assert nbfile.side_file(tmp_path / "gone" / "a.ipynb", "abcd", tmp_path / "runs") == \
        tmp_path / "runs" / "a.run-abcd.ipynb"


def test_atomic_write_refuses_to_overwrite_a_save_made_meanwhile(tmp_path):
    """A write whose precondition fails right before the rename should leave the other save in place."""
    path = tmp_path / "nb.ipynb"
    path.write_text("theirs")
    with pytest.raises(nbfile.Changed):
        nbfile.atomic_write(path, "ours", unchanged=lambda: False)
    assert path.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]


def test_a_save_made_under_the_lock_meanwhile_is_never_replaced(tmp_path):
    """A run's write checks that the file is unchanged and renames under the lock Jupyter's saves rename under:
    a save that lands while the run waits for the lock makes the run merge again (Changed), never lost."""
    path = tmp_path / "n.ipynb"
    path.write_text("before")
    before = path.stat()

    def unchanged() -> bool:
        now = path.stat()
        return (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    outcome: list = []

    def run_writes() -> None:
        try:
            nbfile.atomic_write(path, "the run's older merge", unchanged)
            outcome.append("written")
        except nbfile.Changed:
            outcome.append("changed")
    with paths.replacing_lock(path):  # as Jupyter holds it for its rename
        writer = threading.Thread(target=run_writes)
        writer.start()
        writer.join(0.3)
        assert writer.is_alive() and path.read_text() == "before", "the run renamed without the lock"
        saved = tmp_path / "jupyter.tmp"
        saved.write_text("acknowledged save")
        os.replace(saved, path)
    writer.join(5)
    assert outcome == ["changed"] and path.read_text() == "acknowledged save"


def test_a_cell_printing_without_end_is_kept_bounded():
    """A stream far bigger than the notebook should hold keeps its start and its end, says what was cut between,
    and holds at most about 2 MiB of it in the runner meanwhile (a 300 MB print must not cost 300 MB)."""
    outputs = nbfile.CellOutputs({})
    line = "x" * 99 + "\n"
    for i in range(200_000):  # 20 MB, a line a message
        outputs.add("stream", {"name": "stdout", "text": f"{i:08d}" + line[8:]})
        assert outputs.streams[0].size <= 2 * nbfile.STREAM_TAIL + len(line)
    text = outputs.result()["outputs"][0]["text"]
    assert text.startswith("00000000x") and text.endswith(f"{199_999:08d}" + line[8:])
    assert len(text) < nbfile.STREAM_HEAD + nbfile.STREAM_TAIL + 300
    cut = 200_000 * 100 - nbfile.STREAM_HEAD - nbfile.STREAM_TAIL
    assert f"[persistent-notebooks: {cut:,} characters of this output were cut here" in text
    outputs.add("stream", {"name": "stdout", "text": "10%\r"})
    outputs.add("stream", {"name": "stdout", "text": "99%\r100%"})
    assert outputs.result()["outputs"][0]["text"].endswith(line[8:] + "100%"), "\\r still overwrites the last line"


def test_one_huge_message_is_cut_without_losing_its_ends():
    """A single stream message of 30 MB (a kernel flushing a fast loop): its start and end kept, the cut counted."""
    outputs = nbfile.CellOutputs({})
    outputs.add("stream", {"name": "stdout", "text": "start\n"})
    outputs.add("stream", {"name": "stdout", "text": "".join(f"{i:09d}\n" for i in range(3_000_000))})
    outputs.add("stream", {"name": "stdout", "text": "end\n"})
    text = outputs.result()["outputs"][0]["text"]
    assert text.startswith("start\n000000000\n") and text.endswith(f"{2_999_999:09d}\nend\n")
    head, notice, tail = re.fullmatch(r"(.*?)(\n\[persistent-notebooks: [\d,]+ characters[^\]]*\]\n)(.*)", text,
                                      re.S).groups()
    cut = int(re.search(r"([\d,]+) characters", notice).group(1).replace(",", ""))
    assert len(head) + cut + len(tail) == 6 + 30_000_000 + 4, "every character is kept or counted as cut"
    assert len(head) == nbfile.STREAM_HEAD and len(tail) == nbfile.STREAM_TAIL


def test_a_skeleton_keeps_every_cell_but_no_outputs():
    """What a run keeps of a file between writes: every cell, source and id, and no code cell's outputs (a
    notebook of images is not held whole); the notebook given is left as it was."""
    nb = {"cells": [{"cell_type": "code", "id": "a", "source": "x", "outputs": [{"output_type": "display_data",
                                                                                  "data": {"image/png": "iVBO" * 9}}],
                     "execution_count": 3, "metadata": {}},
                    {"cell_type": "markdown", "id": "b", "source": "# t", "metadata": {}}],
          "metadata": {"k": 1}, "nbformat": 4, "nbformat_minor": 5}
    bare = nbfile.skeleton(nb)
    assert [c["id"] for c in bare["cells"]] == ["a", "b"] and bare["cells"][0]["outputs"] == []
    assert bare["cells"][0]["source"] == "x" and bare["metadata"] == {"k": 1}
    assert nb["cells"][0]["outputs"], "the notebook given was changed"
