"""Where this project leans on a tool's internals, an upgrade of the tool that moves them fails here.

Each check runs inside the image, against the pinned versions, with the interpreter that runs the
patch. The behaviour each patch is for is tested elsewhere (named in each docstring); these say
*which* internal changed, so that an upgrade is fixed where it broke.
"""

from __future__ import annotations

import subprocess

import pytest

SUPERVISORD = """
import inspect
from supervisor import supervisord, datatypes
from supervisor.process import Subprocess
from supervisor.states import ProcessStates
go = inspect.getsource(supervisord.go)
assert "Supervisor(options)" in go, "supervisord.go() no longer builds its Supervisor by that name"
loop = inspect.getsource(supervisord.Supervisor.runforever)
assert "self.options.poller.poll(timeout)" in loop, "runforever() no longer waits in options.poller.poll(timeout)"
assert hasattr(datatypes, "RestartUnconditionally"), "datatypes.RestartUnconditionally is gone"
assert {"EXITED", "STOPPED"} <= set(vars(ProcessStates)), "ProcessStates.EXITED/STOPPED are gone"
assert "self.laststart" in inspect.getsource(Subprocess.spawn), "Subprocess.laststart is no longer set"
# ... and a signal wakes that poll(): a Python handler for SIGCHLD and SIGTERM (the wakeup pipe is written only
# for signals Python handles), and the poller watches a descriptor of ours among its own.
from supervisor.options import ServerOptions
from supervisor.poller import Poller
handled = inspect.getsource(ServerOptions.setsignals)
assert "signal.SIGCHLD, receive" in handled and "signal.SIGTERM, receive" in handled, "signals handled elsewhere"
assert "self.options.setsignals()" in inspect.getsource(supervisord.Supervisor.run)
assert callable(Poller.register_readable) and "def poll(self, timeout)" in inspect.getsource(Poller)
# The watchdog, a thread of supervisord: events, the process table, the mood.
from supervisor import events
from supervisor.process import ProcessGroupBase
from supervisor.states import SupervisorStates
assert callable(events.subscribe) and issubclass(events.ProcessStateFatalEvent, events.ProcessStateEvent)
assert "self.process = process" in inspect.getsource(events.ProcessStateEvent.__init__)
assert "self.options.mood = SupervisorStates.SHUTDOWN" in inspect.getsource(supervisord.Supervisor.handle_signal)
assert ServerOptions.mood == SupervisorStates.RUNNING and SupervisorStates.SHUTDOWN < SupervisorStates.RUNNING
assert "self.processes = {}" in inspect.getsource(ProcessGroupBase.__init__), "ProcessGroup.processes is gone"
assert "self.process_groups = {}" in inspect.getsource(supervisord.Supervisor.run), "Supervisor.process_groups is gone"
assert "self.pid = pid" in inspect.getsource(Subprocess._spawn_as_parent) and "self.state = new_state" in \
    inspect.getsource(Subprocess.change_state), "Subprocess.pid/state are kept elsewhere"
print("ok")
"""

JUPYTER_SERVER = """
import inspect
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection as C
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from tornado.websocket import WebSocketHandler
prepare = inspect.getsource(C.prepare)
assert "self.request_kernel_info()" in prepare, "prepare() no longer waits on request_kernel_info()"
assert "_finish_kernel_info" in inspect.getsource(C._handle_kernel_info_reply), "kernel info is finished elsewhere"
assert "self.kernel_manager._kernel_info_future" in inspect.getsource(C.request_kernel_info)
nudge = inspect.getsource(C.nudge)
assert '"execution_state", None) == "busy"' in nudge, "nudge() no longer skips a busy kernel"
outgoing = inspect.getsource(C.handle_outgoing_message)
assert "self._limit_rate(" in outgoing and "self._on_zmq_reply(" in outgoing and "self._on_error(" in outgoing
assert "iopub_data_rate_limit" in C.class_trait_names(), "the data-rate limit moved"
for name in ("connect", "disconnect", "subprotocol", "channels", "websocket_handler"):
    assert hasattr(C, name), f"ZMQChannelsWebsocketConnection.{name} is gone"
assert callable(getattr(WebSocketHandler, "ping")) and callable(getattr(KernelWebsocketHandler, "on_pong"))
print("ok")
"""

IPYTHON = """
import inspect
from IPython.core.interactiveshell import InteractiveShell
tee = inspect.getsource(InteractiveShell._tee)
assert "outputs_by_counter[execution_count].append(output_stream)" in tee, "IPython keeps outputs another way"
assert 'output_stream.bundle["stream"].append(data)' in tee, "IPython keeps stream text another way"
assert "self.history_manager.outputs" in tee
print("ok")
"""


def in_image(tag: str, python: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--entrypoint", python, tag, "-c", code],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("python", "code"), [
    # persistent_notebooks/supervisor: a program due to (re)start, or a signal, does not wait for poll()'s second
    # (its effect: the healing figures of scripts/benchmark; test_jupyter_restarts_after_being_killed),
    # and the watchdog runs as a thread of supervisord (test_hung_jupyter_is_healed_and_keeps_its_kernels,
    # test_fatal_program_hands_the_container_to_docker, test_health_is_the_watchdogs_report).
    ("/opt/supervisor/bin/python", SUPERVISORD),
    # persistent_notebooks/server/connection.py: kernel info asked on the control channel too,
    # coalesced output sent through Jupyter's own path, acknowledgements on pongs
    # (tests/test_every_line.py, tests/test_away.py).
    ("/opt/venv/bin/python", JUPYTER_SERVER),
    # container/ipython/bounded_output_history.py: IPython's in-memory copy of printed output bounded
    # (test_out_of_memory_takes_a_kernel_not_jupyter).
    ("/opt/venv/bin/python", IPYTHON),
], ids=["supervisord", "jupyter_server", "ipython"])
def test_patched_internals_are_where_the_patch_expects(test_image, python, code):
    """The internals each patch of ours relies on should still be there in the pinned tool."""
    result = in_image(test_image, python, code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
