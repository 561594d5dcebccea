"""Kernels outlive the Jupyter server; the tmux session outlives the tmux server and the container.

These tests kill things, so they run on a stack of their own (one for the module), and each starts
by waiting until that stack is healthy again.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from conftest import show_logs_on_failure
from kernelclient import KernelConnection, across_a_drop, api, list_kernels
from stack import SUPERVISORCTL, TEST_GID, TEST_UID, Stack, owned_folder, wait_for

LOOP = """
import json
import re
import time
for i in range({n}):
    print(i, flush=True)
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def survivor(test_image, env_file, tmp_path_factory):
    """A stack of its own for tests that kill Jupyter, tmux or the container."""
    workspace = owned_folder(tmp_path_factory.mktemp("survivor") / "workspace", TEST_UID, TEST_GID)
    stack = Stack(workspace, test_image, env_file, HOST_UID=str(TEST_UID), HOST_GID=str(TEST_GID))
    stack.up()
    yield stack
    stack.down()


@pytest.fixture
def live(request, survivor: Stack) -> Stack:
    survivor.wait_healthy()
    show_logs_on_failure(request.node, survivor)
    return survivor


def numbers(text: str) -> list[int]:
    return [int(word) for word in text.split()]


def running(stack: Stack, pids: set[int]) -> set[int]:
    """Those of pids that still run in the container (zombies count as gone)."""
    rows = [line.split() for line in stack.exec("ps", "-eo", "pid=,stat=").stdout.splitlines()]
    return {int(pid) for pid, stat in rows if int(pid) in pids and not stat.startswith("Z")}


@pytest.mark.parametrize("how", ["kill -9", "supervisorctl restart"])
def test_kernels_survive_a_jupyter_restart(live: Stack, how: str):
    """After Jupyter dies the kernel, its session and variables should be back, the loop gone on, no line lost."""
    token = live.token()
    path = f"notebook-{uuid.uuid4().hex[:6]}.ipynb"
    session = api(live.base_url, token, "/api/sessions", "POST",
                  {"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    a = KernelConnection(live.base_url, token, kernel_id)
    assert a.execute("kept = 6 * 7")["error"] is None
    msg_id = a.submit(LOOP.format(n=60))
    seen = a.follow(msg_id, seconds=1)
    live.kill_jupyter(how)
    seen_more = a.follow(msg_id, seconds=10)  # whatever the old server still sent before it went
    assert seen_more["closed"], "the old server should have closed the websocket"
    a.close()
    live.wait_api(token, 60)

    sessions = api(live.base_url, token, "/api/sessions")
    assert [(s["id"], s["path"], s["kernel"]["id"]) for s in sessions if s["id"] == session["id"]] == \
        [(session["id"], path, kernel_id)], f"session not kept: {sessions}"
    assert kernel_id in {k["id"] for k in list_kernels(live.base_url, token)}
    with KernelConnection(live.base_url, token, kernel_id) as b:
        later = b.follow(msg_id)
        assert b.execute("print(kept)")["stdout"] == "42\n", "the kernel's variables are gone"
    first = numbers(seen["stdout"] + seen_more["stdout"])
    rest = numbers(later["stdout"])
    assert rest and rest[-1] == 59, f"the loop did not go on to the end: {rest}"
    assert rest == list(range(rest[0], 60)), f"lines missing or out of order after the restart: {rest}"
    assert sorted(set(first + rest)) == list(range(60)), f"lost lines: {set(range(60)) - set(first + rest)}"
    assert across_a_drop(first, rest) == list(range(60)), f"lines repeated past the drop: {first} then {rest}"
    api(live.base_url, token, f"/api/sessions/{session['id']}", "DELETE")


def test_adopted_kernel_can_be_interrupted_restarted_and_shut_down(live: Stack):
    """An adopted kernel should obey interrupt, restart and shutdown; after shutdown nothing of it runs."""
    token = live.token()
    one = api(live.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    two = api(live.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    with KernelConnection(live.base_url, token, two) as c:
        child = int(c.execute("import subprocess; p = subprocess.Popen(['sleep', '1000']); print(p.pid)")["stdout"])
        pid_two = int(c.execute("import os; print(os.getpid())")["stdout"])
    with KernelConnection(live.base_url, token, one) as c:
        pid_one = int(c.execute("import os; print(os.getpid())")["stdout"])
    live.kill_jupyter()
    live.wait_api(token, 60)

    with KernelConnection(live.base_url, token, one) as c:
        msg_id = c.submit("import time; time.sleep(60)")
        wait_for(lambda: any(k["id"] == one and k["execution_state"] == "busy"
                             for k in list_kernels(live.base_url, token)), 20, "the kernel to be busy")
        api(live.base_url, token, f"/api/kernels/{one}/interrupt", "POST")
        result = c.follow(msg_id, seconds=20)
        errors = [m["content"]["ename"] for m in result["messages"] if m["msg_type"] == "error"]
        assert errors == ["KeyboardInterrupt"], f"interrupt did not reach the adopted kernel: {result['messages']}"
    api(live.base_url, token, f"/api/kernels/{one}/restart", "POST")
    with KernelConnection(live.base_url, token, one) as c:
        new_pid = int(c.execute("import os; print(os.getpid())")["stdout"])
    assert new_pid != pid_one, "restart did not start a new kernel process"
    assert live.exec("kill", "-0", str(pid_one), check=False).returncode != 0, "the old kernel process lingers"

    # A kernel that dies takes what it started with it (its process group), here at the auto-restart.
    assert running(live, {pid_two, child}) == {pid_two, child}
    with KernelConnection(live.base_url, token, two) as c:
        c.follow(c.submit("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), seconds=2)
    wait_for(lambda: not running(live, {pid_two, child}), 30,
             "the dead kernel's process group (its `sleep`) to be ended")
    with KernelConnection(live.base_url, token, two) as c:
        pid_two = int(wait_for(lambda: c.execute("import os; print(os.getpid())")["stdout"], 30,
                               "the kernel to be restarted"))
        child = int(c.execute("import subprocess; p = subprocess.Popen(['sleep', '1000']); print(p.pid)")["stdout"])
    api(live.base_url, token, f"/api/kernels/{two}", "DELETE")
    wait_for(lambda: not running(live, {pid_two, child}), 30,
             "the shut-down kernel and the process it started to be gone")
    assert live.exec("test", "-e", f"/var/lib/persistent-notebooks/kernels/{two}.json", check=False).returncode, \
        "the shut-down kernel's record is left"
    api(live.base_url, token, f"/api/kernels/{one}", "DELETE")


def tmux_windows(stack: Stack) -> list[tuple[str, str]]:
    name = stack.variables["TMUX_SESSION"]
    out = stack.exec("tmux", "-N", "list-panes", "-s", "-t", f"={name}", "-F",
                     "#{window_index}.#{pane_index}\t#{window_name}\t#{pane_current_path}").stdout
    return [tuple(line.split("\t")) for line in out.splitlines()]


def set_up_windows(stack: Stack, marker: str) -> None:
    name = stack.variables["TMUX_SESSION"]
    stack.exec("mkdir", "-p", "/workspace/project/src")
    stack.exec("tmux", "-N", "new-window", "-t", f"={name}:", "-n", "editor", "-c", "/workspace/project")
    stack.exec("tmux", "-N", "split-window", "-t", f"={name}:editor", "-c", "/workspace/project/src")
    stack.exec("tmux", "-N", "send-keys", "-t", f"={name}:editor.0", f"echo {marker}-$((6*7))", "Enter")
    wait_for(lambda: f"{marker}-42" in pane_text(stack, "editor.0"), 20, "the marker in the pane")


def pane_text(stack: Stack, pane: str) -> str:
    name = stack.variables["TMUX_SESSION"]
    return stack.exec("tmux", "-N", "capture-pane", "-p", "-J", "-S", "-", "-t", f"={name}:{pane}",
                      check=False).stdout


def assert_restored(stack: Stack, before: list, marker: str) -> None:
    wait_for(lambda: stack.session_exists() and len(tmux_windows(stack)) == len(before), 30,
             f"the session with its {len(before)} panes")
    after = tmux_windows(stack)
    assert [(p, n) for p, n, _ in after] == [(p, n) for p, n, _ in before], f"windows {before} -> {after}"
    assert [d for _, _, d in after] == [d for _, _, d in before], f"directories {before} -> {after}"
    wait_for(lambda: f"{marker}-42" in pane_text(stack, "editor.0"), 20, "the saved scrollback in the pane")


def test_tmux_session_rebuilt_after_kill_server(live: Stack):
    """After tmux kill-server the session should come back from the last save: windows, dirs, scrollback."""
    marker = f"kept-{uuid.uuid4().hex[:6]}"
    set_up_windows(live, marker)
    before = tmux_windows(live)
    live.exec("/opt/venv/bin/python", "-m", "persistent_notebooks.tmux", "save")  # the periodic save
    live.exec("tmux", "-N", "kill-server")
    assert_restored(live, before, marker)
    live.exec("tmux", "-N", "kill-window", "-t", f"={live.variables['TMUX_SESSION']}:editor")


def test_container_restart_ends_kernels_cleanly_and_keeps_the_session(live: Stack):
    """`docker compose restart` should shut kernels down cleanly (their atexit handlers run), start them again under
    their ids (test_kernel_restore.py: with their variables), and bring the tmux session back as it was."""
    token = live.token()
    kernel_id = api(live.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    flag = f"/workspace/clean-exit-{kernel_id}"
    with KernelConnection(live.base_url, token, kernel_id) as c:
        c.execute(f"import atexit; atexit.register(lambda: open({flag!r}, 'w').write('bye'))")
    marker = f"kept-{uuid.uuid4().hex[:6]}"
    set_up_windows(live, marker)
    before = tmux_windows(live)
    started = time.monotonic()
    live.compose("restart")
    took = time.monotonic() - started
    assert (live.workspace / flag.rsplit("/", 1)[1]).exists(), \
        f"the kernel was not shut down cleanly (restart took {took:.1f} s):\n{live.logs()[-2000:]}"
    live.wait_healthy()
    assert [k["id"] for k in list_kernels(live.base_url, token)] == [kernel_id], "the kernel did not come back"
    api(live.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")
    assert re.search(r"kernels shut down: [1-9]\d* cleanly, 0 forced", live.logs()), "a kernel was killed at stop"
    assert_restored(live, before, marker)


def test_healthcheck_fails_without_jupyter_or_session(live: Stack):
    """The healthcheck should fail while Jupyter is stopped, and while the tmux session is missing, saying which."""
    name = live.variables["TMUX_SESSION"]
    assert live.check_health() == (True, "ok")

    def failing(what: str):
        return lambda: (lambda result: not result[0] and what in result[1])(live.check_health())
    live.exec(*SUPERVISORCTL, "stop", "jupyter")
    try:  # (the watchdog starts it again 10 s after; the report says so before)
        wait_for(failing("Jupyter is STOPPED"), 15, "the health report to name the stopped Jupyter")
    finally:
        live.exec(*SUPERVISORCTL, "start", "jupyter", check=False)
    live.exec(*SUPERVISORCTL, "stop", "tmux-session")
    try:
        live.exec("tmux", "-N", "kill-session", "-t", f"={name}")
        wait_for(failing("tmux session"), 15, "the health report to name the missing tmux session")
    finally:
        live.exec(*SUPERVISORCTL, "start", "tmux-session", check=False)
    wait_for(lambda: live.check_health()[0], 60, "the healthcheck to pass again")


SUPERVISORCTL_FROM_A_CELL = """
import subprocess
def supervisorctl(*args):
    done = subprocess.run(["supervisorctl", "-c", "/etc/persistent-notebooks/supervisord.conf", *args],
                          capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()
"""


def test_a_server_stopped_from_a_cell_comes_back_and_the_stack_cannot_be_shut_down(live: Stack):
    """`supervisorctl stop jupyter` from a notebook cell: Jupyter should answer again within 30 s, its kernels
    kept; shutdown and reconfiguration through supervisord's socket should be refused to a cell."""
    token = live.token()
    kernel_id = api(live.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    with KernelConnection(live.base_url, token, kernel_id) as c:
        out = c.execute(SUPERVISORCTL_FROM_A_CELL + "kept = 5\nfor call in ('shutdown', 'reload', 'update', "
                        "'signal KILL jupyter', 'stop all'):\n    print(call, '->', supervisorctl(*call.split()))")
    refusals = out["stdout"].splitlines()
    assert len(refusals) == 5 and all("not offered here" in line for line in refusals), out
    assert live.program_pid("jupyter") and live.settled(past=0), "a refused call changed something"
    with KernelConnection(live.base_url, token, kernel_id) as c:
        c.submit(SUPERVISORCTL_FROM_A_CELL + "supervisorctl('stop', 'jupyter')")
        wait_for(lambda: live.programs().get("jupyter") == "STOPPED", 30, "Jupyter to be stopped from the cell")
    started = time.monotonic()
    live.wait_api(token, timeout=30)
    with KernelConnection(live.base_url, token, kernel_id) as c:
        assert c.execute("print(kept)")["stdout"] == "5\n", f"back after {time.monotonic() - started:.0f} s"
    assert "was stopped (by hand?)" in live.logs()
    api(live.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def test_session_comes_back_after_tmux_server_is_killed(live: Stack):
    """The named session should be back, on a new tmux server, soon after the server is killed."""
    old = live.exec("tmux", "-N", "display-message", "-p", "#{pid}").stdout.strip()
    live.exec("tmux", "-N", "kill-server")
    wait_for(live.session_exists, 20, "the tmux session to come back after kill-server")
    new = live.exec("tmux", "-N", "display-message", "-p", "#{pid}").stdout.strip()
    assert new and new != old, f"tmux server pid {old} -> {new}: it was not restarted"
    live.wait_healthy(60)


def test_jupyter_restarts_after_being_killed(live: Stack):
    """Jupyter killed inside the container should be restarted by supervisord, with the same token."""
    token = live.token()
    before = live.program_pid("jupyter")
    live.exec("kill", "-KILL", str(before))
    wait_for(lambda: live.program_pid("jupyter") not in (0, before), 30, "supervisord to start a new Jupyter process")
    live.wait_api(token, 60)
    assert live.token() == token
    assert live.api_status("wrong-" + token) in (401, 403)


def test_hung_jupyter_is_healed_and_keeps_its_kernels(live: Stack):
    """A Jupyter that stops answering (SIGSTOP) should be killed by the watchdog and replaced; kernels kept."""
    token = live.token()
    kernel_id = api(live.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
    with KernelConnection(live.base_url, token, kernel_id) as c:
        c.execute("kept = 'still here'")
    hung = live.program_pid("jupyter")
    live.exec("kill", "-STOP", str(hung))
    wait_for(lambda: live.program_pid("jupyter") not in (0, hung), 60, "the watchdog to replace the hung server")
    live.wait_api(token, 60)
    assert "hangs: killing it" in live.logs()
    with KernelConnection(live.base_url, token, kernel_id) as c:
        assert c.execute("print(kept)")["stdout"] == "still here\n"
    api(live.base_url, token, f"/api/kernels/{kernel_id}", "DELETE")


def test_fatal_program_hands_the_container_to_docker(make_stack):
    """A program that goes FATAL should end supervisord, so Docker restarts the container and it heals."""
    stack: Stack = make_stack()
    stack.up()
    stack.wait_healthy()
    # Break Jupyter's start (its token file unreadable) until the container starts afresh.
    stack.exec("chmod", "000", "/var/lib/persistent-notebooks/run/token")
    stack.exec("kill", "-KILL", str(stack.program_pid("jupyter")))
    wait_for(lambda: stack.inspect()["RestartCount"] >= 1, 120, "Docker to restart the container")
    stack.wait_healthy(120)
    logs = stack.logs()
    assert "'jupyter' is FATAL" in logs or "gave up: jupyter" in logs, logs[-3000:]


def test_out_of_memory_takes_a_kernel_not_jupyter(make_stack):
    """Under NOTEBOOK_MEMORY_LIMIT a chatty kernel should kill nothing; a greedy one alone should die."""
    stack: Stack = make_stack(NOTEBOOK_MEMORY_LIMIT="600m")
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    innocent, chatty, greedy = (api(stack.base_url, token, "/api/kernels", "POST", {"name": "python3"})["id"]
                                for _ in range(3))
    jupyter, keeper = stack.program_pid("jupyter"), stack.program_pid("kernel-keeper")
    for pid in (jupyter, keeper, 1):
        assert stack.exec("cat", f"/proc/{pid}/oom_score_adj").stdout.strip() == "0"
    with KernelConnection(stack.base_url, token, innocent) as c:
        assert c.execute("kept = list(range(10**6)); print(len(kept))")["stdout"] == "1000000\n"
    # 256 MiB printed at ~30 MiB/s with no client connected: nothing piles up in the kernel (IPython 9
    # alone would keep every byte of it), nothing is killed.
    with KernelConnection(stack.base_url, token, chatty) as c:
        pid_chatty = c.execute("import os; print(os.getpid())")["stdout"].strip()
        msg_id = c.submit("import time\nline = 'x' * 1023 + chr(10)\nfor _ in range(512):\n"
                          "    print(line * 512, end='')\n    time.sleep(0.01)")
        c.follow(msg_id, seconds=0.5)
    stack.wait_kernel_idle(chatty, 300, msg_id)
    assert stack.exec("kill", "-0", pid_chatty, check=False).returncode == 0, "the chatty kernel was killed"
    rss = stack.rss_kib(int(pid_chatty))
    assert rss < 200 * 1024, f"the chatty kernel kept what it printed: {rss // 1024} MiB after 256 MiB printed"
    with KernelConnection(stack.base_url, token, greedy) as c:
        pid = c.execute("import os; print(os.getpid())")["stdout"].strip()
        assert stack.exec("cat", f"/proc/{pid}/oom_score_adj").stdout.strip() == "800"
        # Written, so really held: more than the container may have.
        c.follow(c.submit("hog = b'x' * (2 * 2**30)"), seconds=2)
    wait_for(lambda: stack.exec("kill", "-0", pid, check=False).returncode != 0, 60, "the OOM killer to act")
    assert stack.program_pid("jupyter") == jupyter and stack.program_pid("kernel-keeper") == keeper, \
        "the OOM killer took Jupyter or the keeper"
    stack.wait_api(token, 30)
    assert stack.health() == "healthy"
    for kernel_id in (innocent, chatty):
        with KernelConnection(stack.base_url, token, kernel_id) as c:
            assert c.execute("print(1 + 1)")["stdout"] == "2\n", f"kernel {kernel_id} was taken with the greedy one"
    with KernelConnection(stack.base_url, token, innocent) as c:
        assert c.execute("print(len(kept))")["stdout"] == "1000000\n", "the idle kernel lost its variable"
