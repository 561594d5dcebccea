"""Damaged state and crashes mid-save: one bad kernel record costs no kernel, a save killed half-way
leaves a whole notebook, idle time survives adoption. On a stack of this module's own (it kills Jupyter).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import own_stack, show_logs_on_failure
from kernelclient import KernelConnection, api, start_kernel
from stack import SUPERVISORCTL, TEST_GID, TEST_UID, Stack, wait_for

KERNELS = "/var/lib/persistent-notebooks/kernels"


@pytest.fixture(scope="module")
def damage_stack(test_image, env_file, tmp_path_factory) -> Iterator[Stack]:
    with own_stack(test_image, env_file, tmp_path_factory, "damage") as stack:
        yield stack


@pytest.fixture
def stack(request, damage_stack: Stack) -> Stack:
    damage_stack.wait_healthy()
    settled(damage_stack)
    show_logs_on_failure(request.node, damage_stack)
    return damage_stack


def settled(stack: Stack) -> None:
    """Every program RUNNING past its startsecs (a kill before that would count as a failed start)."""
    wait_for(stack.settled, 60, "every program to run for a few seconds")


def last_activity(stack: Stack, token: str, kernel_id: str) -> datetime:
    kernel = api(stack.base_url, token, f"/api/kernels/{kernel_id}")
    return datetime.fromisoformat(kernel["last_activity"].replace("Z", "+00:00"))


def test_damaged_kernel_records_are_set_aside(stack: Stack):
    """Records of the wrong shape should be set aside and logged; Jupyter and the keeper keep every kernel."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("kept = 'still here'")["error"] is None
    bad = {"list": "[]", "object": "{}", "empty": "", "garbage": "\x01\x02not json",
           "renamed": json.dumps({"kernel_id": "another-id", "kernel_name": "python3", "connection_file": "/x",
                                  "pid": 1, "start_time": 1})}
    for name, text in bad.items():
        stack.exec("sh", "-c", f"printf '%s' \"$1\" > {KERNELS}/{name}.json", "sh", text)
    keeper = stack.program_pid("kernel-keeper")
    stack.kill_jupyter()
    stack.wait_api(token)
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("print(kept)")["stdout"] == "still here\n"
    stack.exec(*SUPERVISORCTL, "restart", "kernel-keeper")
    wait_for(lambda: kernel_id in stack.keeper_status(), 30, "the restarted keeper to follow the kernel")
    assert stack.program_pid("kernel-keeper") not in (0, keeper)
    left = stack.exec("ls", KERNELS).stdout.split()
    assert sorted(f for f in left if f.endswith(".damaged")) == sorted(f"{n}.json.damaged" for n in bad), left
    assert f"{kernel_id}.json" in left
    logs = stack.logs()
    for name in bad:
        assert f"kernel record {name}.json is damaged" in logs, f"{name}: not logged"
    assert "its kernel_id 'another-id' is not its file name" in logs
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def test_a_dead_record_naming_a_live_kernels_connection_file_harms_it_not(stack: Stack):
    """A well-formed record of a dead kernel that names a running kernel's connection file (copied by hand, left by
    a bug): the next Jupyter drops that record, and the running kernel keeps its file and is adopted."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("kept = 'live'")["error"] is None
    live = json.loads(stack.exec("cat", f"{KERNELS}/{kernel_id}.json").stdout)
    dead = {**live, "kernel_id": "0dead000-0000-4000-8000-000000000000", "pid": 999999, "start_time": 1}
    stack.exec("sh", "-c", f"printf '%s' \"$1\" > {KERNELS}/{dead['kernel_id']}.json", "sh", json.dumps(dead))
    for _ in range(2):  # the first drops the dead record; the second must still find the live kernel's file
        stack.kill_jupyter()
        stack.wait_api(token)
        with KernelConnection(stack.base_url, token, kernel_id) as client:
            assert client.execute("print(kept)")["stdout"] == "live\n"
    assert stack.exec("test", "-e", live["connection_file"], check=False).returncode == 0, "its file was removed"
    assert dead["kernel_id"] not in {k["id"] for k in api(stack.base_url, token, "/api/kernels")}
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def test_adoption_keeps_the_idle_time(stack: Stack):
    """A kernel adopted after a crash should keep its last activity, so culling and --idle-for go on counting."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        client.execute("1")
    before = last_activity(stack, token, kernel_id)
    wait_for(lambda: (datetime.now(UTC) - before).total_seconds() >= 3, 10, "the kernel to be idle 3 s")
    stack.kill_jupyter()
    stack.wait_api(token)
    after = last_activity(stack, token, kernel_id)
    assert abs((after - before).total_seconds()) < 1, f"last activity {before} became {after} on adoption"
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def notebook(size: int) -> dict:
    return {"type": "notebook", "content": {
        "cells": [{"cell_type": "code", "id": "big", "metadata": {}, "execution_count": 1, "source": "x",
                   "outputs": [{"output_type": "stream", "name": "stdout", "text": "y" * size}]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}


def test_jupyter_saves_replace_the_file_by_rename(stack: Stack):
    """A save through Jupyter should replace the file by rename (a new inode), keep its mode, leave no backup."""
    token = stack.token()
    api(stack.base_url, token, "/api/contents/saved.ipynb", "PUT", notebook(10))
    path = stack.workspace / "saved.ipynb"
    path.chmod(0o640)
    inode = path.stat().st_ino
    api(stack.base_url, token, "/api/contents/saved.ipynb", "PUT", notebook(20))
    assert path.stat().st_ino != inode, "the save rewrote the file in place (jupyter_server's own writing)"
    assert path.stat().st_mode & 0o777 == 0o640, oct(path.stat().st_mode)
    assert "".join(json.loads(path.read_text())["cells"][0]["outputs"][0]["text"]) == "y" * 20
    api(stack.base_url, token, "/api/contents/plain.txt", "PUT", {"type": "file", "format": "text", "content": "a"})
    inode = (stack.workspace / "plain.txt").stat().st_ino
    api(stack.base_url, token, "/api/contents/plain.txt", "PUT", {"type": "file", "format": "text", "content": "b"})
    assert (stack.workspace / "plain.txt").stat().st_ino != inode, "a file save rewrote it in place"
    assert [p.name for p in stack.workspace.iterdir() if p.name.startswith(".~")] == []


def test_a_save_killed_midway_leaves_a_whole_notebook(stack: Stack):
    """kill -9 of Jupyter during 20 MiB saves should leave the old or the new notebook, never a truncated one."""
    token = stack.token()
    size = 20 * 2**20
    api(stack.base_url, token, "/api/contents/big.ipynb", "PUT", notebook(size))
    path = stack.workspace / "big.ipynb"
    for attempt in range(5):
        settled(stack)
        body = notebook(size + attempt + 1)
        saver = threading.Thread(target=lambda b=body: _put_ignoring_errors(stack, token, b), daemon=True)
        saver.start()
        time.sleep(0.1 * attempt)  # kill at a different point of the save each time (not a wait for a condition)
        stack.kill_jupyter()
        saver.join(60)
        stack.wait_api(token)
        text = path.read_text()
        assert len(text) > size, f"try {attempt}: the notebook on disk has {len(text)} bytes"
        json.loads(text)
    api(stack.base_url, token, "/api/contents/big.ipynb", "PUT", notebook(10))
    left = [p.name for p in stack.workspace.iterdir() if p.name.endswith(".saving")]
    assert left == [], f"the temporary files of killed saves should be removed by the next save: {left}"


def _put_ignoring_errors(stack: Stack, token: str, body: dict) -> None:
    try:
        api(stack.base_url, token, "/api/contents/big.ipynb", "PUT", body)
    except OSError:
        pass  # the server was killed under the request: expected


DB = "/var/lib/persistent-notebooks/jupyter/sessions.db"


@pytest.mark.parametrize("damage", {
    "truncated": f"truncate -s $(( $(stat -c %s {DB}) / 2 )) {DB}",
    "garbage": f"head -c 8192 /dev/urandom > {DB}",
    "folder": f"rm -f {DB} && mkdir {DB}",
    "read-only": f"chmod 0444 {DB}",
    "journal-folder": f"mkdir {DB}-journal",
}.items(), ids=lambda item: item[0])
def test_a_damaged_sessions_database_is_replaced_and_rebuilt(stack: Stack, damage):
    """A damaged sessions database should be moved aside and rebuilt from the kernel records; kernels kept."""
    name, command = damage
    token = stack.token()
    api(stack.base_url, token, f"/api/contents/db-{name}.ipynb", "PUT", notebook(1))
    session = api(stack.base_url, token, "/api/sessions", "POST",
                  {"path": f"db-{name}.ipynb", "type": "notebook", "name": f"db-{name}.ipynb",
                   "kernel": {"name": "python3"}})  # named after its file, as JupyterLab does
    kernel_id = session["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("kept = 42")["error"] is None
    stack.exec("sh", "-c", command)
    stack.kill_jupyter()
    stack.wait_api(token)
    sessions = wait_for(lambda: api(stack.base_url, token, "/api/sessions"), 30, "sessions to be listed")
    rebuilt = [s for s in sessions if s["path"] == f"db-{name}.ipynb"]
    assert [s["kernel"]["id"] for s in rebuilt] == [kernel_id], sessions
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("print(kept)")["stdout"] == "42\n"
    if name == "read-only":
        assert "the sessions database was not writable: made it writable" in stack.logs()
    elif name == "journal-folder":
        assert "sessions.db-journal was not a file: moved aside" in stack.logs()
    else:
        assert "the sessions database was damaged" in stack.logs()
        assert stack.exec("sh", "-c", f"ls -d {DB}.damaged-*").stdout.strip()
    api(stack.base_url, token, f"/api/sessions/{rebuilt[0]['id']}", "DELETE")  # (a write: it works again)
    stack.exec("sh", "-c", f"rm -rf {DB}.damaged-* {DB}-journal.damaged-*")


def test_a_sessions_database_damaged_while_jupyter_runs_is_healed(stack: Stack):
    """sessions.db truncated under a running Jupyter: the watchdog should see session requests fail and replace the
    server, which rebuilds the database: sessions work again within the heal time, the kernel kept."""
    token = stack.token()
    api(stack.base_url, token, "/api/contents/db-running.ipynb", "PUT", notebook(1))
    session = api(stack.base_url, token, "/api/sessions", "POST",
                  {"path": "db-running.ipynb", "type": "notebook", "name": "db-running.ipynb",
                   "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("kept = 43")["error"] is None
    stack.exec("sh", "-c", f"head -c 8192 /dev/urandom > {DB}")

    def sessions_work():
        return [s for s in api(stack.base_url, token, "/api/sessions") if s["kernel"]["id"] == kernel_id]
    rebuilt = wait_for(sessions_work, 60, "session requests to work again")
    assert rebuilt[0]["path"] == "db-running.ipynb", rebuilt
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        assert client.execute("print(kept)")["stdout"] == "43\n"
    assert "its sessions (the sessions database) answered" in stack.logs()
    api(stack.base_url, token, f"/api/sessions/{rebuilt[0]['id']}", "DELETE")
    stack.exec("sh", "-c", f"rm -rf {DB}.damaged-*")


def test_a_huge_workspace_blocks_no_request(stack: Stack):
    """With 120,000 folders in the workspace, Jupyter should answer every kernelspec listing and never be
    killed by the watchdog, also while it starts again after a crash; env list names what it skipped."""
    tree = stack.workspace / "images"
    for i in range(400):
        for j in range(300):
            os.makedirs(tree / f"set{i:03d}" / f"{j:03d}")
    big = stack.workspace / "big"
    big.mkdir()
    for i in range(2100):
        (big / f"f{i:04d}").write_bytes(b"")
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", f"{TEST_UID}:{TEST_GID}", str(tree), str(big)], check=True)
    try:
        token = stack.token()
        kernel_id = start_kernel(stack.base_url, token)
        stack.kill_jupyter()
        stack.wait_api(token)
        pid = stack.program_pid("jupyter")
        request = urllib.request.Request(f"{stack.base_url}/api/kernelspecs",
                                         headers={"Authorization": f"token {token}"})
        deadline = time.monotonic() + 20  # longer than the watchdog's 3 failed probes, 5 s apart
        answered = 0
        # Each listing answered within 5 s; asked every 0.2 s (back to back, they only kept a core busy).
        while time.monotonic() < deadline:
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                assert "python3" in json.loads(response.read())["kernelspecs"]
            answered += 1
            time.sleep(0.2)
        assert stack.program_pid("jupyter") == pid, "the watchdog killed Jupyter while it searched the workspace"
        assert answered > 0
        listing = stack.exec("notebookctl", "env", "list", timeout=120)
        assert "/workspace/big: more than 2,000 entries" in listing.stderr, listing.stderr
        api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(big, ignore_errors=True)


def print_while_away(stack: Stack, token: str, kernel_id: str, code: str) -> str:
    """Run code in the kernel once its client has gone (a flag file lets it go on); the cell's msg_id."""
    flag = f"/tmp/go-{kernel_id}"
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        msg_id = client.submit(f"import os, time\nprint('waiting', flush=True)\n"
                               f"while not os.path.exists({flag!r}):\n    time.sleep(0.05)\n{code}")
        wait_for(lambda: "waiting" in client.follow(msg_id, seconds=0.5)["stdout"], 30, "the cell to start")
    stack.exec("touch", flag)
    stack.wait_kernel_idle(kernel_id, 60, msg_id)
    return msg_id


FAKE_RECORD = r"""
import sys
from persistent_notebooks import paths
from persistent_notebooks.state import kernels
pid = int(sys.argv[1])
kernels.write(kernels.KernelRecord(kernel_id="not-a-kernel", kernel_name="python3", connection_file="/nonexistent",
                                   pid=pid, pgid=pid, start_time=paths.process_start_time(pid)))
"""


def test_the_keeper_runs_only_while_kernels_do(stack: Stack):
    """The kernel keeper should run only while kernels do: started before a kernel's launch returns, gone
    by itself after the last kernel, and started by the watchdog should a kernel be recorded without it."""
    token = stack.token()
    for kernel in api(stack.base_url, token, "/api/kernels"):
        api(stack.base_url, token, f"/api/kernels/{kernel['id']}", "DELETE")
    wait_for(lambda: stack.programs().get("kernel-keeper") in ("STOPPED", "EXITED"), 60,
             "the keeper to exit by itself with no kernel (20 s after the last one)")
    ok, report = stack.check_health()
    assert ok, f"a stack with no kernel and no keeper should be healthy: {report}"
    kernel_id = start_kernel(stack.base_url, token)
    assert kernel_id in stack.keeper_status(), "the keeper does not follow a kernel whose launch has returned"
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    wait_for(lambda: stack.programs().get("kernel-keeper") == "EXITED", 60,
             "the keeper to exit by itself after the last kernel")
    assert "no kernel for 20 s: exiting" in stack.logs()
    assert stack.check_health()[0], "the stack is not healthy after the keeper exited by itself"
    # A kernel recorded while no keeper runs (a launch racing the keeper's exit): the watchdog starts one.
    pid = stack.exec("sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        stack.exec("/opt/venv/bin/python", "-c", FAKE_RECORD, pid)
        wait_for(lambda: stack.programs().get("kernel-keeper") == "RUNNING", 30,
                 "the watchdog to start the keeper for a running kernel")
        assert "not running while 1 kernel(s) run: starting it" in stack.logs()
    finally:
        stack.exec("rm", "-f", f"{KERNELS}/not-a-kernel.json")
        stack.exec("kill", pid, check=False)


def test_a_killed_keeper_tells_the_next_client_what_was_lost(stack: Stack):
    """Output kept while away and lost with a kill -9 of the keeper should be announced to the next client."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    msg_id = print_while_away(stack, token, kernel_id, "for i in range(100):\n    print('away', i)")
    assert stack.keeper_status()[kernel_id]["kept_messages"] > 0
    keeper = stack.program_pid("kernel-keeper")
    stack.exec("kill", "-KILL", str(keeper))
    wait_for(lambda: stack.program_pid("kernel-keeper") not in (0, keeper), 30, "a new keeper")
    wait_for(lambda: kernel_id in stack.keeper_status(), 30, "the new keeper to follow the kernel")
    text = ""
    deadline = time.monotonic() + 60  # a loaded machine (the suite's workers) took 15 s and more
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        while "the kernel keeper was restarted" not in text and time.monotonic() < deadline:
            out = client.follow(msg_id, seconds=1)
            text += "".join(m["content"].get("text", "") for m in out["messages"] if m["msg_type"] == "stream")
    assert "the kernel keeper was restarted" in text, f"no notice of the lost output: {text!r}"
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def test_a_hung_keeper_is_healed(stack: Stack):
    """A keeper that hangs (kill -STOP) should be killed by the watchdog and replaced, following the kernels."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    wait_for(lambda: kernel_id in stack.keeper_status(), 30, "the keeper to follow the kernel")
    keeper = stack.program_pid("kernel-keeper")
    stack.exec("kill", "-STOP", str(keeper))
    wait_for(lambda: stack.program_pid("kernel-keeper") not in (0, keeper), 60, "the watchdog to replace the keeper")
    wait_for(lambda: kernel_id in stack.keeper_status(), 30, "the new keeper to follow the kernel")
    assert "the kernel keeper (pid" in stack.logs() and "hangs: killing it" in stack.logs()
    api(stack.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def test_an_oversized_message_keeps_its_newest_part(make_stack):
    """A stream message bigger than NOTEBOOK_AWAY_BUFFER should replay its newest part, after the notice."""
    stack = make_stack(NOTEBOOK_AWAY_BUFFER="1m")
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    msg_id = print_while_away(stack, token, kernel_id, "import sys\nsys.stdout.write('x' * (4 * 2**20) + 'THE END\\n')")
    with KernelConnection(stack.base_url, token, kernel_id) as client:
        out = client.follow(msg_id)
    streams = [m["content"]["text"] for m in out["messages"] if m["msg_type"] == "stream"]
    assert streams and "were dropped" in streams[0], streams[:1]
    kept = "".join(streams[1:])
    assert kept.endswith("THE END\n") and 0 < len(kept) <= 2**20, f"{len(kept)} characters kept"
