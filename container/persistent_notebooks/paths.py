"""Where persistent-notebooks keeps its state, and the settings read from the environment.

Everything that must outlive the Jupyter server lives in the `state` volume: one record per
running kernel (kernels/), the keeper's socket and the server's token (run/, private), the
tmux save, Jupyter's runtime files (connection files) and its sessions database.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("persistent_notebooks")

STATE_DIR = Path(os.environ.get("NOTEBOOK_STATE_DIR", "/var/lib/persistent-notebooks"))
KERNELS_DIR = STATE_DIR / "kernels"
RUN_DIR = STATE_DIR / "run"
KEEPER_SOCKET = RUN_DIR / "keeper.sock"
KEEPER_PENDING_DIR = RUN_DIR / "keeper-pending"  # a file per kernel while the keeper holds undelivered output
SERVER_TOKEN_FILE = RUN_DIR / "token"
TMUX_SAVE_FILE = STATE_DIR / "tmux-save" / "session.json"
SESSIONS_DB = STATE_DIR / "jupyter" / "sessions.db"
WORKSPACE = Path(os.environ.get("NOTEBOOK_WORKSPACE", "/workspace"))
# Server-side notebook runs: one record per run (owned by the runner), its socket, side files.
RUNS_DIR = STATE_DIR / "runs"
RUNNER_SOCKET = RUN_DIR / "runner.sock"
SUPERVISORD_CONF = "/etc/persistent-notebooks/supervisord.conf"

# Raised for kernels (and so for what they start): the OOM killer picks a kernel before Jupyter,
# supervisord, the keeper or tmux. An unprivileged process may raise it for its children.
KERNEL_OOM_SCORE_ADJ = 800

DEFAULT_AWAY_BUFFER = 32 * 2**20
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*", re.I)


def parse_size(text: str, name: str) -> int:
    """'32m', '32MiB', '1g', '65536' -> bytes; ValueError naming the variable otherwise."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{name}={text!r} is not a size. Use bytes or a number with k, m or g "
                         f"(e.g. {name}=32m).")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit])


def away_buffer() -> int:
    """NOTEBOOK_AWAY_BUFFER: bytes of output kept per kernel while no client is connected."""
    value = os.environ.get("NOTEBOOK_AWAY_BUFFER", "")
    return parse_size(value, "NOTEBOOK_AWAY_BUFFER") if value.strip() else DEFAULT_AWAY_BUFFER


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --- kernel records --------------------------------------------------------------------------

def record_path(kernel_id: str) -> Path:
    return KERNELS_DIR / f"{kernel_id}.json"


def write_record(record: dict) -> None:
    private_dir(KERNELS_DIR)
    write_private(record_path(record["kernel_id"]), json.dumps(record, indent=1))


def record_problem(record: object, name: str) -> str | None:
    """What is wrong with a kernel record read from the file `name`, None if it can be used."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not an object"
    for key, kind in (("kernel_id", str), ("kernel_name", str), ("connection_file", str), ("pid", int)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            return f"its {key!r} is missing or not a {kind.__name__}"
    if record["kernel_id"] != name.removesuffix(".json"):
        return f"its kernel_id {record['kernel_id']!r} is not its file name"
    if not isinstance(record.get("start_time"), int | None):
        return "its 'start_time' is not a number"
    return None


def set_aside(path: Path, problem: str) -> None:
    """Move a damaged record out of the way (kept beside, for a look), saying once what was wrong."""
    aside = path.with_name(f"{path.name}.damaged")
    try:
        os.replace(path, aside)
    except OSError:
        return  # another program set it aside first, or it is gone
    log.warning("persistent-notebooks: kernel record %s is damaged (%s): set aside as %s; the other kernels "
                "are not affected", path.name, problem, aside.name)


def read_record(kernel_id: str) -> dict | None:
    path = record_path(kernel_id)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        set_aside(path, f"not JSON: {exc}")
        return None
    problem = record_problem(record, path.name)
    if problem:
        set_aside(path, problem)
        return None
    return record


def all_records() -> list[dict]:
    """Every usable kernel record; a damaged one (not JSON, the wrong shape, a file name that is not its
    kernel id) is set aside and logged, never an error for the caller."""
    if not KERNELS_DIR.is_dir():
        return []
    records = []
    for path in sorted(KERNELS_DIR.glob("*.json")):
        record = read_record(path.name.removesuffix(".json"))
        if record is not None:
            records.append(record)
    return records


def remove_record(kernel_id: str) -> None:
    record_path(kernel_id).unlink(missing_ok=True)


# --- processes -------------------------------------------------------------------------------

def process_start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None if it is gone or a zombie.

    Kept with each kernel's pid, so that a recycled pid is never taken for the kernel.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited; tini reaps it
        return None
    return int(fields[19])


def kernel_alive(record: dict) -> bool:
    pid = record.get("pid")
    return bool(pid) and process_start_time(pid) == record.get("start_time")
