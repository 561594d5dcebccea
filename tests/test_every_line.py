"""Every line, every client: bursts coalesced not dropped, a busy kernel reachable at once after a crash.

Each test runs with Jupyter's default websocket protocol (JSON, as VSCode's extension speaks it) and
with the binary `v1.kernel.websocket.jupyter.org` subprotocol that JupyterLab negotiates.
"""

from __future__ import annotations

import pytest
from kernelclient import V1, KernelConnection, across_a_drop, api
from stack import SUPERVISORCTL, Stack, wait_for

BURST = 10_000
BURST_CELL = f"""
import time
time.sleep({{delay}})
for i in range({BURST}):
    print(i, flush=True)  # one message each
"""
LONG_CELL = """
import time
for i in range(1500):
    print(i, flush=True)
    time.sleep(0.2)
"""

protocols = pytest.mark.parametrize("protocol", [None, V1], ids=["json", "v1"])


def numbers(text: str) -> list[int]:
    return [int(word) for word in text.split() if word.isdigit()]


def streams(out: dict) -> int:
    return sum(1 for m in out["messages"] if m["msg_type"] == "stream")


@protocols
def test_a_burst_reaches_a_connected_client_whole(stack: Stack, kernel: str, protocol):
    """10,000 one-message lines should reach a connected client all, in order, in far fewer messages."""
    with KernelConnection(stack.base_url, stack.token(), kernel, timeout=180, protocol=protocol) as client:
        out = client.follow(client.submit(BURST_CELL.format(delay=0)))
    got = numbers(out["stdout"])
    assert "rate exceeded" not in out["stdout"] + str(out["messages"]), "Jupyter's rate limit dropped output"
    assert got == list(range(BURST)), f"{BURST - len(set(got))} of {BURST} lines missing or out of order"
    assert streams(out) <= BURST // 10, f"{streams(out)} stream messages for {BURST} lines: not coalesced"


INTERLEAVED_CELL = """
import sys
for i in range(10000):
    print(i, flush=True)
    print(-i, file=sys.stderr, flush=True)
"""


def test_stdout_and_stderr_alternating_reach_a_connected_client_whole(stack: Stack, kernel: str):
    """10,000 lines each of stdout and stderr, alternating, every one flushed (20,000 messages from the kernel):
    every character should reach a connected client, each stream in its order, nothing dropped by the rate limit."""
    with KernelConnection(stack.base_url, stack.token(), kernel, timeout=180) as client:
        out = client.follow(client.submit(INTERLEAVED_CELL))
    text = {"stdout": "", "stderr": ""}
    for msg in out["messages"]:
        if msg["msg_type"] == "stream":
            text[msg["content"]["name"]] += msg["content"]["text"]
    assert "rate exceeded" not in str(out["messages"]), "Jupyter's rate limit dropped output"
    assert text["stdout"].split() == [str(i) for i in range(10000)], "stdout incomplete or out of order"
    assert text["stderr"].split() == [str(-i) for i in range(10000)], "stderr incomplete or out of order"


def test_a_flood_of_bytes_reaches_a_connected_client_whole(stack: Stack, kernel: str):
    """Output far past Jupyter's 1 MB/s data-rate limit should reach a connected client whole."""
    with KernelConnection(stack.base_url, stack.token(), kernel, timeout=180) as client:
        out = client.follow(client.submit("for i in range(16):\n    print(str(i % 10) * (1 << 20))"))
    assert "rate exceeded" not in out["stdout"], "Jupyter's data-rate limit dropped output"
    assert out["stdout"] == "".join(str(i % 10) * (1 << 20) + "\n" for i in range(16)), \
        f"got {len(out['stdout'])} of {16 * ((1 << 20) + 1)} characters"


TIGHT_LOOP = 50 << 20  # characters printed as fast as Python can


def test_a_tight_print_loop_sends_bounded_messages(stack: Stack, kernel: str):
    """A loop writing 50 MB flat out should reach a connected client whole, in messages of about 1 MiB (the
    kernel's bound; ipykernel alone sends what 0.2 s of printing gathered: tens of MB in one message)."""
    code = f"import sys\nline = 'z' * 99 + '\\n'\nfor i in range({TIGHT_LOOP // 100}):\n    sys.stdout.write(line)"
    with KernelConnection(stack.base_url, stack.token(), kernel, timeout=180) as client:
        out = client.follow(client.submit(code))
    sizes = [len(m["content"]["text"]) for m in out["messages"] if m["msg_type"] == "stream"]
    assert sum(sizes) == TIGHT_LOOP and out["stdout"] == ("z" * 99 + "\n") * (TIGHT_LOOP // 100), \
        f"{sum(sizes)} of {TIGHT_LOOP} characters arrived"
    # (Jupyter's coalescing may join messages up to 1 MiB before sending: two bounded messages at most.)
    assert max(sizes) <= (2 << 20) + 100, f"a stream message of {max(sizes)} characters: not bounded"


@protocols
def test_a_burst_while_away_is_kept_whole(stack: Stack, kernel: str, protocol):
    """10,000 lines printed with no client should all reach the next one, coalesced into a few messages."""
    token = stack.token()
    with KernelConnection(stack.base_url, token, kernel, protocol=protocol) as first:
        msg_id = first.submit(BURST_CELL.format(delay=1))
        started = first.follow(msg_id, seconds=0.5)
    assert not numbers(started["stdout"]), "the burst should begin after the client dropped"
    stack.wait_kernel_idle(kernel, 120)
    with KernelConnection(stack.base_url, token, kernel, timeout=120, protocol=protocol) as later:
        out = later.follow(msg_id)
    got = numbers(out["stdout"])
    assert got == list(range(BURST)), f"{BURST - len(set(got))} of {BURST} lines missing or out of order"
    assert streams(out) <= 20, f"the replay took {streams(out)} stream messages: not coalesced"


@protocols
def test_lines_unread_at_a_drop_reach_the_next_client(stack: Stack, kernel: str, protocol):
    """Lines sent to a client that stopped reading before it dropped should reach the next client."""
    token = stack.token()
    a = KernelConnection(stack.base_url, token, kernel, protocol=protocol)
    msg_id = a.submit("import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(0.1)")
    seen = a.follow(msg_id, seconds=1.5)
    # A stalled client (a laptop going to sleep): still connected, reading nothing, then gone. What the
    # server wrote to it meanwhile was never read.
    wait_for(lambda: stack.keeper_status()[kernel]["kept_messages"] >= 5, 20,
             "output to pile up while the client reads nothing", interval=0.1)
    a.close()
    with KernelConnection(stack.base_url, token, kernel, protocol=protocol) as b:
        later = b.follow(msg_id)
    got = across_a_drop(numbers(seen["stdout"]), numbers(later["stdout"]))
    assert got == list(range(60)), f"first client {numbers(seen['stdout'])}, next {numbers(later['stdout'])}"


@protocols
def test_a_busy_kernel_is_reachable_at_once_after_a_crash(stack: Stack, kernel: str, protocol):
    """After kill -9 of Jupyter, a kernel busy in a long cell should connect at once, live, and obey interrupt."""
    token = stack.token()
    with KernelConnection(stack.base_url, token, kernel, protocol=protocol) as a:
        assert a.execute("kept = 6 * 7")["error"] is None
        msg_id = a.submit(LONG_CELL)  # 300 s
        assert numbers(a.follow(msg_id, seconds=1)["stdout"]), "the long cell should be printing"
    stack.kill_jupyter()
    stack.wait_api(token, 60)
    # Jupyter's own connect waits for a kernel_info reply that a busy kernel sends after its cell
    # (here minutes away): the websocket must open well within this timeout instead.
    with KernelConnection(stack.base_url, token, kernel, timeout=20, protocol=protocol) as b:
        assert api(stack.base_url, token, f"/api/kernels/{kernel}")["execution_state"] == "busy"
        b.follow(msg_id, seconds=1)  # what was kept while nobody was connected
        live = b.follow(msg_id, seconds=1.5)
        assert numbers(live["stdout"]), f"no live output from the running cell: {live['messages'][-3:]}"
        api(stack.base_url, token, f"/api/kernels/{kernel}/interrupt", "POST")
        end = b.follow(msg_id, seconds=15)
        errors = [m["content"]["ename"] for m in end["messages"] if m["msg_type"] == "error"]
        assert errors == ["KeyboardInterrupt"] and end["idle"], f"interrupt did not end the cell: {errors}"
        again = b.execute("print(kept)")
        assert again["stdout"] == "42\n", f"not the same kernel: {again}"


STALL_LINES = 20_000
STALL_CELL = f"""
import os, time
while not os.path.exists({{flag!r}}):
    time.sleep(0.05)
for i in range({STALL_LINES}):
    print(i, flush=True)  # one message each, about 12 MB in all: more than the sockets' buffers hold
"""


def test_a_stalled_jupyter_loses_no_line_printed_meanwhile(stack: Stack, kernel: str):
    """Jupyter stopped (SIGSTOP, as a loaded machine or a long GC pause stalls it) while a cell prints 20,000
    one-message lines: its subscription to the kernel falls behind by more than the sockets hold, and the
    kernel's publisher queues the rest (ZeroMQ's default would drop past 1,000 messages, silently). Every line
    should reach the connected client once Jupyter goes on."""
    flag = f"/tmp/go-{kernel}"
    jupyter = stack.program_pid("jupyter")
    # supervisord (its watchdog thread) is paused too: on a loaded machine the stall may outlast the watchdog's
    # HANG_AFTER, and a Jupyter it healed would end the very connection this test follows.
    supervisord = int(stack.exec(*SUPERVISORCTL, "pid").stdout)
    with KernelConnection(stack.base_url, stack.token(), kernel, timeout=90) as client:  # (a dropped idle: no end)
        msg_id = client.submit(STALL_CELL.format(flag=flag))
        stack.wait_kernel_state(kernel, "busy", 30, msg_id)
        stack.exec("kill", "-STOP", str(supervisord), str(jupyter))
        try:
            stack.exec("touch", flag)
            stack.wait_kernel_idle(kernel, 60, msg_id)  # the keeper, a subscriber of its own, saw the cell end
        finally:
            stack.exec("kill", "-CONT", str(jupyter), str(supervisord))
        out = client.follow(msg_id)
    got = numbers(out["stdout"])
    assert got == list(range(STALL_LINES)), \
        f"{STALL_LINES - len(set(got))} of {STALL_LINES} lines lost while Jupyter was stalled"
