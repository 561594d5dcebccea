"""Kernels that outlive the Jupyter server, and a server that adopts them again under their old ids.

- PersistentProvisioner (the default kernel provisioner, entry point `persistent-local-provisioner`)
  launches each kernel independent of the server (its own session, no parent poller), raises its
  oom_score_adj so that the OOM killer takes a kernel before anything else, and keeps a record of
  it in the state volume: kernel name, connection file, pid, process group, start time, launch
  arguments. A shutdown ends the kernel's whole process group and removes the record.
- KeptKernelManager never deletes a running kernel's connection file when it is collected.
- PersistentMappingKernelManager adopts every recorded kernel that still runs when the server
  starts (crash, kill -9, supervisorctl restart), before the server answers any request, so the
  sessions (kept in the state volume) find their kernels; starts again, under its id, every kernel
  that the container's stop or crash ended, which loads its saved variables (kernelstate) before it
  answers; and leaves the kernels running when the server stops. It keeps no output of its own for
  dropped clients: the kernel keeper does, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import zmq
from jupyter_client.connect import LocalPortCache, write_connection_file
from jupyter_client.launcher import launch_kernel
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager, ServerKernelManager
from traitlets import default

from .. import ipc, kernelstate, paths, programs, settings
from ..state import kernels as records
from ..state.kernels import KernelRecord
from ..state.runs import all_runs
from .connection import CLIENTS
from .keeperclient import KEEPER, status_sync
from .sessions import repair_sessions_db

RESTORE_RETRIES = 2  # times Jupyter's restarter loads a kernel's saved variables again when it died loading them
# Environment a kernel must not inherit from the server.
SCRUBBED_ENV = ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "JPY_PARENT_PID")


def _kernel_output():
    """Kernels write their own stdout/stderr (crash messages) to the container's log, which outlives
    any server. /proc/1 is tini, running as the notebook user."""
    try:
        return open("/proc/1/fd/1", "wb", buffering=0)  # noqa: SIM115 - closed after the launch
    except OSError:
        return None


def state_config(kernel_id: str, restore: bool = False) -> kernelstate.Config:
    """What a kernel is told about saving its variables (from settings: KERNEL_*)."""
    return kernelstate.Config(
        kernel_id=kernel_id, directory=str(paths.KERNEL_STATE_DIR / kernel_id),
        key_file=str(paths.KERNEL_STATE_KEY_FILE), stop_marker=str(paths.STOPPING_MARKER),
        checkpoints=settings.kernel_checkpoints(), at_stop=settings.kernel_snapshots(),
        limit=settings.kernel_state_limit(), floor=settings.kernel_state_floor(), restore=restore)


def kernel_env(record_env: dict) -> dict:
    """A kernel's environment: the server's, less what it must not inherit, plus what was added for it."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(record_env)
    # No parent poller: "1" (init) is ipykernel's value for "nobody to watch", and keeps it quiet.
    env["JPY_PARENT_PID"] = "1"
    return env


def raise_oom_score(pid: int, log) -> None:
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(paths.KERNEL_OOM_SCORE_ADJ))
    except OSError as exc:
        log.warning("could not raise the kernel's oom_score_adj: %s", exc)


class PersistentProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernels survive the server, and that can take over a running kernel."""

    start_time: int | None = None
    adopted = False
    restored_at: float | None = None  # started with its saved variables to load

    def _restore_pending(self) -> bool:
        """Started again after the container's end, and ended before its saved variables were loaded (the report
        of a restore is written first thing): the start Jupyter's restarter makes in its place loads them, up to
        RESTORE_RETRIES times (a restore that kills its kernel, e.g. out of memory, must not loop). A restart its
        user asks for starts empty, as always."""
        km = self.parent
        if not getattr(km, "restarting_itself", False) or km.restore_retries >= RESTORE_RETRIES:
            return False  # (any other kernel manager, e.g. nbclient's, never has it)
        km.restarting_itself = False
        record = records.read(self.kernel_id)
        if record is None or not record.restored_at or not settings.kernel_state_saved():
            return False
        report = kernelstate.read_json(paths.KERNEL_STATE_DIR / self.kernel_id / kernelstate.RESTORED)
        if report and report.get("at", 0) >= record.restored_at:
            return False
        km.restore_retries += 1
        return True

    async def pre_launch(self, **kwargs):
        kwargs = await super().pre_launch(**kwargs)
        env = kwargs["env"]
        for name in SCRUBBED_ENV:
            env.pop(name, None)
        env["JPY_PARENT_PID"] = "1"  # see kernel_env
        self.restored_at = time.time() if self._restore_pending() else None
        if settings.kernel_state_saved():
            env.update(state_config(self.kernel_id, restore=self.restored_at is not None).to_env())
        kwargs["independent"] = True
        return kwargs

    async def launch_kernel(self, cmd, **kwargs):
        # A new kernel, or one restarted by its user: it starts empty, and so does its saved state (but for a
        # kernel that ended before it loaded what it had saved: pre_launch).
        if self.restored_at is None:
            kernelstate.forget(paths.KERNEL_STATE_DIR / self.kernel_id)
        # The keeper runs only while kernels do: started (if need be) while the kernel starts, and
        # answering before the kernel's record is written (a new keeper reads the records it finds).
        keeper = asyncio.ensure_future(KEEPER.ensure_running())
        output = _kernel_output()
        if output is not None:
            kwargs.setdefault("stdout", output)
            kwargs.setdefault("stderr", output)
        try:
            info = await super().launch_kernel(cmd, **kwargs)
        finally:
            if output is not None:
                output.close()
        self.adopted = False
        raise_oom_score(self.pid, self.log)
        self.start_time = paths.process_start_time(self.pid)
        await keeper
        self._write_record()
        return info

    def _write_record(self) -> None:
        km = self.parent
        launch = dict(km._launch_args or {})
        env = launch.pop("env", None) or {}
        records.write(KernelRecord(
            kernel_id=self.kernel_id, kernel_name=km.kernel_name, connection_file=km.connection_file,
            pid=self.pid, pgid=self.pgid, start_time=self.start_time, instance=paths.container_instance(),
            ip=self.ip, cwd=str(launch.get("cwd") or self.cwd or ""), restored_at=self.restored_at,
            # What the server added to its own environment for this kernel (JPY_SESSION_NAME, ...).
            env={k: v for k, v in env.items()
                 if os.environ.get(k) != v and k not in SCRUBBED_ENV and k != kernelstate.ENV},
        ))
        KEEPER.send("watch", kernel_id=self.kernel_id)

    def adopt(self, record: KernelRecord) -> None:
        """Take over a kernel started by an earlier server, from its record. (Not load_provisioner_info: that
        is async, and adoption is done in the kernel manager's constructor, before the server's loop runs.)"""
        self.pid, self.pgid, self.ip = record.pid, record.pgid, record.ip
        self.start_time = record.start_time
        self.cwd = record.cwd or None
        self.connection_info = self.parent.get_connection_info()
        self.ports_cached = True  # a restart keeps the ports the clients know
        # ... and no kernel started meanwhile is handed them (cleanup returns them to jupyter_client's cache).
        LocalPortCache.instance().currently_used_ports.update(
            port for port in self.parent.ports if isinstance(port, int) and port > 0)
        self.adopted = True

    # An adopted kernel is not this server's child: it is watched by pid (and start time) and
    # signalled through its process group; tini reaps it when it exits.

    def _adopted_alive(self) -> bool:
        return self.adopted and bool(self.pid) and paths.process_start_time(self.pid) == self.start_time

    @property
    def has_process(self) -> bool:
        return self.process is not None or self._adopted_alive()

    async def poll(self):
        if self.process is not None or not self.adopted:
            return await super().poll()
        return None if self._adopted_alive() else 0

    async def wait(self):
        if self.process is not None or not self.adopted:
            return await super().wait()
        while self._adopted_alive():
            await asyncio.sleep(0.1)
        self.adopted = False
        return 0

    async def send_signal(self, signum: int) -> None:
        if self.process is not None or not self.adopted:
            return await super().send_signal(signum)
        if self._adopted_alive():
            try:
                os.killpg(self.pgid or self.pid, signum)
            except ProcessLookupError:
                pass

    async def kill(self, restart: bool = False) -> None:
        if self.process is not None or not self.adopted:
            return await super().kill(restart)
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        if self.process is not None or not self.adopted:
            return await super().terminate(restart)
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        # The kernel is gone: end whatever it started and left behind in its process group.
        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await super().cleanup(restart)
        if not restart:
            records.remove(self.kernel_id)
            kernelstate.forget(paths.KERNEL_STATE_DIR / self.kernel_id)
            KEEPER.send("forget", kernel_id=self.kernel_id)


class KeptKernelManager(ServerKernelManager):
    """A server kernel manager that leaves a running kernel's connection file alone when collected."""

    restarting_itself = False  # set by its restarter's "restart" callback; read by the provisioner's next launch
    restore_retries = 0  # starts by the restarter that loaded the kernel's saved variables again

    def __del__(self) -> None:
        self._close_control_socket()


class PersistentMappingKernelManager(AsyncMappingKernelManager):
    """Adopts the recorded kernels at start-up; leaves them running at exit; buffers nothing itself."""

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self):
        return "persistent_notebooks.server.kernels.KeptKernelManager"

    @default("buffer_offline_messages")
    def _default_buffer_offline_messages(self):
        return False  # no unbounded buffer in the server for a dropped client: the keeper keeps the output

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._relaunched: dict = {}
        # The server's IOPub subscriptions take whatever the kernel publishes, however fast: with
        # ZMQ's default of 1,000 queued messages, a burst the event loop reads slower than the kernel
        # prints would be dropped by the kernel's publisher, silently (the kernel keeper does the same).
        self.context.setsockopt(zmq.RCVHWM, 0)
        self.adopt_kernels()

    def kernel_model(self, kernel_id):
        """Jupyter's, and the kernel clients connected now (the runner asks whether a page is still there)."""
        return {**super().kernel_model(kernel_id), "clients": sorted(CLIENTS.get(kernel_id, {}))}

    def adopt_kernels(self) -> None:
        app = self.parent
        if getattr(app, "show_config", False) or getattr(app, "show_config_json", False):
            return  # `jupyter-server --show-config` starts no server: it must not touch the kernels
        repair_sessions_db()  # before any request opens it (the session manager connects on first use)
        found = records.all_records(owner=True)
        # A connection file a running kernel uses is never removed nor written over for another record
        # (a damaged or copied record may name it).
        live_files = {r.connection_file for r in found if r.alive()}
        found = [self._relaunch(record, live_files) if self._ended_by_the_container(record) else record
                 for record in found]
        if not found:
            return
        try:
            states = status_sync()["kernels"]
        except (OSError, ValueError, KeyError) as exc:
            self.log.warning("kernel keeper not reachable (%s): adopted kernels start as 'idle'", exc)
            states = {}
            if any(record.alive() for record in found):
                try:  # (the watchdog would too, within seconds)
                    programs.start(programs.KEEPER)
                except programs.ProgramError as error:
                    self.log.warning("%s", error)
        for record in found:
            kernel_id = record.kernel_id
            if not record.alive():
                self.log.info("Kernel %s ended while the server was away; dropping its record", kernel_id)
                records.remove(kernel_id)
                kernelstate.forget(paths.KERNEL_STATE_DIR / kernel_id)
                if record.connection_file not in live_files:
                    Path(record.connection_file).unlink(missing_ok=True)
                continue
            try:
                self._adopt(record, states.get(kernel_id, {}))
            except Exception:  # noqa: BLE001 - one bad record must not keep the server from starting
                self.log.exception("Could not adopt kernel %s", kernel_id)
        if self._kernels and not self._initialized_culler:
            self.initialize_culler()
        if any(record.restored_at for record in found) and any(r.resumable() for r in all_runs()):
            try:  # runs the container's end interrupted go on in their restored kernels
                programs.start(programs.RUNNER)
            except programs.ProgramError as error:
                self.log.warning("%s", error)

    def _ended_by_the_container(self, record: KernelRecord) -> bool:
        """A kernel of an earlier run of the container (restart, recreate, reboot, crash), while saving
        is on: it comes back."""
        return (record.instance not in (None, paths.container_instance()) and not record.alive()
                and settings.kernel_state_saved())

    def _relaunch(self, record: KernelRecord, live_files: set[str]) -> KernelRecord:
        """Start a kernel that the container's end stopped again, under its id, in its environment, folder
        and session, on new ports; it loads its saved variables before it answers (kernelstate). Returns
        its new record (adopted next, as any running kernel). Synchronous: a process started, no wait."""
        kernel_id = record.kernel_id
        connection_file = str(Path(record.connection_file).with_name(f"kernel-{kernel_id}.json"))
        if connection_file in live_files:
            self.log.error("Kernel %s not started again: its connection file is a running kernel's", kernel_id)
            return record
        try:
            km = self.kernel_manager_factory(parent=self, log=self.log, kernel_name=record.kernel_name,
                                             kernel_spec_manager=self.kernel_spec_manager)
            km.connection_file = connection_file
            ip = record.ip or "127.0.0.1"
            # Ports through jupyter_client's own cache, as its provisioner picks them: the kernels started
            # again together bind theirs only once they run, and must not be handed each other's.
            ports = {f"{channel}_port": LocalPortCache.instance().find_available_port(ip)
                     for channel in ("shell", "iopub", "stdin", "control", "hb")}
            write_connection_file(connection_file, ip=ip, key=str(uuid.uuid4()).encode(),
                                  kernel_name=record.kernel_name, **ports)
            km._launch_args = {}
            cmd = km.format_kernel_cmd()
            env = kernel_env(record.env)
            env.update(state_config(kernel_id, restore=True).to_env())
            output = _kernel_output()
            try:
                process = launch_kernel(cmd, env=env, cwd=record.cwd or None, independent=True,
                                        stdout=output, stderr=output)
            finally:
                if output is not None:
                    output.close()
        except Exception as exc:  # noqa: BLE001 - this kernel stays ended; the others come back
            self.log.error("Could not start kernel %s again after the container's restart: %s", kernel_id, exc)
            return record
        self._relaunched[kernel_id] = process  # reaped by subprocess when it ends
        raise_oom_score(process.pid, self.log)
        new = record.replace(connection_file=connection_file, pid=process.pid, pgid=os.getpgid(process.pid), ip=ip,
                             start_time=paths.process_start_time(process.pid), instance=paths.container_instance(),
                             restored_at=time.time())
        records.write(new)
        with contextlib.suppress(OSError, ValueError):  # a keeper already running follows it too
            ipc.request_sync(paths.KEEPER_SOCKET, {"op": "watch", "kernel_id": kernel_id}, 1.0)
        self.log.info("Kernel %s (%s) started again after the container's restart; it loads its saved "
                      "variables", kernel_id, record.kernel_name)
        return new

    def _adopt(self, record: KernelRecord, seen: dict) -> None:
        """Take over a recorded kernel; `seen` is the keeper's view of it (state, time of its last message)."""
        execution_state = seen.get("execution_state")
        kernel_id = record.kernel_id
        km = self.kernel_manager_factory(connection_file=record.connection_file, parent=self, log=self.log,
                                         kernel_name=record.kernel_name,
                                         kernel_spec_manager=self.kernel_spec_manager)
        km.load_connection_file(record.connection_file)
        km.kernel_id = kernel_id
        km._launch_args = {"cwd": record.cwd or None, "env": {**os.environ, **record.env}}
        provisioner = KernelProvisionerFactory.instance(parent=self).create_provisioner_instance(
            kernel_id, km.kernel_spec, parent=km)
        if not hasattr(provisioner, "adopt"):
            raise RuntimeError(f"the kernel's provisioner {type(provisioner).__name__} cannot adopt a kernel")
        provisioner.adopt(record)
        km.provisioner = provisioner
        km._attempted_start = True
        km.ready.set_result(None)
        km._connect_control_socket()
        km.start_restarter()
        self._kernels[kernel_id] = km
        self._kernel_connections[kernel_id] = 0
        km.execution_state = execution_state if execution_state in ("busy", "idle") else "idle"
        km.reason = ""
        self._kernel_ports[kernel_id] = km.ports
        self.start_watching_activity(kernel_id)
        # Idle time goes on counting across a crash (culling, `kernels stop --idle-for`): the keeper saw
        # the kernel's last message, as the server's own activity tracking would have. (After
        # start_watching_activity, which sets it to now.)
        last = seen.get("last_message")
        if isinstance(last, int | float) and last > 0:
            km.last_activity = datetime.fromtimestamp(last, UTC)
        self.add_restart_callback(kernel_id, lambda: self._handle_kernel_died(kernel_id), "dead")
        km.add_restart_callback(lambda: setattr(km, "restarting_itself", True), "restart")
        self.log.info("Adopted running kernel %s (%s, pid %s, %s)", kernel_id, record.kernel_name,
                      record.pid, km.execution_state)

    def _handle_kernel_died(self, kernel_id):
        super()._handle_kernel_died(kernel_id)
        records.remove(kernel_id)
        kernelstate.forget(paths.KERNEL_STATE_DIR / kernel_id)
        KEEPER.send("forget", kernel_id=kernel_id)

    # The server stops (restart, crash handling, container stop): the kernels stay. At container
    # stop the kernel keeper shuts them down, after this server is gone.
    async def _async_shutdown_all(self, now: bool = False) -> None:
        for kernel_id in list(self._kernels):
            km = self._kernels[kernel_id]
            km.stop_restarter()
            self.stop_watching_activity(kernel_id)
            km._close_control_socket()
        if self._kernels:
            self.log.info("Leaving %d kernel(s) running for the next server to adopt", len(self._kernels))

    shutdown_all = _async_shutdown_all

