"""The promise: a kernel outlives its client, and a new client finds it with its state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kernelclient import KernelConnection, list_kernels, shutdown_kernel
from stack import Stack, wait_for

CLIENT = [sys.executable, str(Path(__file__).with_name("kernelclient.py"))]

SETUP = """
import threading, time
answer = 41 + 1
ticks = 0
def _loop():
    global ticks
    while True:
        ticks += 1
        time.sleep(0.05)
threading.Thread(target=_loop, daemon=True).start()
time.sleep(0.3)
print(ticks)
"""


def client(stack: Stack, *args: str) -> dict:
    """Run kernelclient.py as a separate process, as a separate VSCode window would be."""
    result = subprocess.run([*CLIENT, stack.base_url, stack.token(), *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"client failed: {result.stderr}\nserver log:\n{stack.logs()[-4000:]}"
    return json.loads(result.stdout)


def test_kernel_state_and_loop_survive_the_client(stack: Stack):
    """Kernel should keep its variables and running loop after client A exits; client B finds them."""
    a = client(stack, "start", SETUP)
    assert a["error"] is None, a["error"]
    ticks_when_a_left = int(a["stdout"])
    kernel_id = a["kernel_id"]
    token = stack.token()
    try:
        # Nobody is connected now; the kernel is still listed and its loop goes on.
        wait_for(lambda: any(k["id"] == kernel_id and k["connections"] == 0
                             for k in list_kernels(stack.base_url, token)),
                 30, "the kernel to be listed with no connection")
        b = client(stack, "run", kernel_id, "print(answer, ticks)")
        assert b["error"] is None, b["error"]
        assert b["session"] != a["session"], "client B must use a new session id"
        answer, ticks = map(int, b["stdout"].split())
        assert answer == 42, f"the variable is gone: {b}"
        assert ticks > ticks_when_a_left, f"the loop stopped while nobody was connected ({ticks})"
        # And once more from this process, later: the loop still runs.
        with KernelConnection(stack.base_url, token, kernel_id) as c:
            later = int(wait_for(lambda: (t := int(c.execute("print(ticks)")["stdout"])) > ticks and t,
                                 30, "the loop to tick on"))
        assert later > ticks
    finally:
        shutdown_kernel(stack.base_url, token, kernel_id)
