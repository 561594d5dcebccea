"""Python environments as kernels.

Two sources, both found without any registration step (as nb_conda_kernels does for conda):
- environments made by `notebookctl env create NAME` (with uv) in the state volume's envs/ folder:
  kernel NAME, "Python 3.13 (NAME)";
- any venv or uv project environment named `.venv` under the workspace, up to WORKSPACE_DEPTH
  folders down: kernel venv-<folder>, "Python 3.13 (folder/.venv)".
An environment counts once it has ipykernel installed; it disappears from the list when removed.
Environments live in the state volume (or the workspace), so they outlive restarts, down/up and
image rebuilds. server/kernelspecs.py offers them to Jupyter, and so to VSCode's picker; the CLI
makes, lists and removes them (`notebookctl env`). Stdlib only.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from . import paths, settings
from .state import kernels as records

ENVS_DIR = paths.ENVS_DIR
WORKSPACE = settings.WORKSPACE
# /workspace/.venv, /workspace/a/.venv ... /workspace/a/b/c/.venv
WORKSPACE_DEPTH = 3
WORKSPACE_PREFIX = "venv-"
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages", ".git"}
MAX_ENTRIES = 2000  # per folder
# The Python of the image (the base kernel's), used unless --python says otherwise.
DEFAULT_PYTHON = "/usr/bin/python3"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
RESERVED = {"python3", "python", "base"}
SCAN_BUDGET = 30.0  # seconds one search of the workspace may take; what it did not reach is reported


class EnvError(Exception):
    """A mistake the user can fix; the message says how."""


@dataclasses.dataclass(frozen=True)
class Environment:
    """A Python environment offered as a kernel: one made with `notebookctl env`, or a .venv in the workspace."""

    kernel_name: str
    label: str  # NAME, or the workspace path of the .venv
    prefix: Path
    source: str  # "env" (notebookctl env create) or "workspace"
    python_version: str

    def kernel_dict(self) -> dict:
        return {
            "argv": [str(self.prefix / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python {self.python_version} ({self.label})",
            "language": "python",
            "env": {"VIRTUAL_ENV": str(self.prefix), "PATH": f"{self.prefix}/bin:${{PATH}}"},
            "metadata": {"debugger": True,
                         "persistent_notebooks": {"environment": self.label, "prefix": str(self.prefix),
                                                  "source": self.source}},
        }

    @property
    def resource_dir(self) -> str:
        # ipykernel installs its own logos there; the base kernel's otherwise.
        own = self.prefix / "share" / "jupyter" / "kernels" / "python3"
        if own.is_dir():
            return str(own)
        from ipykernel.kernelspec import RESOURCES
        return RESOURCES


def _pyvenv_version(prefix: Path) -> str | None:
    """The Python version of a venv (pyvenv.cfg), None if prefix is not a venv."""
    try:
        text = (prefix / "pyvenv.cfg").read_text()
    except OSError:
        return None
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    values = {k.strip(): v.strip() for k, v in values.items()}
    version = values.get("version_info") or values.get("version") or ""
    return ".".join(version.split(".")[:2])


def _has_ipykernel(prefix: Path) -> bool:
    return any(prefix.glob("lib/python3*/site-packages/ipykernel/__init__.py"))


def _environment(prefix: Path, kernel_name: str, label: str, source: str) -> Environment | None:
    version = _pyvenv_version(prefix)
    if version is None or not (prefix / "bin" / "python").exists() or not _has_ipykernel(prefix):
        return None
    return Environment(kernel_name, label, prefix, source, version)


def kernel_name_for_workspace(folder: Path) -> str:
    rel = folder.relative_to(WORKSPACE).as_posix()
    slug = re.sub(r"[^a-z0-9_.-]+", "-", rel.lower()).strip("-.") if rel != "." else "workspace"
    return WORKSPACE_PREFIX + (slug or "workspace")


def managed_environments() -> list[Environment]:
    found = []
    try:
        entries = sorted(os.scandir(ENVS_DIR), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue  # .creating-* and .removing-* are never offered
        env = _environment(Path(entry.path), entry.name, entry.name, "env")
        if env:
            found.append(env)
    return found


@dataclasses.dataclass
class Scan:
    """What one look through the workspace found, and where it did not look."""

    environments: list[Environment] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # folders not (fully) searched, and why
    seconds: float = 0.0


def scan_workspace(budget: float | None = None) -> Scan:
    """Every `.venv` with ipykernel up to WORKSPACE_DEPTH folders down; stops after `budget` seconds."""
    scan = Scan()
    names: set[str] = set()
    started = time.monotonic()

    def visit(folder: Path, depth: int) -> None:
        if budget is not None and time.monotonic() - started > budget:
            scan.skipped.append(f"{folder}: not reached within the {budget:g} s the search may take")
            return
        venv = folder / ".venv"
        if venv.is_dir():
            name = kernel_name_for_workspace(folder)
            rel = venv.relative_to(WORKSPACE).as_posix()
            env = _environment(venv, name if name not in names else f"{name}-{len(names)}", rel, "workspace")
            if env:
                names.add(env.kernel_name)
                scan.environments.append(env)
        if depth >= WORKSPACE_DEPTH:
            return
        try:
            with os.scandir(folder) as listing:
                # A data folder with a million files is not a project: look at its first entries only.
                entries = list(itertools.islice(listing, MAX_ENTRIES + 1))
        except OSError as exc:
            scan.skipped.append(f"{folder}: cannot be read ({exc.strerror})")
            return
        if len(entries) > MAX_ENTRIES:
            entries = entries[:MAX_ENTRIES]
            scan.skipped.append(f"{folder}: more than {MAX_ENTRIES:,} entries, only the first {MAX_ENTRIES:,} "
                                "searched (a .venv in a folder past them is not offered)")
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or entry.name in SKIP_DIRS:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    visit(Path(entry.path), depth + 1)
            except OSError:
                continue

    visit(WORKSPACE, 0)
    scan.seconds = time.monotonic() - started
    return scan


def workspace_environments() -> list[Environment]:
    return scan_workspace().environments


# --- notebookctl env ---------------------------------------------------------------------------

def uv() -> str:
    found = shutil.which("uv", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not found:
        raise EnvError("uv is missing from the image; rebuild it: docker compose up -d --build")
    return found


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise EnvError(f"{name!r} is not a valid environment name: use lower-case letters, digits, '-', '_' "
                       "and '.', starting with a letter or digit, at most 64 characters (e.g. 'torch-2')."
                       " The name is also the kernel's name.")
    if name in RESERVED or name.startswith(WORKSPACE_PREFIX):
        raise EnvError(f"{name!r} is reserved (the image's own kernel, or the prefix of environments found in"
                       " the workspace): choose another name.")
    return name


def running_kernels_of(kernel_name: str) -> list[str]:
    return [r.kernel_id for r in records.live() if r.kernel_name == kernel_name]


def create(name: str, packages: list[str], requirements: list[str], python: str | None) -> Environment:
    check_name(name)
    target = ENVS_DIR / name
    if target.exists():
        raise EnvError(f"environment {name!r} exists already ({target}). Remove it first: "
                       f"notebookctl env remove {name}")
    from jupyter_client.kernelspec import KernelSpecManager  # the CLI's: made only for this check

    clash = KernelSpecManager().find_kernel_specs()
    if name in clash:
        raise EnvError(f"a kernelspec named {name!r} exists already ({clash[name]}): choose another name.")
    for req in requirements:
        if not Path(req).is_file():
            raise EnvError(f"requirements file {req!r} not found (paths are inside the container, e.g. "
                           "/workspace/requirements.txt).")
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    building = ENVS_DIR / f".creating-{name}-{os.getpid()}"
    wanted = list(packages)
    for req in requirements:
        wanted += ["-r", req]
    if not any(re.match(r"ipykernel\b", p, re.I) for p in packages):
        # The base kernel's ipykernel version, unless the user asks for one.
        wanted.insert(0, f"ipykernel=={metadata.version('ipykernel')}")
    started = time.monotonic()
    try:
        # Relocatable: made under a temporary name, then renamed into place in one step, so that a
        # failure leaves nothing and the kernel list never shows a half-made environment.
        # --seed: pip in it, so that %pip install in its kernels installs into it.
        _run([uv(), "venv", "--quiet", "--relocatable", "--seed", "--python", python or DEFAULT_PYTHON,
              str(building)],
             f"could not make a Python {python} environment" if python else "could not make the environment")
        _run([uv(), "pip", "install", "--python", str(building / "bin" / "python"), *wanted],
             "could not install the packages")
        try:
            building.rename(target)
        except OSError as exc:
            raise EnvError(f"environment {name!r} was made at the same time by someone else ({exc})") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    env = _environment(target, name, name, "env")
    if env is None:
        shutil.rmtree(target, ignore_errors=True)
        raise EnvError(f"environment {name!r} has no usable ipykernel after installing; removed it")
    print(f"environment {name!r} ready in {time.monotonic() - started:.1f} s: kernel {name!r} "
          f"({env.kernel_dict()['display_name']}), {target}", file=sys.stderr)
    return env


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise EnvError(f"{what}: {exc}") from None
    if result.returncode != 0:
        raise EnvError(f"{what} (uv said why, above; check the package names and versions, and that the "
                       "container reaches the package index). Nothing was left behind.")


def remove(name: str) -> Path:
    target = ENVS_DIR / name
    if not NAME_RE.fullmatch(name) or not target.is_dir():
        workspace = {e.kernel_name: e for e in workspace_environments()}
        if name in workspace:
            raise EnvError(f"{name!r} is the environment {workspace[name].prefix} in the workspace: it is yours; "
                           "delete that folder to remove its kernel.")
        known = ", ".join(e.kernel_name for e in managed_environments()) or "none"
        raise EnvError(f"no environment named {name!r} (environments: {known}). See: notebookctl env list")
    running = running_kernels_of(name)
    if running:
        raise EnvError(f"kernels of {name!r} are running ({', '.join(k[:8] for k in running)}): stop them first "
                       f"with notebookctl kernels stop ID, then remove the environment.")
    trash = ENVS_DIR / f".removing-{name}-{os.getpid()}"
    target.rename(trash)  # gone from the kernel list at once
    shutil.rmtree(trash, ignore_errors=True)
    return target
