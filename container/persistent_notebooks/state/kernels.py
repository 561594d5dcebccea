"""The kernel records (kernels/ID.json in the state volume): what a later Jupyter server needs to adopt a kernel,
or to start it again after the container's end. The Jupyter server owns them (writes them at launch, removes them
at shutdown, sets a damaged one aside); the keeper, the runner, the watchdog and the CLI read them here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths

log = logging.getLogger("persistent_notebooks")


class DamagedRecord(ValueError):
    """A kernel record that cannot be used; its message says what is wrong with it."""


@dataclass(frozen=True)
class KernelRecord:
    """A kernel as its Jupyter server launched it: process, connection file, environment and notebook."""

    kernel_id: str
    kernel_name: str
    connection_file: str
    pid: int
    start_time: int | None = None  # the pid's start (clock ticks since boot): a recycled pid is never the kernel
    pgid: int | None = None
    instance: str | None = None  # the container's run that started it (paths.container_instance)
    ip: str | None = None
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)  # what the server added to its environment (JPY_SESSION_NAME)
    notebook: str | None = None  # the notebook its cells come from, relative to the workspace
    notebook_seen: float | None = None  # when a cell of it came last
    restored_at: float | None = None  # when it was started again after the container's end

    @classmethod
    def parse(cls, data: object, file_name: str) -> KernelRecord:
        """The record read from the file `file_name`; DamagedRecord saying what is wrong if it cannot be used.
        Keys this version does not know are ignored."""
        if not isinstance(data, dict):
            raise DamagedRecord(f"it holds a JSON {type(data).__name__}, not an object")
        values: dict[str, Any] = {}
        for name, kinds, required in _FIELDS:
            value = data.get(name)
            if value is None and not required:
                continue
            if not isinstance(value, kinds) or isinstance(value, bool):
                kind = " or ".join(k.__name__ for k in kinds)
                raise DamagedRecord(f"its {name!r} is {'missing' if value is None else 'not a ' + kind}")
            values[name] = value
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.get("env", {}).items()):
            raise DamagedRecord("its 'env' holds something other than strings")
        if values["kernel_id"] != file_name.removesuffix(".json"):
            raise DamagedRecord(f"its kernel_id {values['kernel_id']!r} is not its file name")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def replace(self, **changes: Any) -> KernelRecord:
        return dataclasses.replace(self, **changes)

    def alive(self) -> bool:
        """The kernel's process runs: its pid, with the start time it had."""
        return bool(self.pid) and paths.process_start_time(self.pid) == self.start_time


# Each field: the JSON types it may hold, and whether a record must have it.
_FIELDS = (("kernel_id", (str,), True), ("kernel_name", (str,), True), ("connection_file", (str,), True),
           ("pid", (int,), True), ("start_time", (int,), False), ("pgid", (int,), False),
           ("instance", (str,), False), ("ip", (str,), False), ("cwd", (str,), False), ("env", (dict,), False),
           ("notebook", (str,), False), ("notebook_seen", (int, float), False),
           ("restored_at", (int, float), False))
assert {f[0] for f in _FIELDS} == {f.name for f in dataclasses.fields(KernelRecord)}

KERNELS_DIR = paths.STATE_DIR / "kernels"


def path(kernel_id: str) -> Path:
    return KERNELS_DIR / f"{kernel_id}.json"


def write(record: KernelRecord) -> None:
    """The owner's write: whole or not at all, readable by the notebook user only."""
    paths.private_dir(KERNELS_DIR)
    paths.write_private(path(record.kernel_id), record.to_json())


def remove(kernel_id: str) -> None:
    path(kernel_id).unlink(missing_ok=True)


def set_aside(file: Path, problem: str) -> None:
    """Move a damaged record out of the way (kept beside as NAME.damaged, for a look), saying once what was wrong."""
    aside = file.with_name(f"{file.name}.damaged")
    try:
        os.replace(file, aside)
    except OSError:
        return  # another program set it aside first, or it is gone
    log.warning("persistent-notebooks: kernel record %s is damaged (%s): set aside as %s; the other kernels "
                "are not affected", file.name, problem, aside.name)


def read(kernel_id: str, owner: bool = False) -> KernelRecord | None:
    """The kernel's record; None when there is none or it is damaged (not JSON, the wrong shape, a file name that
    is not its kernel id). The owner (the Jupyter server) sets a damaged one aside and logs it; every other reader
    only skips it."""
    file = path(kernel_id)
    try:
        return KernelRecord.parse(json.loads(file.read_text()), file.name)
    except FileNotFoundError:
        return None
    except DamagedRecord as exc:
        problem = str(exc)
    except (OSError, ValueError) as exc:
        problem = f"not JSON: {exc}"
    if owner:
        set_aside(file, problem)
    return None


def all_records(owner: bool = False) -> list[KernelRecord]:
    """Every usable kernel record (see read), never an error for the caller."""
    if not KERNELS_DIR.is_dir():
        return []
    records = (read(file.name.removesuffix(".json"), owner) for file in sorted(KERNELS_DIR.glob("*.json")))
    return [record for record in records if record is not None]


def live() -> list[KernelRecord]:
    """The records of kernels that are running (a record outlives its kernel until its owner sees it)."""
    return [record for record in all_records() if record.alive()]
