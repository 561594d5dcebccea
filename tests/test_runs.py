"""Server-side notebook runs (notebookctl run / runs): a notebook run in its kernel with no client
connected, its outputs merged into the file, through a Jupyter crash, edits, errors, stops and a
container restart. On a stack of this module's own: it kills Jupyter and, last, restarts the container.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import own_stack, show_logs_on_failure
from kernelclient import V1, KernelConnection, api
from stack import TEST_GID, TEST_UID, Stack, wait_for

# A 2x2 red PNG, as a kernel displays it (IPython.display.Image).
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73"
    "0000001649444154789c63f8cfc0f09f81e13f03c37f0600001ffe03fd7b8a1b1e"
    "0000000049454e44ae426082")).decode()
ACTIVE = ("starting", "waiting", "running", "saving")


@pytest.fixture(scope="module")
def runs_stack(test_image, env_file, tmp_path_factory) -> Iterator[Stack]:
    with own_stack(test_image, env_file, tmp_path_factory, "runs") as stack:
        yield stack


@pytest.fixture
def stack(request, runs_stack: Stack) -> Stack:
    runs_stack.wait_healthy()
    show_logs_on_failure(request.node, runs_stack)
    return runs_stack


# --- helpers ----------------------------------------------------------------------------------

def cell(source: str, kind: str = "code", cid: str | None = None) -> dict:
    made = {"cell_type": kind, "id": cid or uuid.uuid4().hex[:8], "metadata": {}, "source": source}
    if kind == "code":
        made.update(execution_count=None, outputs=[])
    return made


def write_notebook(stack: Stack, name: str, cells: list[dict], kernel: str = "python3", minor: int = 5) -> Path:
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": kernel, "display_name": kernel,
                                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": minor}
    return write_file(stack, name, json.dumps(nb, indent=1))


def write_file(stack: Stack, name: str, text: str) -> Path:
    """Save as an editor does: the whole file replaced at once, owned by the notebook user."""
    path = stack.workspace / name
    tmp = path.with_name(f".{path.name}.saving")
    tmp.write_text(text)
    if os.getuid() == 0:
        os.chown(tmp, TEST_UID, TEST_GID)
    os.replace(tmp, path)
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def text_of(c: dict) -> str:
    """Every stream text of a cell, as one string."""
    return "".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                   for o in c["outputs"] if o["output_type"] == "stream")


def notebookctl(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return stack.exec("notebookctl", *args, check=check, timeout=120)


def start_run(stack: Stack, *args: str) -> str:
    """`notebookctl run ARGS` (returns once started); the run's id."""
    out = notebookctl(stack, "run", *args).stdout
    assert out.startswith("run "), out
    return out.split()[1].rstrip(":")


def run_record(stack: Stack, run_id: str) -> dict:
    found = [r for r in json.loads(notebookctl(stack, "runs", "--json").stdout) if r["id"] == run_id]
    assert found, f"run {run_id} not listed"
    return found[0]


def wait_run(stack: Stack, run_id: str, timeout: float = 90, until=None) -> dict:
    """Poll the run's record until it ends (or until(record) holds); the record."""
    until = until or (lambda r: r["state"] not in ACTIVE)
    seen: list[dict] = []

    def reached():
        seen[:] = [run_record(stack, run_id)]
        return seen[0] if until(seen[0]) else None
    try:
        return wait_for(reached, timeout, f"run {run_id} to reach the awaited state", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from None


def validate_in_container(stack: Stack, path: Path) -> None:
    """The file should be valid nbformat, as Jupyter and VSCode read it."""
    stack.exec("python", "-c", "import sys, nbformat; nbformat.validate(nbformat.read(sys.argv[1], as_version=4))",
               f"/workspace/{path.name}")


def wait_source(name: str) -> str:
    """Code for a cell that waits until the test creates a file (no fixed sleep on either side)."""
    return f"import os, time\nwhile not os.path.exists('/workspace/{name}'):\n    time.sleep(0.05)\nprint('go')"


def touch(stack: Stack, name: str) -> None:
    (stack.workspace / name).write_text("")


# --- tests ------------------------------------------------------------------------------------

def test_run_fills_the_notebook_in_the_session_kernel(stack: Stack):
    """A run should put every cell's outputs and counts into the file, in the kernel of the notebook's session."""
    token = stack.token()
    path = write_notebook(stack, "four.ipynb", [
        cell("# Four cells", "markdown"),
        cell("print('one')"),
        cell("import sys\nprint('err', file=sys.stderr)\n6 * 7"),
        cell("for i in range(3):\n    print(i)"),
        cell("print(before)"),
    ])
    session = api(stack.base_url, token, "/api/sessions", "POST",
                  {"path": "four.ipynb", "type": "notebook", "name": "four.ipynb", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as client:  # as VSCode, then it goes away
        assert client.execute("before = 'set by hand'")["error"] is None
    run_id = start_run(stack, "four.ipynb")
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    assert record["kernel_id"] == kernel_id, "the run should use the session's kernel"
    nb = read(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts[0] and counts == list(range(counts[0], counts[0] + 4)), counts
    assert text_of(code[0]) == "one\n"
    assert "err\n" in text_of(code[1])
    results = [o for o in code[1]["outputs"] if o["output_type"] == "execute_result"]
    assert results and "".join(results[0]["data"]["text/plain"]) == "42", code[1]["outputs"]
    assert text_of(code[2]) == "0\n1\n2\n"
    assert text_of(code[3]) == "set by hand\n", "the variable set by hand should be there: same kernel"
    assert nb["metadata"]["persistent_notebooks"]["run"]["state"] == "done"
    assert "".join(nb["cells"][0]["source"]) == "# Four cells"
    validate_in_container(stack, path)
    sessions = api(stack.base_url, token, "/api/sessions")
    assert [s["kernel"]["id"] for s in sessions if s["path"] == "four.ipynb"] == [kernel_id]


def test_a_run_uses_the_kernel_vscode_runs_the_notebook_in(stack: Stack):
    """VSCode's session is named NAME-jvsc-UUID.ipynb, but its cells name the notebook (metadata.cellId): a run of
    that notebook should use that kernel (the user's variables), and the kernel list should name the notebook.
    Attached to the container, the cell's URI holds the container's path; under Remote-SSH, the host's."""
    (stack.workspace / "a").mkdir(exist_ok=True)
    if os.getuid() == 0:
        os.chown(stack.workspace / "a", TEST_UID, TEST_GID)
    token = stack.token()
    for name, uri in (
            ("train", "vscode-notebook-cell://dev-container%2B7b22/workspace/a/train.ipynb#W0sZmlsZQ%3D%3D"),
            ("eval", f"vscode-notebook-cell://ssh-remote%2Bworkstation/home/me{stack.workspace}/a/eval.ipynb#W1")):
        path = write_notebook(stack, f"a/{name}.ipynb", [cell("print(x + 1)")])
        session = api(stack.base_url, token, "/api/sessions", "POST", {
            "path": f"{name}-jvsc-{uuid.uuid4()}{uuid.uuid4()}.ipynb", "name": f"{name}-{uuid.uuid4()}.ipynb",
            "type": "notebook", "kernel": {"name": "python3"}})
        kernel_id = session["kernel"]["id"]
        with KernelConnection(stack.base_url, token, kernel_id) as kernel:
            assert kernel.execute("x = 41", cell_uri=uri)["error"] is None
        done = wait_run(stack, start_run(stack, f"a/{name}.ipynb"))
        assert done["state"] == "done" and done["kernel_id"] == kernel_id, done
        assert text_of(read(path)["cells"][0]) == "42\n", read(path)["cells"][0]
        listed = json.loads(notebookctl(stack, "kernels", "--json").stdout)["kernels"]
        assert next(k for k in listed if k["id"] == kernel_id)["notebooks"] == [f"a/{name}.ipynb"], listed
        api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")


def vscode_session(stack: Stack, token: str, name: str) -> dict:
    """A session as VSCode's extension makes one (jupyterKernelSessionFactory.ts): path NAME-jvsc-UUID.ipynb."""
    return api(stack.base_url, token, "/api/sessions", "POST", {
        "path": f"{name}-jvsc-{uuid.uuid4()}{uuid.uuid4()}.ipynb", "name": f"{name}-{uuid.uuid4()}.ipynb",
        "type": "notebook", "kernel": {"name": "python3"}})


def run_id_in(text: str) -> str:
    found = re.search(r"^run (\w+):", text, re.M)
    assert found, f"no run started: {text!r}"
    return found.group(1)


def test_run_on_server_runs_the_rest_of_the_notebook_in_this_kernel(stack: Stack):
    """%run_on_server in a cell should return at once, saying how to follow the run, and the cells after it should
    run in this very kernel (its variables), outputs into the file. As VSCode sends it (a jvsc session, cellId a
    URI: the cell found by its source as saved) and as JupyterLab does (the session's path is the notebook,
    cellId the cell's id: found even when its saved source differs)."""
    token = stack.token()
    path = write_notebook(stack, "otf.ipynb", [cell("x = 1"), cell("%run_on_server"), cell("print(x + 41)"),
                                               cell("print('last')")])
    session = vscode_session(stack, token, "otf")
    uri = "vscode-notebook-cell://dev-container%2B7b22/workspace/otf.ipynb#W"
    with KernelConnection(stack.base_url, token, session["kernel"]["id"]) as kernel:
        assert kernel.execute("x = 1", cell_uri=uri + "0")["error"] is None
        out = kernel.execute("%run_on_server", cell_uri=uri + "1")
    assert out["error"] is None and "runs in this kernel" in out["stdout"], out
    done = wait_run(stack, run_id_in(out["stdout"]))
    assert done["state"] == "done" and done["kernel_id"] == session["kernel"]["id"], done
    cells = read(path)["cells"]
    assert [text_of(c) for c in cells] == ["", "", "42\n", "last\n"], [c["outputs"] for c in cells]
    api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")

    path = write_notebook(stack, "otf-lab.ipynb", [cell("y = 2"), cell("%run_on_server  # as saved", cid="magic1"),
                                                   cell("print(y * 21)")])
    session = api(stack.base_url, token, "/api/sessions", "POST",
                  {"path": "otf-lab.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
    with KernelConnection(stack.base_url, token, session["kernel"]["id"]) as kernel:
        assert kernel.execute("y = 2")["error"] is None
        out = kernel.execute("%run_on_server", cell_uri="magic1")  # JupyterLab: metadata.cellId, the cell's id
    assert wait_run(stack, run_id_in(out["stdout"]))["state"] == "done", out
    assert text_of(read(path)["cells"][2]) == "42\n", read(path)["cells"]
    api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")


def test_run_on_server_refuses_bad_input_in_the_cell_and_starts_nothing(stack: Stack):
    """No notebook for the kernel, a kernel of two notebooks, a range outside the notebook, a cell not in the file
    as saved, a bad option: each a message in the cell's output naming the fix, and no run started."""
    token = stack.token()
    write_notebook(stack, "bad-a.ipynb", [cell("%run_on_server"), cell("print(1)")])
    write_notebook(stack, "bad-b.ipynb", [cell("print(2)")])
    lone = api(stack.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    runs_before = len(json.loads(notebookctl(stack, "runs", "--json").stdout))
    with KernelConnection(stack.base_url, token, lone) as kernel:
        said = {"no notebook": kernel.execute("%run_on_server")["stderr"]}
        for name in ("bad-a.ipynb", "bad-b.ipynb"):
            api(stack.base_url, token, "/api/sessions", "POST", {"path": name, "type": "notebook",
                                                                 "kernel": {"id": lone}})
        said["two notebooks"] = kernel.execute("%run_on_server")["stderr"]
        said["range"] = kernel.execute("%run_on_server bad-a.ipynb --cells 7-9")["stderr"]
        said["unsaved"] = kernel.execute("%run_on_server bad-a.ipynb  # an edit not saved")["stderr"]
        said["option"] = kernel.execute("%run_on_server --bogus")["stderr"]
    expected = {"no notebook": "belongs to no notebook", "two notebooks": "runs 2 notebooks (bad-a.ipynb, bad-b.ipynb)",
                "range": "7-9", "unsaved": "save the notebook first", "option": "unrecognized arguments: --bogus"}
    for case, text in expected.items():
        assert text in said[case] and "Nothing was started" in said[case], (case, said[case])
    assert len(json.loads(notebookctl(stack, "runs", "--json").stdout)) == runs_before, "a run was started"
    api(stack.base_url, token, f"/api/kernels/{lone}", "DELETE")


def test_run_without_a_session_makes_one_an_editor_finds(stack: Stack):
    """A run of a notebook with no session should start its kernelspec's kernel in a session for that path."""
    path = write_notebook(stack, "fresh.ipynb", [cell("answer = 42\nprint(answer)")])
    run_id = start_run(stack, "fresh.ipynb")
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    sessions = [s for s in api(stack.base_url, stack.token(), "/api/sessions") if s["path"] == "fresh.ipynb"]
    assert sessions and sessions[0]["kernel"]["id"] == record["kernel_id"], sessions
    assert sessions[0]["kernel"]["name"] == "python3"
    with KernelConnection(stack.base_url, stack.token(), record["kernel_id"]) as client:
        assert client.execute("print(answer)")["stdout"] == "42\n"
    assert text_of(read(path)["cells"][0]) == "42\n"


def test_run_goes_on_through_a_jupyter_kill(stack: Stack):
    """kill -9 of Jupyter while a run's cell prints should lose no line and run no cell twice."""
    path = write_notebook(stack, "crash.ipynb", [
        cell("import time\nfor i in range(50):\n    print(i, flush=True)\n    time.sleep(0.1)"),
        cell("print('after')"),
    ])
    run_id = start_run(stack, "crash.ipynb")
    wait_for(lambda: text_of(read(path)["cells"][0]).count("\n") >= 5, 30, "the first lines in the file")
    stack.kill_jupyter()
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    cells = read(path)["cells"]
    assert text_of(cells[0]) == "".join(f"{i}\n" for i in range(50)), text_of(cells[0])
    assert text_of(cells[1]) == "after\n"
    assert cells[1]["execution_count"] == cells[0]["execution_count"] + 1, "no cell should run twice"
    stack.wait_api(stack.token())  # the shared stack as found: Jupyter back for the next test


def test_edits_saved_during_a_run_are_kept(stack: Stack):
    """A cell added and another edited and saved meanwhile should stay, with the outputs in the right cells."""
    cells = [cell(wait_source("go-edit"), cid="wait"), cell("print('two')", cid="two"),
             cell("print('three')", cid="three")]
    path = write_notebook(stack, "edit.ipynb", cells)
    run_id = start_run(stack, "edit.ipynb")
    wait_run(stack, run_id, until=lambda r: r["state"] == "running")
    nb = read(path)
    nb["cells"].insert(1, cell("print('added by the user')", cid="added"))
    nb["cells"][3]["source"] = "print('three, edited')"
    nb["cells"].append(cell("A note", "markdown", cid="note"))
    write_file(stack, "edit.ipynb", json.dumps(nb, indent=1))
    touch(stack, "go-edit")
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    by_id = {c["id"]: c for c in read(path)["cells"]}
    assert [c for c in by_id] == ["wait", "added", "two", "three", "note"], list(by_id)
    assert text_of(by_id["wait"]) == "go\n"
    assert by_id["added"]["outputs"] == [] and by_id["added"]["execution_count"] is None
    assert text_of(by_id["two"]) == "two\n"
    assert "".join(by_id["three"]["source"]) == "print('three, edited')"
    assert text_of(by_id["three"]) == "three, edited\n", "a cell edited before the run reached it runs as saved"
    assert any("cell 4 was edited" in note for note in record["notes"]), record["notes"]
    validate_in_container(stack, path)


def test_saves_acknowledged_during_a_run_are_never_undone(stack: Stack):
    """Saves through Jupyter's API (as JupyterLab saves), as fast as they are answered while a run writes the same
    notebook: once a save is acknowledged, the file never shows an older edit again (the saves carry no outputs,
    as a page that has not reloaded the file: what they overwrite is theirs to overwrite)."""
    cells = [cell("edit 0", "markdown", "notes")] + [cell(f"import time\nprint({i}, flush=True)\ntime.sleep(0.02)")
                                                      for i in range(150)]
    path = write_notebook(stack, "saves.ipynb", cells)
    content = read(path)
    token = stack.token()
    acked, undone, stop = [0], [], threading.Event()

    def edit_on_disk() -> int:
        return int("".join(read(path)["cells"][0]["source"]).split()[-1])

    def watch() -> None:
        while not stop.is_set():
            floor = acked[0]  # acknowledged before this read began
            seen = edit_on_disk()
            if seen < floor:
                undone.append((floor, seen))
    watcher = threading.Thread(target=watch)
    watcher.start()
    run_id = start_run(stack, "saves.ipynb")
    try:
        edit = 0
        while run_record(stack, run_id)["state"] in ACTIVE:
            for _ in range(50):
                edit += 1
                content["cells"][0]["source"] = f"edit {edit}"
                api(stack.base_url, token, "/api/contents/saves.ipynb", "PUT",
                    {"type": "notebook", "format": "json", "content": content})
                acked[0] = edit
    finally:
        stop.set()
        watcher.join()
    done = wait_run(stack, run_id)
    assert done["state"] == "done" and done["cells_done"] == 150, done
    assert not undone, f"{len(undone)} acknowledged saves undone by the run (acknowledged, then seen): {undone[:5]}"
    assert edit_on_disk() == edit, "the last acknowledged save was lost"
    # The race itself is microseconds wide: shown directly at Jupyter's end (the run's end: test_nbfile.py), a
    # save waits for the lock a run holds from its check to its rename.
    out = stack.exec("python", "-c", SAVE_WAITS_FOR_THE_LOCK).stdout.split()
    assert out == ["True", "new"], f"Jupyter's save did not wait for the run's lock: {out}"


SAVE_WAITS_FOR_THE_LOCK = """
import threading
from persistent_notebooks import paths
from persistent_notebooks.server.contents import replacing
path = "/workspace/lock-check.txt"
open(path, "w").write("old")
def save():
    with replacing(path) as f:
        f.write("new")
with paths.replacing_lock(path):
    saver = threading.Thread(target=save)
    saver.start()
    saver.join(0.3)
    waited = saver.is_alive() and open(path).read() == "old"
saver.join(5)
print(waited, open(path).read())
"""


def test_the_runner_ends_by_itself_once_idle(stack: Stack):
    """The runner, started for a run, should exit by itself a minute after its last work (IDLE_EXIT), though the
    watchdog pings it every few seconds meanwhile: an idle stack pays nothing for it."""
    write_notebook(stack, "idle.ipynb", [cell("print('ran')")])
    assert wait_run(stack, start_run(stack, "idle.ipynb"))["state"] == "done"
    assert stack.programs().get("notebook-runner") == "RUNNING"
    wait_for(lambda: stack.programs().get("notebook-runner") in ("EXITED", "STOPPED"), 90,
             "the runner to exit by itself, idle (IDLE_EXIT is 60 s)")


def test_a_hung_runner_is_replaced_and_answers_meanwhile(stack: Stack):
    """A runner that hangs (SIGSTOP) should be replaced by the watchdog; a new run asked meanwhile is answered
    by the new runner, and the hung one's run is marked interrupted."""
    write_notebook(stack, "hung.ipynb", [cell(wait_source("hung-go"))])
    hung = start_run(stack, "hung.ipynb")
    wait_run(stack, hung, until=lambda r: r["state"] == "running")
    pid = stack.program_pid("notebook-runner")
    stack.exec("kill", "-STOP", str(pid))
    try:
        started = time.monotonic()
        write_notebook(stack, "after-hang.ipynb", [cell("print('answered')")])
        other = start_run(stack, "after-hang.ipynb")
        answered = time.monotonic() - started
        assert wait_run(stack, other)["state"] == "done"
        assert stack.program_pid("notebook-runner") not in (0, pid), "the hung runner was not replaced"
        record = run_record(stack, hung)
        assert record["state"] == "interrupted", record
        assert "the notebook runner (pid" in stack.logs() and "hangs: killing it" in stack.logs()
        assert answered < 60, f"the new run was answered after {answered:.0f} s"
    finally:
        stack.exec("kill", "-CONT", str(pid), check=False)
        touch(stack, "hung-go")


def test_an_error_stops_the_run_unless_keep_going(stack: Stack):
    """An error in cell 2 should stop the run there, its traceback in the cell; --keep-going runs the rest."""
    cells = [cell("print(1)"), cell("1 / 0"), cell("print(3)"), cell("print(4)")]
    path = write_notebook(stack, "error.ipynb", cells)
    record = wait_run(stack, start_run(stack, "error.ipynb"))
    assert record["state"] == "failed" and record["cell"] == 2 and record["error"] == "ZeroDivisionError", record
    assert "failed at cell 2 (ZeroDivisionError)" in notebookctl(stack, "runs").stdout
    got = read(path)["cells"]
    errors = [o for o in got[1]["outputs"] if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "ZeroDivisionError" and errors[0]["traceback"], got[1]["outputs"]
    assert got[2]["outputs"] == [] and got[2]["execution_count"] is None, got[2]
    assert got[3]["outputs"] == [] and got[3]["execution_count"] is None, got[3]

    record = wait_run(stack, start_run(stack, "error.ipynb", "--keep-going"))
    assert record["state"] == "done" and record["errors"] == [{"cell": 2, "error": "ZeroDivisionError"}], record
    got = read(path)["cells"]
    assert text_of(got[2]) == "3\n" and text_of(got[3]) == "4\n"


def test_cells_and_from_select_what_runs(stack: Stack):
    """--cells and --from should run only the cells named (counted from 1, markdown included)."""
    cells = [cell("print('a')"), cell("Text", "markdown"), cell("print('c')"), cell("print('d')")]
    path = write_notebook(stack, "range.ipynb", cells)
    assert wait_run(stack, start_run(stack, "range.ipynb", "--cells", "2-3"))["state"] == "done"
    got = read(path)["cells"]
    assert [text_of(got[i]) for i in (0, 2, 3)] == ["", "c\n", ""]
    assert wait_run(stack, start_run(stack, "range.ipynb", "--from", "4"))["state"] == "done"
    assert text_of(read(path)["cells"][3]) == "d\n"


def test_a_display_of_a_png_is_saved_as_jupyter_saves_it(stack: Stack):
    """A cell that displays a PNG should leave the image in the file, base64 under image/png."""
    path = write_notebook(stack, "image.ipynb", [cell(
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(data=base64.b64decode('{PNG}')))")])
    assert wait_run(stack, start_run(stack, "image.ipynb"))["state"] == "done"
    outputs = read(path)["cells"][0]["outputs"]
    images = [o for o in outputs if o["output_type"] == "display_data" and "image/png" in o["data"]]
    assert images, outputs
    assert "".join(images[0]["data"]["image/png"]).strip() == PNG
    validate_in_container(stack, path)


def test_a_run_waits_behind_a_cell_run_by_hand(stack: Stack):
    """A run in a kernel busy with a cell run by hand should show 'waiting', then run once the kernel is free."""
    token = stack.token()
    write_notebook(stack, "queue.ipynb", [cell("print('ran after the hand cell')")])
    session = api(stack.base_url, token, "/api/sessions", "POST",
                  {"path": "queue.ipynb", "type": "notebook", "name": "queue.ipynb", "kernel": {"name": "python3"}})
    with KernelConnection(stack.base_url, token, session["kernel"]["id"]) as client:
        hand = client.submit(wait_source("go-queue"))
        kernel_id = session["kernel"]["id"]
        # the hand cell must be running before the run asks: the run's request goes to the kernel directly,
        # and one sent earlier than the hand cell's (which goes through Jupyter) would simply run first
        stack.wait_kernel_state(kernel_id, "busy", 30, msg_id=hand)
        run_id = start_run(stack, "queue.ipynb")
        record = wait_run(stack, run_id, until=lambda r: r["state"] == "waiting")
        assert "waiting" in notebookctl(stack, "runs", "--active").stdout
        touch(stack, "go-queue")
        assert client.follow(hand)["stdout"] == "go\n"
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record


def test_a_run_behind_a_hand_cell_that_fails_still_runs(stack: Stack):
    """A cell run by hand (stop_on_error, as editors send cells) that fails while the run's cell waits behind it:
    ipykernel drops the queued request; the run should send it again, say so, and finish."""
    token = stack.token()
    write_notebook(stack, "abort.ipynb", [cell("print('ran after the failed hand cell')")])
    session = api(stack.base_url, token, "/api/sessions", "POST",
                  {"path": "abort.ipynb", "type": "notebook", "name": "abort.ipynb", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        hand = client.submit(wait_source("go-abort") + "\nraise ValueError('the hand cell fails')")
        stack.wait_kernel_state(kernel_id, "busy", 30, msg_id=hand)
        run_id = start_run(stack, "abort.ipynb")
        wait_run(stack, run_id, until=lambda r: r["state"] == "waiting")
        touch(stack, "go-abort")
        client.follow(hand)
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    assert any("sent again" in note for note in record["notes"]), record["notes"]
    assert text_of(read(stack.workspace / "abort.ipynb")["cells"][0]) == "ran after the failed hand cell\n"


def test_deleted_notebook_is_saved_to_a_side_file(stack: Stack):
    """A notebook deleted mid-run should have its run go on and save to a side file the status names."""
    path = write_notebook(stack, "gone.ipynb", [cell(wait_source("go-gone")), cell("print('still here')")])
    run_id = start_run(stack, "gone.ipynb")
    wait_run(stack, run_id, until=lambda r: r["state"] == "running")
    path.unlink()
    touch(stack, "go-gone")
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    assert record["saved_to"] == f"/workspace/gone.run-{run_id}.ipynb", record
    side = read(stack.workspace / f"gone.run-{run_id}.ipynb")
    assert text_of(side["cells"][1]) == "still here\n"
    assert f"saved to /workspace/gone.run-{run_id}.ipynb" in notebookctl(stack, "runs").stdout
    assert not path.exists()


def test_a_kernel_that_dies_fails_the_run_at_that_cell(stack: Stack):
    """A kernel killed mid-run should fail the run at that cell, saying so there; earlier outputs kept."""
    path = write_notebook(stack, "dies.ipynb", [cell("print('before')"), cell("import os\nos.kill(os.getpid(), 9)"),
                                                 cell("print('never')")])
    record = wait_run(stack, start_run(stack, "dies.ipynb"))
    assert record["state"] == "failed" and record["cell"] == 2 and "kernel died" in record["error"], record
    got = read(path)["cells"]
    assert text_of(got[0]) == "before\n"
    assert [o["ename"] for o in got[1]["outputs"] if o["output_type"] == "error"] == ["DeadKernelError"]
    assert got[2]["outputs"] == []


BAD = {
    "not a notebook": ("data.ipynb", '{"just": "json"}', [], "is not a Jupyter notebook"),
    "invalid JSON": ("broken.ipynb", '{"cells": [', [], "is not valid JSON"),
    "nbformat 3": ("old.ipynb", json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}),
                   [], "nbformat 3"),
    "outside the workspace": (None, None, ["/etc/hostname"], "is outside the workspace"),
    "outside through a link": ("link.ipynb", None, [], "outside the workspace"),
    "missing file": (None, None, ["nowhere.ipynb"], "no such file"),
    "unknown kernel": ("ok.ipynb", None, ["--kernel", "nosuchkernel"], "--kernel nosuchkernel"),
    "unknown kernelspec": ("other.ipynb", "kernel:nosuchspec", [], "asks for kernel 'nosuchspec'"),
    "cells outside": ("ok.ipynb", None, ["--cells", "2-9"], "the notebook has 1 cells"),
    "from outside": ("ok.ipynb", None, ["--from", "5"], "the notebook has 1 cells"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_changes_nothing(stack: Stack, case: str):
    """A bad run request should fail with a message that names the problem, leaving the file as it was."""
    name, content, extra, message = BAD[case]
    path = None
    if name == "link.ipynb":
        path = stack.workspace / name
        path.unlink(missing_ok=True)
        path.symlink_to("/etc/hostname")
    elif name is not None:
        if content is None or content.startswith("kernel:"):
            # nbformat 4.4 without cell ids: a run that starts would add them; a refused one must not
            nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                             "source": "print(1)"}],
                  "metadata": {"kernelspec": {"name": content[7:] if content else "python3", "display_name": "x"}},
                  "nbformat": 4, "nbformat_minor": 4}
            content = json.dumps(nb)
        path = write_file(stack, name, content)
    before = path.read_bytes() if path is not None and not path.is_symlink() else None
    args = extra if name is None else [name, *extra]
    result = notebookctl(stack, "run", *args, check=False)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    if before is not None:
        assert path.read_bytes() == before, "a refused run must not touch the file"


def test_two_runs_of_one_notebook_refused_and_stop_interrupts(stack: Stack):
    """A second run of a running notebook should be refused naming the first; --stop should interrupt it."""
    path = write_notebook(stack, "long.ipynb", [cell("import time\nfor i in range(6000):\n    time.sleep(0.01)"),
                                                 cell("print('not reached')")])
    run_id = start_run(stack, "long.ipynb")
    wait_run(stack, run_id, until=lambda r: r["state"] == "running")
    second = notebookctl(stack, "run", "long.ipynb", check=False)
    assert second.returncode != 0 and f"run {run_id}" in second.stderr, second.stderr
    kernels = json.loads(notebookctl(stack, "kernels", "--json").stdout)["kernels"]
    assert [k["run"]["id"] for k in kernels if k.get("run")] == [run_id], kernels
    host = stack.run_script("runs", "--active")
    assert host.returncode == 0 and run_id in host.stdout, host.stdout + host.stderr
    notebookctl(stack, "run", "--stop", "long.ipynb")
    record = wait_run(stack, run_id, timeout=30)
    assert record["state"] == "stopped" and record["cell"] == 1, record
    got = read(path)["cells"]
    assert [o["ename"] for o in got[0]["outputs"] if o["output_type"] == "error"] == ["KeyboardInterrupt"]
    assert got[1]["outputs"] == []
    assert "stopped at cell 1" in notebookctl(stack, "runs").stdout


def test_a_container_restart_resumes_a_run_unless_no_resume(stack: Stack):
    """A container restart should end each run saying where; a run goes on by itself in its restored kernel, from
    the cell that was running, with the variables of the cells before; one started with --no-resume does not."""
    kept = write_notebook(stack, "restart.ipynb", [cell("print('first')"),
                                                    cell("import time\nprint('long', flush=True)\ntime.sleep(600)")])
    resumed = write_notebook(stack, "resume.ipynb", [
        cell("first = 40\nprint('first')"), cell("print('second', flush=True)\n" + wait_source("resume-go")),
        cell("print(first + 2)")])
    kept_id = start_run(stack, "restart.ipynb", "--no-resume")
    resumed_id = start_run(stack, "resume.ipynb")
    wait_for(lambda: "long" in text_of(read(kept)["cells"][1]), 30, "the second cell to print")
    wait_for(lambda: "second" in text_of(read(resumed)["cells"][1]), 30, "the resumed run's second cell to print")
    stack.compose("restart", timeout=180)
    stack.wait_healthy()
    record = run_record(stack, kept_id)
    assert record["state"] == "interrupted" and record["cell"] == 2 and not record.get("resumed_by"), record
    nb = read(kept)
    assert nb["metadata"]["persistent_notebooks"]["run"]["state"] == "interrupted"
    assert "the container stopped while this cell ran" in text_of(nb["cells"][1])
    assert text_of(nb["cells"][0]) == "first\n"
    old = wait_run(stack, resumed_id, until=lambda r: r.get("resumed_by"))
    new_id = old["resumed_by"]
    assert f"interrupted by a container stop at cell 2, resumed as run {new_id}" in notebookctl(stack, "runs").stdout
    wait_run(stack, new_id, until=lambda r: r["state"] == "running")
    touch(stack, "resume-go")
    done = wait_run(stack, new_id)
    assert done["state"] == "done" and done["resumed_from"] == resumed_id, done
    assert "resumed run" in notebookctl(stack, "runs").stdout
    cells = read(resumed)["cells"]
    assert text_of(cells[0]) == "first\n", "a cell that had ended is not run again"
    assert "runs again from its start" in text_of(cells[1]) and "second" in text_of(cells[1]), cells[1]
    assert text_of(cells[2]) == "42\n", "the run goes on with the variables of the cells before"
    validate_in_container(stack, resumed)


SLOW_WEB_APP = """\
import time
from jupyter_server.serverapp import ServerApp
init_webapp = ServerApp.init_webapp
def slow_init_webapp(self, *args, **kwargs):
    time.sleep(6)
    return init_webapp(self, *args, **kwargs)
ServerApp.init_webapp = slow_init_webapp
"""


def test_jupyterlabs_queued_cells_run_on_after_a_container_restart(stack: Stack):
    """JupyterLab's Run All cut by a container restart (as JupyterLab sends it: every cell at once, each naming its
    cell id): the cell that was running and those queued behind it run again in the restored kernel, with the
    variables of the cells before, as the page sent them, each one's output (and code) in the file; the cells that
    had ended are not run again."""
    token = stack.token()
    path = write_notebook(stack, "lab-restart.ipynb", [
        cell("first = 40\nprint('first')"), cell("print('second', flush=True)\n" + wait_source("lab-go")),
        cell("print(first + 2)")])
    (stack.workspace / "lab-go").unlink(missing_ok=True)
    session = api(stack.base_url, token, "/api/sessions", "POST", {
        "path": path.name, "type": "notebook", "name": path.name, "kernel": {"name": "python3"}})
    with KernelConnection(stack.base_url, token, session["kernel"]["id"]) as page:
        # the third cell as edited in the page and not saved: the code the page sent is what runs on
        codes = [nbfile_source(c) for c in read(path)["cells"]][:2] + ["print(first + 3)"]
        sent = [page.submit(code, c["id"]) for code, c in zip(codes, read(path)["cells"], strict=True)]

        def second_printed() -> bool:
            msg = page.recv()
            return msg.get("parent_header", {}).get("msg_id") == sent[1] and msg["msg_type"] == "stream"

        wait_for(second_printed, 60, "the second cell to print", interval=0)
    # Jupyter slow to answer once it has adopted its kernels (as on a loaded machine; here a user's server config that
    # delays its web application by 6 s): the runner, started by the adoption, waits for Jupyter before it resumes.
    slow_config = "$JUPYTER_CONFIG_DIR/jupyter_server_config.py"
    subprocess.run(["docker", "exec", "-i", stack.container, "sh", "-c",
                    f"mkdir -p $JUPYTER_CONFIG_DIR && cat > {slow_config}"], input=SLOW_WEB_APP, text=True, check=True)
    try:
        stack.compose("restart", timeout=180)
        stack.wait_healthy()
    finally:
        stack.exec("sh", "-c", f"rm {slow_config}")
    old = [r for r in json.loads(notebookctl(stack, "runs", "--json").stdout)
           if r["notebook"] == path.name and r["selection"] == "cells sent by JupyterLab"]
    assert len(old) == 1 and old[0]["state"] == "interrupted", old
    assert text_of(read(path)["cells"][0]) == "first\n", "the outputs followed until the stop are in the file"
    old = wait_run(stack, old[0]["id"], until=lambda r: r.get("resumed_by"))
    wait_run(stack, old["resumed_by"], until=lambda r: r["state"] == "running")
    touch(stack, "lab-go")
    done = wait_run(stack, old["resumed_by"])
    assert done["state"] == "done", (done, read(path)["cells"])
    cells = read(path)["cells"]
    assert text_of(cells[0]) == "first\n", "a cell that had ended is not run again"
    assert "runs again from its start" in text_of(cells[1]) and "go" in text_of(cells[1]), cells[1]
    assert text_of(cells[2]) == "43\n", "the queued cell runs as sent, with the variables of the cells before"
    assert nbfile_source(cells[2]) == "print(first + 3)", "the file keeps the code that ran beside its output"
    validate_in_container(stack, path)


def test_jupyterlabs_cells_sent_as_the_page_closes_all_land_in_the_file(stack: Stack):
    """JupyterLab's Run All and the tab closed at once (the binary protocol; the server reads the cells and the
    websocket's close together, while the first cell waits for the runner to follow it): every cell runs, and its
    output lands in the file."""
    token = stack.token()
    path = write_notebook(stack, "lab-leave.ipynb", [cell("x = 40\nprint('one')"), cell("print(x + 2)"),
                                                     cell("print('three')")])
    session = api(stack.base_url, token, "/api/sessions", "POST", {
        "path": path.name, "type": "notebook", "name": path.name, "kernel": {"name": "python3"}})
    try:
        page = KernelConnection(stack.base_url, token, session["kernel"]["id"], protocol=V1)
        page.submit_and_leave([(nbfile_source(c), c["id"]) for c in read(path)["cells"]])
        try:
            wait_for(lambda: [text_of(c) for c in read(path)["cells"]] == ["one\n", "42\n", "three\n"], 60,
                     "every cell's output in the file")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the file holds {[text_of(c) for c in read(path)['cells']]}") from None
    finally:
        api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")


def test_a_page_reopened_while_its_cell_waits_for_the_runner_gets_what_was_kept(stack: Stack):
    """A page closed the moment after Run, its cell still waiting for the runner to follow it (here a runner stopped
    for the while), and opened again at once: the new page should get, as any page alone on a kernel does, the
    output kept while nobody was connected, then the new cell's own."""
    token = stack.token()
    path = write_notebook(stack, "lab-reopen.ipynb", [cell(wait_source("lab-reopen-go")), cell("print('after')")])
    (stack.workspace / "lab-reopen-go").unlink(missing_ok=True)
    session = api(stack.base_url, token, "/api/sessions", "POST", {
        "path": path.name, "type": "notebook", "name": path.name, "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    first, second = read(path)["cells"]
    pid = 0
    try:
        with KernelConnection(stack.base_url, token, kernel_id, protocol=V1) as page:
            waiting = page.submit(nbfile_source(first), first["id"])  # followed by the runner, started for it
            wait_for(lambda: page.follow(waiting, seconds=0.5)["messages"], 30, "the first cell to reach the kernel")
        touch(stack, "lab-reopen-go")  # it prints while no page is there: kept
        stack.wait_kernel_idle(kernel_id, 60, waiting)
        pid = stack.program_pid("notebook-runner")
        stack.exec("kill", "-STOP", str(pid))
        leaving = KernelConnection(stack.base_url, token, kernel_id, protocol=V1)
        after = leaving.submit_and_leave([(nbfile_source(second), second["id"])])[0]
        with KernelConnection(stack.base_url, token, kernel_id, protocol=V1) as again:
            kept = again.follow(waiting, seconds=5)
            stack.exec("kill", "-CONT", str(pid))
            pid = 0
            assert kept["stdout"] == "go\n" and kept["idle"], f"the reopened page got {kept['messages']}"
            assert again.follow(after)["stdout"] == "after\n"
    finally:
        if pid:
            stack.exec("kill", "-CONT", str(pid), check=False)
        api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")


def nbfile_source(c: dict) -> str:
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def test_a_restart_while_a_cell_has_printed_180_mb_keeps_its_output_and_says_so(stack: Stack):
    """`restart` while a cell has printed 180 MB: within the stop's grace the cell in the file holds the start and
    the end of what it printed up to the stop, what was cut between, and the note that the container stopped."""
    path = write_notebook(stack, "flood.ipynb", [cell(
        "import sys, time\nline = 'z' * 999 + '\\n'\nfor i in range(180_000):\n    sys.stdout.write(line)\n"
        "print('printed', flush=True)\ntime.sleep(600)")])
    run_id = start_run(stack, "flood.ipynb", "--no-resume")
    wait_for(lambda: "printed" in text_of(read(path)["cells"][0]), 300, "the 180 MB and its last line in the file")
    stack.compose("restart", timeout=180)
    stack.wait_healthy()
    assert run_record(stack, run_id)["state"] == "interrupted"
    text = text_of(read(path)["cells"][0])
    assert text.startswith("z" * 999) and "characters of this output were cut here" in text
    assert "printed\n" in text and "the container stopped while this cell ran" in text, text[-500:]


# The runner's bound, whatever a cell prints: ~60 MiB, each stream kept to ~2 MiB (StreamText), plus a few
# times the largest message a kernel sends (~1 MiB: container/ipython/bounded_stream_messages.py).
RUNNER_PEAK_MIB = 150


@pytest.mark.alone  # a peak of memory: a runner that a loaded machine slows queues more
def test_a_cell_printing_300_mb_costs_the_runner_little(make_stack):
    """A cell printing 300 MB under NOTEBOOK_MEMORY_LIMIT=1g, beside an idle kernel holding 200 MB: nothing is
    OOM-killed, the runner's peak memory stays within its bound (it was 960 MiB for 200 MB), and the notebook
    keeps the start and end of the output with what was cut between."""
    stack: Stack = make_stack(NOTEBOOK_MEMORY_LIMIT="1g")
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    idle = api(stack.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    with KernelConnection(stack.base_url, token, idle) as kernel:
        assert kernel.execute("held = bytearray(200 << 20)")["error"] is None
    path = write_notebook(stack, "chatty.ipynb", [cell(
        "import sys\nline = 'y' * 999 + '\\n'\nfor i in range(300_000):\n    sys.stdout.write(line)\nprint('end')")])
    run_id = start_run(stack, "chatty.ipynb")
    pid = wait_for(lambda: stack.program_pid("notebook-runner"), 30, "the runner")
    peak = [0]

    def sample() -> dict | None:
        status = stack.exec("cat", f"/proc/{pid}/status", check=False).stdout
        peak[0] = max([peak[0]] + [int(line.split()[1]) // 1024 for line in status.splitlines()
                                   if line.startswith("VmHWM:")])
        record = run_record(stack, run_id)
        return record if record["state"] not in ACTIVE else None
    done = wait_for(sample, 600, "the run of 300 MB to end", interval=1)
    assert done["state"] == "done", (done["error"], done["notes"], oom_kills(stack))
    assert stack.program_pid("notebook-runner") in (0, pid), "the runner was replaced (killed?)"
    assert peak[0] < RUNNER_PEAK_MIB, f"the runner peaked at {peak[0]} MiB"
    with KernelConnection(stack.base_url, token, idle) as kernel:
        assert kernel.execute("print(len(held))")["stdout"] == f"{200 << 20}\n", "the idle kernel was lost"
    assert oom_kills(stack) == 0, f"{oom_kills(stack)} OOM kills"
    text = text_of(read(path)["cells"][0])
    assert text.startswith("y" * 999) and text.endswith("y\nend\n"), text[-200:]
    assert "characters of this output were cut here" in text and len(text) < 2 << 20


def oom_kills(stack: Stack) -> int:
    """The container's OOM kills so far (cgroup v2 memory.events, v1 memory.oom_control)."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        out = stack.exec("cat", path, check=False).stdout
        for line in out.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("swap", ["ids-changed", "symlink"])
def test_a_notebook_replaced_mid_run_keeps_the_outputs_in_a_side_file(stack: Stack, swap: str):
    """The notebook replaced by another version mid-run (cell ids changed, as after `git checkout`; or a symlink
    to another notebook swapped in): no output lost, none put in a wrong cell: they go to a side file, named."""
    name = f"swap-{swap}.ipynb"
    sources = ["print('one')", wait_source(f"go-{swap}"), "print('three')"]
    path = write_notebook(stack, name, [cell(src) for src in sources])
    run_id = start_run(stack, name)
    wait_for(lambda: "one" in text_of(read(path)["cells"][0]), 30, "the first cell's output in the file")
    if swap == "ids-changed":
        write_notebook(stack, name, [cell(src) for src in sources])  # same cells, other ids
        other = path
    else:
        other = write_notebook(stack, f"other-{swap}.ipynb", [cell("print('not this one')") for _ in range(3)])
        link = stack.workspace / f".{name}.link"
        link.symlink_to(other.name)
        os.replace(link, path)
    touch(stack, f"go-{swap}")
    record = wait_run(stack, run_id)
    assert record["state"] == "done", record
    assert record["saved_to"] and record["saved_to"].endswith(f".run-{run_id}.ipynb"), record
    assert any("also in" in note for note in record["notes"]), record["notes"]
    assert all(c["outputs"] == [] for c in read(other)["cells"]), "outputs went into another version's cells"
    side = stack.workspace / Path(record["saved_to"]).name
    assert [text_of(c) for c in read(side)["cells"]] == ["one\n", "go\n", "three\n"]
    validate_in_container(stack, side)


def test_a_killed_runner_leaves_the_notebook_saying_so(stack: Stack):
    """kill -9 of the runner mid-cell: the next runner marks the run interrupted, in `runs` and in the notebook's
    own metadata (which said "running")."""
    path = write_notebook(stack, "killed-runner.ipynb", [cell(wait_source("killed-go"))])
    run_id = start_run(stack, "killed-runner.ipynb")
    wait_run(stack, run_id, until=lambda r: r["state"] == "running")
    wait_for(lambda: read(path)["metadata"].get("persistent_notebooks", {}).get("run", {}).get("state") == "running",
             30, "the notebook's metadata to say running")
    stack.exec("kill", "-KILL", str(stack.program_pid("notebook-runner")))
    try:
        write_notebook(stack, "after-kill.ipynb", [cell("print(1)")])
        assert wait_run(stack, start_run(stack, "after-kill.ipynb"))["state"] == "done"  # a new runner
        assert run_record(stack, run_id)["state"] == "interrupted"
        meta = read(path)["metadata"]["persistent_notebooks"]["run"]
        assert meta["state"] == "interrupted" and "killed" in meta["status"], meta
    finally:
        touch(stack, "killed-go")


@pytest.mark.parametrize("runner_killed", [False, True], ids=["runner-waits", "runner-killed"])
def test_a_full_disk_keeps_the_outputs_until_they_can_be_saved(make_stack, runner_killed: bool):
    """The workspace's disk fills up mid-run: the run never says done with output missing; it says it is saving
    and why, keeps the outputs (in the state volume too), and writes them all once there is room again; if its
    runner is killed meanwhile, the next one (the watchdog starts it) writes them."""
    if os.getuid() != 0:
        pytest.skip("needs root to mount a small filesystem as the workspace")
    stack: Stack = make_stack()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=2m,uid={TEST_UID},gid={TEST_GID},mode=0755", "tmpfs",
                    str(stack.workspace)], check=True)
    try:
        stack.up()
        stack.wait_healthy()
        path = write_notebook(stack, "full.ipynb", [cell("print('before', flush=True)\n" + wait_source("full-go")),
                                                    cell("print('x' * 100_000)")])
        run_id = start_run(stack, "full.ipynb")
        wait_for(lambda: "before" in text_of(read(path)["cells"][0]), 30, "the first line in the file")
        filler = stack.workspace / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with contextlib.suppress(OSError):  # until the disk is full
                while True:
                    os.write(fd, b"\0" * 65536)
        finally:
            os.close(fd)
        touch(stack, "full-go")
        saving = wait_run(stack, run_id, until=lambda r: r["state"] == "saving")
        assert "No space left" in (saving["write_error"] or ""), saving
        assert "saving" not in text_of(read(path)["cells"][0]) and read(path)["cells"][1]["outputs"] == []
        if runner_killed:  # the outputs are in the state volume, and the next runner writes them
            pending = f"/var/lib/persistent-notebooks/runs/{run_id}.pending.json"
            assert stack.exec("test", "-s", pending, check=False).returncode == 0, "no outputs kept in the state volume"
            stack.exec("kill", "-KILL", str(stack.program_pid("notebook-runner")))
        filler.unlink()
        if runner_killed:
            wait_for(lambda: text_of(read(path)["cells"][1]), 60, "the next runner to write the kept outputs")
            done = run_record(stack, run_id)
            assert any("written into" in note for note in done["notes"]), done
            assert stack.exec("test", "-e", pending, check=False).returncode != 0, "the kept outputs were not removed"
        else:
            done = wait_run(stack, run_id)
            assert done["state"] == "done" and not done["write_error"], done
            assert read(path)["metadata"]["persistent_notebooks"]["run"]["state"] == "done"
        cells = read(path)["cells"]
        assert text_of(cells[0]) == "before\ngo\n" and text_of(cells[1]) == "x" * 100_000 + "\n"
    finally:
        stack.down()
        subprocess.run(["umount", str(stack.workspace)], check=False)
