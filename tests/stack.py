"""A compose stack of this repository under its own project name, driven for real (tests, benchmark).

Every wait polls a condition with a deadline and fails with a message that says what was seen.
`python tests/stack.py build|remove` builds or removes the run's test image (scripts/test builds it while the rest of
its set-up goes on).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "compose.yaml"
SERVICE = "notebooks"
SUPERVISORCTL = ["supervisorctl", "-c", "/etc/persistent-notebooks/supervisord.conf"]
HEALTHCHECK = "/usr/local/lib/persistent-notebooks/healthcheck"  # what Docker's healthcheck runs
# Programs supervisord starts on demand (not with the container): STOPPED or EXITED is their rest.
sys.path.insert(0, str(REPO / "container"))
from persistent_notebooks.programs import (  # noqa: E402
    ON_DEMAND,
    SUPERVISOR_SOCKET,
    WHEN_IDLE,  # noqa: F401  (for tests)
)

# The variables of .env (settings.SETTINGS declares them); a stack gets exactly the ones it is given (no user .env).
from persistent_notebooks.settings import SETTINGS  # noqa: E402

STACK_VARIABLES = tuple(setting.name for setting in SETTINGS)

# supervisord's process table from its XML-RPC socket, asked by the container's python3 with nothing but `socket`
# imported (a fraction of supervisorctl's start-up, and the tests poll the table hundreds of times a run); the reply
# is read here. argv[1]: the socket, argv[2]: the call.
PROCESS_TABLE_CALL = r"""
import socket, sys
body = sys.argv[2].encode()
with socket.socket(socket.AF_UNIX) as server:
    server.connect(sys.argv[1])
    server.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    reply = b"".join(iter(lambda: server.recv(65536), b""))
status, _, rest = reply.partition(b"\r\n")
if b" 200 " not in status:
    sys.exit(status.decode())
sys.stdout.write(rest.partition(b"\r\n\r\n")[2].decode())
"""


@dataclass(frozen=True)
class Program:
    """One program of supervisord's process table: its state, pid (0 when not running), seconds since its start."""
    state: str
    pid: int
    uptime: float


# One id for the run, the same in every pytest process (workers, and scripts/test's phases: they inherit it).
RUN_ID = os.environ.setdefault("PNTEST_RUN_ID", uuid.uuid4().hex[:8])
TEST_IMAGE = f"persistent-notebooks:test-{RUN_ID}"
# The notebook user's uid in the tests: the caller's own, or (as root, e.g. in CI) a plain user's.
TEST_UID = os.getuid() or 1000
TEST_GID = os.getgid() or 1000


_docker: docker.DockerClient | None = None


def docker_client() -> docker.DockerClient:
    """The Docker SDK client used for inspection (the API version is negotiated with the engine)."""
    global _docker
    if _docker is None:
        _docker = docker.from_env()
    return _docker


def owned_folder(path: Path, uid: int, gid: int) -> Path:
    """A folder for a workspace, owned by the notebook user's ids (chown needs root; else it is ours)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(path, uid, gid)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float | None = None):
    """Poll condition() until it returns a truthy value; fail after timeout saying what was awaited. Every `interval`
    seconds if given (a time measured); else from 0.1 s, half as often again after each miss, up to every 0.5 s: most
    conditions cost a `docker exec` and a Python in the container, and polled every 0.1 s through a long wait they
    kept a core busy."""
    deadline = time.monotonic() + timeout
    pause = 0.1 if interval is None else interval
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the condition is not met yet; report the last error
            last_error = exc
        time.sleep(pause)
        if interval is None:
            pause = min(pause * 1.5, 0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def http_get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    headers = {"Authorization": f"token {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Stack:
    """One compose project of compose.yaml: its own name, port, workspace, image tag and volumes."""

    def __init__(self, workspace: Path, image: str, env_file: Path, override: Path | None = None,
                 **variables: str) -> None:
        self.override = override  # an extra compose file, as a user's compose.override.yaml would be
        self.compose_file = COMPOSE_FILE  # another checkout's copy, for tests of the default workspace
        self.project = f"pntest-{uuid.uuid4().hex[:10]}"
        self.port_chosen = "NOTEBOOK_PORT" not in variables  # a free port of our choosing
        self.port = int(variables.pop("NOTEBOOK_PORT", free_port()))
        self.workspace = workspace
        self.env_file = env_file
        self.variables = {
            "NOTEBOOK_PORT": str(self.port),
            "WORKSPACE": str(workspace),
            "NOTEBOOK_IMAGE": image,
            "TMUX_SESSION": "pytest-session",
            **variables,
        }

    # --- compose -----------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
        env.update(self.variables)
        return env

    def command(self, *args: str) -> list[str]:
        files = [self.compose_file, *([self.override] if self.override else [])]
        return ["docker", "compose", "--env-file", str(self.env_file),
                *[arg for f in files for arg in ("-f", str(f))], "-p", self.project, *args]

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*args), capture_output=True, text=True,
                                env=self.environment(), timeout=timeout)
        if check:
            assert result.returncode == 0, (
                f"`docker compose {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
        return result

    def up(self, check: bool = True) -> subprocess.CompletedProcess:
        for _ in range(3):
            result = self.compose("up", "-d", check=False)
            taken = "already allocated" in result.stderr or "address already in use" in result.stderr
            if not (taken and self.port_chosen):
                break
            # Another process took the free port between free_port() and compose binding it: take another.
            self.compose("down", "--volumes", check=False)
            self.port = free_port()
            self.variables["NOTEBOOK_PORT"] = str(self.port)
        if check:
            assert result.returncode == 0, f"`docker compose up -d` failed ({result.returncode}):\n{result.stderr}"
        return result

    def down(self) -> None:
        """Remove the project's containers, networks and volumes (never the shared test image)."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", SERVICE, check=False).stdout

    def container_id(self) -> str:
        """The id of the service's container now (a new one after a recreation)."""
        cid = self.compose("ps", "-a", "-q", SERVICE).stdout.strip()
        assert cid, f"no container in project {self.project}"
        return cid

    @property
    def container(self) -> str:
        """The service's container by the name Compose gives it, the same across recreations: no `docker compose`
        run (a Compose CLI start, the file read, its queries) for each exec or inspect while a test polls."""
        return f"{self.project}-{SERVICE}-1"

    def inspect(self) -> dict:
        return docker_client().containers.get(self.container).attrs

    def exec(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", "exec", self.container, *args], capture_output=True,
                                text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, (
                f"`{' '.join(args)}` in the container failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}")
        return result

    # --- state -------------------------------------------------------------------------------

    def health(self) -> str:
        state = self.inspect()["State"]
        return (state.get("Health") or {}).get("Status", state["Status"])

    def check_health(self) -> tuple[bool, str]:
        """Docker's healthcheck, run now: (healthy, what it says). Docker runs it every 10 s only."""
        result = self.exec(HEALTHCHECK, check=False)
        return result.returncode == 0, result.stdout.strip()

    def wait_healthy(self, timeout: float = 120, docker: bool = False) -> None:
        """Wait until Docker says healthy or (docker=False) its healthcheck passes now: Docker, which runs it
        every 10 s, will say so at its next check."""
        def healthy():
            status = self.health()
            if status == "unhealthy":
                raise AssertionError(f"container turned unhealthy:\n{self.logs()[-3000:]}")
            if status == "healthy" or docker or status != "starting":
                return status == "healthy"
            # Run the healthcheck (a `docker exec`, costly while the container starts) only once
            # Jupyter answers at all.
            try:
                http_get(f"{self.base_url}/api/status", timeout=1)
            except OSError:
                return False
            return self.check_health()[0]
        try:
            wait_for(healthy, timeout, f"{self.project} to be healthy")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlogs:\n{self.logs()[-3000:]}") from None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        """The server's token (just after `up`, once the container's start has written it)."""
        def written():
            result = self.exec("notebookctl", "token", check=False)
            assert "No token yet" in result.stderr or result.returncode == 0, result.stderr
            return result.stdout.strip()
        return wait_for(written, 30, "the container's start to write the token")

    def run_script(self, name: str, *args: str) -> subprocess.CompletedProcess:
        """Run a host helper from scripts/ on this stack, as a user would (no terminal)."""
        return subprocess.run([sys.executable, str(REPO / "scripts" / name), "-p", self.project, *args],
                              capture_output=True, text=True, env=self.environment(), timeout=120,
                              stdin=subprocess.DEVNULL)

    def url(self) -> str:
        """What scripts/url prints for this stack (the user's own command, run on the host)."""
        result = self.run_script("url")
        assert result.returncode == 0, f"scripts/url failed: {result.stderr}"
        return result.stdout.strip()

    def api_status(self, token: str | None) -> int:
        return http_get(f"{self.base_url}/api/status", token)[0]

    def wait_api(self, token: str, timeout: float = 60) -> None:
        wait_for(lambda: self.api_status(token) == 200, timeout, f"{self.base_url}/api/status to answer 200")

    def keeper_status(self) -> dict:
        """The kernel keeper's view: per kernel, what is kept for the next client, and its state."""
        result = self.exec("/opt/venv/bin/python", "-m", "persistent_notebooks.server.keeperclient")
        return json.loads(result.stdout)["kernels"]

    def wait_kernel_idle(self, kernel_id: str, timeout: float, msg_id: str | None = None) -> None:
        """Wait until the kernel is idle as the keeper sees it (no client needed); with msg_id, until that
        cell's own idle status has reached the keeper (a keeper behind a flood may still say idle of the
        cell before)."""
        self.wait_kernel_state(kernel_id, "idle", timeout, msg_id)

    def wait_kernel_state(self, kernel_id: str, state: str, timeout: float, msg_id: str | None = None) -> None:
        """Wait until the keeper's last status of the kernel is `state` (with msg_id: that cell's own)."""
        seen: dict = {}

        def reached() -> bool:
            seen.update(self.keeper_status()[kernel_id])
            return seen["execution_state"] == state and (msg_id is None or seen["state_of"] == msg_id)
        what = f"cell {msg_id}" if msg_id else f"kernel {kernel_id}"
        try:
            wait_for(reached, timeout, f"{what} to be {state} (as the keeper sees it)", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the keeper's last status of the kernel: {seen}") from None

    def process_table(self) -> dict[str, Program]:
        """supervisord's programs by name (as supervisorctl names them); empty while supervisord does not answer."""
        call = xmlrpc.client.dumps((), "supervisor.getAllProcessInfo")
        result = self.exec("python3", "-I", "-S", "-c", PROCESS_TABLE_CALL, SUPERVISOR_SOCKET, call, check=False)
        try:
            infos = xmlrpc.client.loads(result.stdout)[0][0] if result.returncode == 0 else []
        except (xmlrpc.client.Fault, xmlrpc.client.ResponseError):  # supervisord shutting down, say
            infos = []
        return {(info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"):
                Program(info["statename"], info["pid"],
                        info["now"] - info["start"] if info["statename"] == "RUNNING" else 0)
                for info in infos}

    def programs(self) -> dict[str, str]:
        """supervisord's state of each program."""
        return {name: program.state for name, program in self.process_table().items()}

    def settled(self, past: float = 4) -> bool:
        """Every program, but those started on demand, RUNNING for `past` seconds (beyond every startsecs,
        so a kill now is a crash, not a failed start)."""
        table = [program for name, program in self.process_table().items() if name not in ON_DEMAND]
        return bool(table) and all(p.state == "RUNNING" and p.uptime >= past for p in table)

    def program_pid(self, program: str) -> int:
        """The program's pid, 0 when it does not run (or supervisord does not answer)."""
        found = self.process_table().get(program)
        return found.pid if found else 0

    def kill_jupyter(self, how: str = "kill -9") -> None:
        """End the Jupyter server (kill -9, or supervisorctl restart) and wait for supervisord's new one."""
        before = self.program_pid("jupyter")
        if how == "kill -9":
            self.exec("kill", "-KILL", str(before))
        else:
            self.exec(*SUPERVISORCTL, "restart", "jupyter", timeout=60)
        wait_for(lambda: self.program_pid("jupyter") not in (0, before), 30, "a new Jupyter process")

    def rss_kib(self, pid: int) -> int:
        status = self.exec("cat", f"/proc/{pid}/status").stdout
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def session_exists(self, name: str | None = None) -> bool:
        name = name or self.variables["TMUX_SESSION"]
        return self.exec("tmux", "-N", "has-session", "-t", f"={name}", check=False).returncode == 0


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_test_image() -> None:
    """Build TEST_IMAGE from this checkout for TEST_UID:TEST_GID, given no settings but those (never a user's .env)."""
    with tempfile.TemporaryDirectory(prefix="pntest-build-") as folder:
        env_file = Path(folder) / "empty.env"
        env_file.write_text("")
        builder = Stack(Path(folder) / "workspace", TEST_IMAGE, env_file,
                        HOST_UID=str(TEST_UID), HOST_GID=str(TEST_GID))
        builder.compose("build", timeout=1800)


def remove_test_image() -> None:
    """Remove TEST_IMAGE (by its builder, once the run is done with it)."""
    subprocess.run(["docker", "image", "rm", "--force", TEST_IMAGE], capture_output=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["build"]:
        began = time.monotonic()
        build_test_image()
        print(f"built {TEST_IMAGE} in {time.monotonic() - began:.0f} s")
    elif sys.argv[1:] == ["remove"]:
        remove_test_image()
    else:
        sys.exit("usage: python tests/stack.py build|remove  (the image of the run PNTEST_RUN_ID names)")
