"""Shared pieces of the host-side helpers in scripts/ (stdlib only: they run before any venv)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICE = "notebooks"
VENV = REPO / ".venv"
REQUIREMENTS = REPO / "tests" / "requirements.txt"


class Fail(Exception):
    """An error for the user; the message says what to do."""


def run_main(main: Callable[[], int]) -> None:
    try:
        sys.exit(main())
    except Fail as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


@functools.cache
def compose_available() -> bool:
    probe = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2")


def compose(*args: str, project: str | None = None, capture: bool = True, check: bool = True,
            env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `docker compose` on this checkout's compose.yaml (its .env applies as usual)."""
    if not compose_available():
        raise Fail("Docker Compose v2 (`docker compose`) is missing: run scripts/install-compose.")
    command = ["docker", "compose", "--project-directory", str(REPO), "-f", str(REPO / "compose.yaml")]
    if project:
        command += ["-p", project]
    result = subprocess.run([*command, *args], capture_output=capture, text=True,
                            env=env if env is not None else os.environ.copy(), timeout=timeout)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if capture else ""
        raise Fail(f"`docker compose {' '.join(args)}` failed ({result.returncode}). {detail}")
    return result


def container_id(project: str | None = None) -> str:
    cid = compose("ps", "-q", SERVICE, project=project).stdout.strip()
    if not cid:
        raise Fail("the stack is not running: start it with `docker compose up -d`.")
    return cid


def exec_in(args: Sequence[str], project: str | None = None, tty: bool = False) -> subprocess.CompletedProcess:
    flags = [] if tty else ["-T"]
    return compose("exec", *flags, SERVICE, *args, project=project, check=False, capture=not tty)


def pass_through(command: str, usage: str) -> int:
    """Run `notebookctl COMMAND ARGS...` in the stack's container, its output straight to ours."""
    args = sys.argv[1:]
    if args[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    project = None
    if args[:1] in (["-p"], ["--project"]):
        if len(args) < 2:
            raise Fail("-p needs a compose project name")
        project, args = args[1], args[2:]
    cid = container_id(project)  # a clear message when the stack is down
    args = in_workspace(args, cid)
    # A terminal where the user has one (progress bars), none for scripts and pipes.
    flags = [] if sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
    return compose("exec", *flags, SERVICE, "notebookctl", command, *args, project=project, capture=False,
                   check=False).returncode


def in_workspace(args: Sequence[str], cid: str) -> list[str]:
    """Paths as the host sees them (tab completion gives workspace/a.ipynb, or an absolute path), made
    relative to the workspace as the container takes them. Only a notebook or a file that exists here is
    taken for a path (not a run or kernel id); anything outside the workspace folder is left as given."""
    mounts = subprocess.run(["docker", "inspect", "--format", "{{json .Mounts}}", cid],
                            capture_output=True, text=True).stdout
    try:
        source = next(Path(m["Source"]).resolve() for m in json.loads(mounts) if m["Destination"] == "/workspace")
    except (ValueError, StopIteration, KeyError, TypeError):
        return list(args)
    out = []
    for arg in args:
        path = Path(arg).expanduser()
        if not arg.startswith("-") and (arg.endswith(".ipynb") or path.exists()):
            resolved = path.resolve()
            if resolved.is_relative_to(source) and resolved != source:
                arg = str(resolved.relative_to(source))
        out.append(arg)
    return out


def health(project: str | None = None) -> str:
    cid = container_id(project)
    out = subprocess.run(["docker", "inspect", "--format", "{{json .State}}", cid],
                         capture_output=True, text=True, check=True).stdout
    state = json.loads(out)
    return (state.get("Health") or {}).get("Status") or state.get("Status", "unknown")




STARTED = time.monotonic()


def step_line(message: str) -> str:
    """A step of a long command, with the minutes and seconds since the command started (where the time goes)."""
    minutes, seconds = divmod(int(time.monotonic() - STARTED), 60)
    return f"==> [{minutes}:{seconds:02d}] {message}\n"


def step(message: str) -> None:
    print(step_line(message), end="", flush=True)


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        step(f"creating {VENV}")
        made = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if made.returncode != 0:
            raise Fail(f"could not make a venv ({made.stderr.strip()}). On Debian/Ubuntu: "
                       "`sudo apt-get install python3-venv`.")
    step(f"installing {REQUIREMENTS.relative_to(REPO)}")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return python
