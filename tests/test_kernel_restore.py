"""Kernels that outlive the container: restart, recreate, down + up, a crash; what cannot come back is named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from kernelclient import KernelConnection, api
from stack import Stack, wait_for

STATE = "/var/lib/persistent-notebooks/kernel-state"
NOTICE = "persistent-notebooks: this kernel was restored"

# A notebook's namespace of the kinds users leave: data, functions, a class and its instance, a lambda,
# a closure, a module, a big buffer; and what cannot come back: an open file, a generator, a thread.
SETUP = """
import json as j
import threading
data = {"a": [1, 2, 3], "b": "text", "c": (4.5, None)}
big = bytearray(range(256)) * (48 * 4096)
def f(x):
    return x * 2 + len(data)
class Model:
    def __init__(self, v):
        self.v = v
    def double(self):
        return self.v * 2
model = Model(21)
lam = lambda y: y + 1
def make(n):
    def inner():
        return n
    return inner
closure = make(7)
fh = open("/tmp/handle.txt", "w")
gen = (i for i in range(3))
worker = threading.Thread(target=print)
"""
CHECK = ("print(f(1), data, len(big), big[257], model.double(), isinstance(model, Model), lam(1), closure(), "
         "j.dumps([1]))")
EXPECTED = "5 {'a': [1, 2, 3], 'b': 'text', 'c': (4.5, None)} 50331648 1 42 True 2 7 [1]\n"
NOT_RESTORED = ("fh (an open file", "gen (a generator", "worker (a thread")


def vscode_session(stack: Stack, token: str, notebook: str) -> dict:
    """A session as VSCode's Jupyter extension makes one on a remote server (jupyterKernelSessionFactory.ts)."""
    stem = Path(notebook).stem
    return api(stack.base_url, token, "/api/sessions", "POST", {
        "path": f"{stem}-jvsc-{uuid.uuid4()}{uuid.uuid4()}.ipynb", "name": f"{stem}-{uuid.uuid4()}.ipynb",
        "type": "notebook", "kernel": {"name": "python3"}})


def lab_session(stack: Stack, token: str, notebook: str) -> dict:
    """A session as JupyterLab makes one: the notebook's own path."""
    return api(stack.base_url, token, "/api/sessions", "POST", {
        "path": notebook, "name": Path(notebook).name, "type": "notebook", "kernel": {"name": "python3"}})


def sessions(stack: Stack, token: str) -> set[tuple[str, str, str]]:
    return {(s["id"], s["path"], s["kernel"]["id"]) for s in api(stack.base_url, token, "/api/sessions")}


def checkpoint(stack: Stack, kernel_id: str) -> dict:
    result = stack.exec("cat", f"{STATE}/{kernel_id}/checkpoint.json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def wait_checkpoint(stack: Stack, kernel_id: str, after: float) -> dict:
    """Wait for the kernel's checkpoint written after `after` (the container's clock)."""
    def written():
        found = checkpoint(stack, kernel_id)
        return found if found.get("at", 0) > after and found.get("ok") else None
    return wait_for(written, 30, f"kernel {kernel_id}'s checkpoint")


def container_time(stack: Stack) -> float:
    return float(stack.exec("date", "+%s.%N").stdout)


def up_again(stack: Stack, token: str, event: str, log: Path) -> None:
    """Restart, recreate or down + up the stack; the stopped container's log (gone with it when it is removed) is
    written to `log`."""
    with open(log, "w") as out:
        follower = subprocess.Popen(["docker", "logs", "--follow", "--tail", "0", stack.container],
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            if event == "restart":
                stack.compose("restart", timeout=180)
            elif event == "recreate":
                before = stack.container_id()
                stack.compose("up", "-d", "--force-recreate", timeout=180)
                assert stack.container_id() != before
            elif event == "down + up":
                stack.compose("down", timeout=180)
                stack.up()
        finally:
            follower.terminate()
            follower.wait(10)
    stack.wait_healthy()
    stack.wait_api(token)


def state_of(stack: Stack, kernel_id: str, log: Path) -> str:
    """What a failure shows: the kernel's saved state as the container sees it, and the last stop's log."""
    folder = stack.exec("sh", "-c", f"cd {STATE}/{kernel_id} && ls -la && cat checkpoint.json restored.json",
                        check=False)
    return f"state of {kernel_id}:\n{folder.stdout}{folder.stderr}\nthe stopped container's log:\n" \
        f"{log.read_text()[-8000:]}"


def test_kernels_come_back_through_restart_recreate_and_down_up(make_stack, tmp_path):
    """A JupyterLab and a VSCode session's kernels should come back under their ids, in their sessions, with every
    variable that can be saved, after restart, up --force-recreate and down + up; the first cell says what not."""
    stack: Stack = make_stack()
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    lab = lab_session(stack, token, "a/train.ipynb")
    code = vscode_session(stack, token, "a/eval.ipynb")
    with KernelConnection(stack.base_url, token, lab["kernel"]["id"]) as kernel:
        assert kernel.execute(SETUP)["error"] is None
    with KernelConnection(stack.base_url, token, code["kernel"]["id"]) as kernel:
        assert kernel.execute("y = 5")["error"] is None
    before = sessions(stack, token)
    for event in ("restart", "recreate", "down + up"):
        log = tmp_path / f"{event}.log"
        up_again(stack, token, event, log)
        assert sessions(stack, token) == before, f"sessions changed through {event}"
        with KernelConnection(stack.base_url, token, lab["kernel"]["id"]) as kernel:
            first = kernel.execute(CHECK)
            again = kernel.execute("print(In[-1][:5], get_ipython().execution_count >= 3)")
        assert first["stdout"] == EXPECTED, f"after {event}: {first}\n{state_of(stack, lab['kernel']['id'], log)}"
        assert NOTICE in first["stderr"] and "saved when the container stopped" in first["stderr"], \
            f"{first}\n{state_of(stack, lab['kernel']['id'], log)}"
        if event == "restart":
            assert all(name in first["stderr"] for name in NOT_RESTORED), first["stderr"]
        else:  # those never came back, so they are not in the kernel to be saved again
            assert "restored 10 of 10 variables." in first["stderr"], first["stderr"]
        assert again["stderr"] == "", f"the notice should come once: {again}"
        assert again["stdout"] == "print True\n", f"history and execution count go on: {again}"
        with KernelConnection(stack.base_url, token, code["kernel"]["id"]) as kernel:
            out = kernel.execute("print(y)")
        assert out["stdout"] == "5\n" and "restored 1 of 1 variables" in out["stderr"], out
    listing = stack.exec("notebookctl", "kernels").stdout
    assert "restored" in listing and "a/train.ipynb" in listing, listing


def test_a_crash_loses_at_most_the_last_cell(make_stack):
    """kill -9 of the container's init (Docker restarts it): what cells that ended had checkpointed comes back,
    and a checkpoint killed midway leaves the one before it loadable."""
    if os.getuid() != 0:
        pytest.skip("needs root to kill the container's init from the host")
    stack: Stack = make_stack()
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    kernel_id = lab_session(stack, token, "crash.ipynb")["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        now = container_time(stack)
        assert kernel.execute("x = 1\nrows = [dict(i=i) for i in range(1000)]")["error"] is None
        wait_checkpoint(stack, kernel_id, now)
        # The next checkpoint is held while it pickles (its own __reduce__ waits), then the container dies.
        stack.exec("touch", "/tmp/hold")
        assert kernel.execute("""
class Slow:
    def __reduce__(self):
        import os, time
        open("/tmp/pickling", "w").close()
        while os.path.exists("/tmp/hold"):
            time.sleep(0.05)
        return (int, (1,))
x = 2
slow = Slow()""")["error"] is None
    wait_for(lambda: stack.exec("test", "-e", "/tmp/pickling", check=False).returncode == 0, 30,
             "the checkpoint to be under way")
    restarts = stack.inspect()["RestartCount"]
    os.kill(stack.inspect()["State"]["Pid"], signal.SIGKILL)
    wait_for(lambda: stack.inspect()["RestartCount"] > restarts, 120, "Docker to restart the container")
    stack.wait_healthy()
    stack.wait_api(token)
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        out = kernel.execute("print(x, len(rows), rows[999], 'slow' in globals())")
    assert out["stdout"] == "1 1000 {'i': 999} False\n", out
    assert "the checkpoint after the last cell that ended" in out["stderr"], out


def record_of(stack: Stack, kernel_id: str) -> dict:
    return json.loads(stack.exec("cat", f"/var/lib/persistent-notebooks/kernels/{kernel_id}.json").stdout)


def test_ten_kernels_one_unsaveable_one_damaged(make_stack):
    """Ten kernels through a restart: a variable that cannot be saved is named, a damaged snapshot starts its
    kernel empty under its id saying so, a tampered variable is refused; every other kernel comes back. An eleventh
    that dies while it loads its variables (its buffer's file a FIFO that holds the load) is started again by
    Jupyter's restarter, and loads them then."""
    stack: Stack = make_stack()
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    kernels = [lab_session(stack, token, f"k{i}.ipynb")["kernel"]["id"] for i in range(10)]
    for i, kernel_id in enumerate(kernels):
        code = f"v = {i}\nw = 'kept {i}'" + ("\nimport sys\nframe = sys._getframe()" if i == 3 else "")
        with KernelConnection(stack.base_url, token, kernel_id) as kernel:
            assert kernel.execute(code)["error"] is None
    held = lab_session(stack, token, "held.ipynb")["kernel"]["id"]
    with KernelConnection(stack.base_url, token, held) as kernel:
        assert kernel.execute("held = bytearray(range(256)) * 8192")["error"] is None  # 2 MiB: a file of its own
    stack.compose("stop", timeout=180)
    volume = json.loads(subprocess.run(["docker", "volume", "inspect", f"{stack.project}_state"],
                                       capture_output=True, text=True, check=True).stdout)[0]["Mountpoint"]
    held_dir = Path(volume) / "kernel-state" / held
    manifest = json.loads(json.loads((held_dir / "manifest.json").read_text())["manifest"])
    digest = next(e["buffers"][0][0] for e in manifest["entries"] if e["name"] == "held")
    fifo = held_dir / f"c-{digest}"
    content, owner = fifo.read_bytes(), fifo.stat()
    fifo.unlink()
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, owner.st_uid, owner.st_gid)
    damaged = Path(volume) / "kernel-state" / kernels[7] / "manifest.json"
    damaged.write_text(damaged.read_text()[:40])
    tampered = Path(volume) / "kernel-state" / kernels[5]
    manifest = json.loads(json.loads((tampered / "manifest.json").read_text())["manifest"])
    stream = next(e["stream"] for e in manifest["entries"] if e["name"] == "w")
    (tampered / f"c-{stream}").write_bytes(b"cos\nsystem\n(S'touch /tmp/pwned'\ntR.")
    stack.compose("start", timeout=180)
    stack.wait_healthy()
    stack.wait_api(token)
    assert {k["id"] for k in api(stack.base_url, token, "/api/kernels")} == {*kernels, held}
    # The held kernel dies before its variables are loaded; the one its restarter starts loads them.
    first = record_of(stack, held)
    assert first.get("restored_at"), first
    stack.exec("kill", "-KILL", str(first["pid"]))
    wait_for(lambda: record_of(stack, held)["pid"] != first["pid"], 60, "Jupyter's restarter to start it again")
    fd = wait_for(lambda: os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), 60,
                  "the kernel started again to read its saved buffer (its saved state kept)")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as writer:
        writer.write(content)
    with KernelConnection(stack.base_url, token, held) as kernel:
        out = kernel.execute("print(len(held), held[257])")
    assert out["stdout"] == "2097152 1\n" and NOTICE in out["stderr"], out
    for i, kernel_id in enumerate(kernels):
        with KernelConnection(stack.base_url, token, kernel_id) as kernel:
            out = kernel.execute("print(globals().get('v'), globals().get('w'))")
        if i == 7:
            assert out["stdout"] == "None None\n" and "could not be loaded" in out["stderr"], out
        elif i == 5:
            assert out["stdout"] == "5 None\n" and "w (could not be loaded" in out["stderr"], out
        else:
            assert out["stdout"] == f"{i} kept {i}\n", f"kernel {i}: {out}"
        if i == 3:
            assert "frame (cannot be saved" in out["stderr"], out
    assert stack.exec("test", "-e", "/tmp/pwned", check=False).returncode != 0, "a tampered pickle was loaded"


def test_the_size_limit_leaves_out_the_biggest(make_stack, tmp_path):
    """Past KERNEL_STATE_LIMIT the biggest variable is left out and named; the rest comes back."""
    stack: Stack = make_stack(KERNEL_STATE_LIMIT="4m")
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    kernel_id = lab_session(stack, token, "limit.ipynb")["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        assert kernel.execute("small = list(range(100))\nhuge = bytearray(6 << 20)")["error"] is None
    up_again(stack, token, "restart", tmp_path / "restart.log")
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        out = kernel.execute("print(len(small), 'huge' in globals())")
    assert out["stdout"] == "100 False\n", out
    assert "huge (6 MiB: over the kernel's limit, KERNEL_STATE_LIMIT=4 MiB)" in out["stderr"], out


def test_below_the_free_space_floor_checkpoints_pause_and_say_so(make_stack):
    """With less free space than KERNEL_STATE_FREE_FLOOR nothing is written, and the next cell says so."""
    stack: Stack = make_stack(KERNEL_STATE_FREE_FLOOR="1000t")
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    kernel_id = lab_session(stack, token, "floor.ipynb")["kernel"]["id"]
    with KernelConnection(stack.base_url, token, kernel_id) as kernel:
        assert kernel.execute("a = 1")["error"] is None
        wait_for(lambda: checkpoint(stack, kernel_id).get("paused"), 30, "the checkpoint to pause")
        out = wait_for(lambda: (lambda o: o if o["stderr"] else None)(kernel.execute("b = 2")), 30,
                       "a cell that says checkpoints are paused")
    assert "checkpoints of this kernel are paused" in out["stderr"] and "KERNEL_STATE_FREE_FLOOR" in out["stderr"], out
    files = stack.exec("ls", "-A", f"{STATE}/{kernel_id}").stdout.split()
    assert not [f for f in files if f.startswith("c-") or f == "manifest.json" or f.endswith(".tmp")], files
    assert "paused (disk)" in stack.exec("notebookctl", "kernels").stdout
