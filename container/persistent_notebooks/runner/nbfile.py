"""Notebook files for server-side runs: read and check them, pick cells, merge outputs, write atomically.

Pure logic on the notebook's JSON (plain dicts, as nbformat 4 stores them), so the unit layer can test
it without Docker; only `validate` needs nbformat (imported when called).

A run's outputs are *merged by cell id* into whatever the file holds at the moment of writing: the
user may edit, add, move or delete cells (and save) while the run goes on, and only the outputs and
execution counts of the cells the run executed change. Every write goes to a temporary file in the
same folder, is flushed to disk, and replaces the notebook by rename: a crash, a kill -9 or a full
disk leaves the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path

from .. import atomic, paths

META_KEY = "persistent_notebooks"
SIDE_SUFFIX = ".run-{run}.ipynb"


class NotebookError(Exception):
    """A notebook that cannot be run as asked; the message says what is wrong and what to do."""


def parse(text: str, where: str) -> dict:
    """A notebook's JSON as a dict, refused unless it is an nbformat 4 notebook."""
    try:
        nb = json.loads(text)
    except ValueError as exc:
        raise NotebookError(f"{where} is not valid JSON ({exc}); open it in Jupyter or VSCode and save it "
                            "again, or fix the file.") from None
    if not isinstance(nb, dict) or "nbformat" not in nb:
        raise NotebookError(f"{where} is not a Jupyter notebook (its JSON has no 'nbformat').")
    major = nb["nbformat"]
    if major != 4:
        raise NotebookError(f"{where} is nbformat {major}; runs need nbformat 4. Convert it first: "
                            f"`jupyter nbconvert --to notebook --nbformat 4 --inplace {where}`, or open and "
                            "save it in Jupyter.")
    if not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{where} is not a Jupyter notebook (no 'cells' list).")
    for i, cell in enumerate(nb["cells"], 1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise NotebookError(f"{where}: cell {i} is not a notebook cell (cell_type code, markdown or raw).")
    return nb


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else str(text)


def skeleton(nb: dict) -> dict:
    """The notebook without its code cells' outputs: what a run keeps of a file between writes."""
    return {**nb, "cells": [{**c, "outputs": []} if c.get("cell_type") == "code" else c for c in nb["cells"]]}


def ensure_ids(nb: dict) -> bool:
    """Give every cell an id (nbformat 4.5), as Jupyter does when it saves; True if anything changed."""
    changed = False
    seen: set[str] = set()
    for cell in nb["cells"]:
        cid = cell.get("id")
        if not isinstance(cid, str) or not cid or cid in seen:
            cell["id"] = secrets.token_hex(4)
            changed = True
        seen.add(cell["id"])
    if not isinstance(nb.get("nbformat_minor"), int) or nb["nbformat_minor"] < 5:
        nb["nbformat_minor"] = 5
        changed = True
    return changed


def parse_range(text: str, count: int) -> tuple[int, int]:
    """'3-9', '4', '5-' (1-based, as the user counts cells, all kinds) -> (first, last), inclusive."""
    first_text, dash, last_text = text.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if last_text else (count if dash else first)
    except ValueError:
        raise NotebookError(f"--cells {text!r} is not a cell range: use N, N-M or N- (cells counted from 1, "
                            "markdown cells included, as the editor shows them).") from None
    if not 1 <= first <= last:
        raise NotebookError(f"--cells {text!r}: the range must start at 1 or later and not end before it starts.")
    if last > count:
        raise NotebookError(f"--cells {text!r}: the notebook has {count} cells.")
    return first, last


def plan(nb: dict, first: int = 1, last: int | None = None) -> list[dict]:
    """The code cells to run, in order: [{"id", "number" (1-based among all cells), "source"}]."""
    count = len(nb["cells"])
    last = count if last is None else last
    if not 1 <= first <= max(count, 1) or last > count:
        raise NotebookError(f"cell {first} is outside the notebook, which has {count} cells.")
    return [{"id": cell["id"], "number": n, "source": source(cell)}
            for n, cell in enumerate(nb["cells"], 1)
            if first <= n <= last and cell["cell_type"] == "code" and source(cell).strip()]


def merge(current: dict, results: dict[str, dict], run: dict | None) -> tuple[dict, list[str]]:
    """Put the run's outputs and counts into `current` (the file as it is now); return it and the ids
    of executed cells that are no longer code cells in it (deleted, or turned into markdown)."""
    missing = []
    by_id = {cell.get("id"): cell for cell in current["cells"]}
    for cid, result in results.items():
        cell = by_id.get(cid)
        if cell is None or cell.get("cell_type") != "code":
            missing.append(cid)
            continue
        cell["outputs"] = result["outputs"]
        cell["execution_count"] = result["execution_count"]
        if "source" in result:  # the code as it ran (JupyterLab sends a cell's code before it saves it)
            cell["source"] = result["source"]
    if run is not None:
        current.setdefault("metadata", {})[META_KEY] = {"run": run}
    return current, missing


def validate(nb: dict) -> None:
    """Refuse to write what Jupyter would call invalid (nbformat's own validator)."""
    import nbformat

    nbformat.validate(nbformat.from_dict(nb), version=4)


class Changed(Exception):
    """The file changed on disk while a write was prepared: merge into the new content instead."""


WRITE_SLICE = 1 << 20  # characters encoded and written at a time


def atomic_write(path: Path, text: str, unchanged=None) -> None:
    """Replace `path` by a file holding `text`: a temporary file beside it, fsync, rename, fsync of the
    folder. On any error (disk full included) the temporary file is removed and `path` is untouched.
    `unchanged()`, if given, is asked right before the rename (after the slow fsync), so that a save by
    someone else meanwhile is not overwritten: it raises Changed if it returns False. The file ends with a
    newline, as Jupyter saves notebooks. Encoded and written a slice at a time: a notebook of images is not
    copied whole twice more (as bytes, and with its newline)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644

    def slices():
        for start in range(0, len(text), WRITE_SLICE):
            yield text[start:start + WRITE_SLICE].encode()
        if not text.endswith("\n"):
            yield b"\n"

    def replace(tmp: Path, target: Path) -> None:
        with paths.replacing_lock(target):  # Jupyter's saves rename under it too: none lands in between
            if unchanged is not None and not unchanged():
                raise Changed(str(target))
            os.replace(tmp, target)

    atomic.write(path, slices(), mode, replace=replace, sync_folder=True)


def correct_run_metadata(path: Path, run_id: str, fields: dict) -> bool:
    """Update the run metadata a notebook holds (persistent_notebooks.run), if it is this run's: a runner that
    died left it saying "running". Only that metadata changes; a save meanwhile makes it give up (False)."""
    import nbformat

    try:
        before = path.stat()
        nb = parse(path.read_text(), path.name)
    except (OSError, UnicodeDecodeError, NotebookError):
        return False
    run = (nb.get("metadata") or {}).get(META_KEY, {}).get("run") or {}
    if run.get("id") != run_id:
        return False
    run.update(fields)
    text = nbformat.writes(nbformat.from_dict(nb), version=nbformat.NO_CONVERT)

    def unchanged() -> bool:
        try:
            after = path.stat()
        except OSError:
            return False
        return (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    try:
        atomic_write(path, text, unchanged)
    except (Changed, OSError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class PendingOutputs:
    """A run's outputs its notebook could not take yet (a full disk), kept in the state volume for the next runner."""

    run_id: str
    notebook: str  # as the run names it, relative to the workspace
    path: str  # where the run was writing: the notebook, or its side file
    results: dict  # cell id -> the cell's outputs and count (CellOutputs.result())
    metadata: dict | None  # the run, as the notebook's metadata records it (None: cells JupyterLab sent)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PendingOutputs:
        return cls(**json.loads(text))


def write_outputs(kept: PendingOutputs, fallback_dir: Path) -> str:
    """Merge kept outputs into the file as it is now (a side file, from the file, if their cells left it, or if
    the file is gone); the path written. Raises OSError while the disk still refuses them, and nbformat's
    error if the result would not be a valid notebook."""
    import nbformat

    path, gone = Path(kept.path), False
    try:
        current = parse(path.read_text(), kept.notebook)
    except FileNotFoundError:  # gone meanwhile: the outputs alone, in a side file
        current = {"cells": [{"cell_type": "code", "id": cid, "metadata": {}, "source": "", "outputs": [],
                              "execution_count": None} for cid in kept.results],
                   "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        gone = True
    merged, missing = merge(current, kept.results, kept.metadata)
    validate(merged)
    target = side_file(path, kept.run_id, fallback_dir) if missing or gone else path
    text = nbformat.writes(nbformat.from_dict(merged), version=nbformat.NO_CONVERT)
    atomic_write(target, text)
    return str(target)


def side_file(path: Path, run_id: str, fallback_dir: Path) -> Path:
    """Where a run saves when its notebook was deleted or renamed: beside it, else in the state volume."""
    name = path.name.removesuffix(".ipynb") + SIDE_SUFFIX.format(run=run_id)
    if path.parent.is_dir() and os.access(path.parent, os.W_OK):
        return path.parent / name
    fallback_dir.mkdir(parents=True, exist_ok=True)
    return fallback_dir / name


# --- outputs, as Jupyter's frontends build them from IOPub messages --------------------------------

def collapse_carriage_returns(text: str) -> str:
    """What a frontend shows of text with carriage returns (progress bars): on each line only what was
    written after the last \\r; a \\r at the very end is kept, so the next chunk overwrites that line."""
    if "\r" not in text:
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    out = []
    for line in lines:
        parts = line.split("\r")
        if len(parts) > 1 and parts[-1] == "":
            out.append(parts[-2] + "\r")
        else:
            out.append(parts[-1])
    return "\n".join(out)


STREAM_HEAD = 64 * 1024  # characters of a cell's stream output kept from its start in the notebook
STREAM_TAIL = 1024 * 1024  # ... and from its end; between them a line says how much was cut


class StreamText:
    """One stream output of a cell, bounded: its first STREAM_HEAD and last STREAM_TAIL characters, a line
    between them saying how many were cut (a cell printing for days costs the runner ~2 MiB, not the
    output's size); carriage returns collapsed as a frontend shows them, at the cost of what is appended."""

    def __init__(self) -> None:
        self.head = ""
        self.parts: list[str] = []  # complete lines after the head
        self.size = 0
        self.open_line = ""  # after the last newline: a later \r may still rewrite it
        self.cut = 0

    def append(self, text: str) -> None:
        if len(text) > 2 * STREAM_TAIL + STREAM_HEAD:
            # One big message (a kernel flushes what a fast loop printed in 0.2 s: tens of MB): only its start
            # (for the head) and its end are kept, without copying the rest around.
            if len(self.head) < STREAM_HEAD:
                start = STREAM_HEAD - len(self.head)
                self.append(text[:start])
                text = text[start:]
            kept = text[-2 * STREAM_TAIL:]
            self.cut += self.size + len(self.open_line) + len(text) - len(kept)
            self.parts, self.size, self.open_line = [], 0, ""
            text = kept
        text = self.open_line + text
        if "\r" in text:
            text = collapse_carriage_returns(text)
        end = text.rfind("\n") + 1
        if len(text) - end > STREAM_TAIL:  # a line without end: kept as it comes, bounded
            end = len(text)
        complete, self.open_line = text[:end], text[end:]
        if len(self.head) < STREAM_HEAD:
            taken = complete[:STREAM_HEAD - len(self.head)]
            self.head += taken
            complete = complete[len(taken):]
        if complete:
            self.parts.append(complete)
            self.size += len(complete)
        if self.size > 2 * STREAM_TAIL:
            kept = "".join(self.parts)[-STREAM_TAIL:]
            self.cut += self.size - len(kept)
            self.parts, self.size = [kept], len(kept)

    def text(self) -> str:
        body = "".join(self.parts)
        extra = max(0, len(body) - STREAM_TAIL)  # held up to twice that here (trimmed in batches)
        cut = self.cut + extra
        notice = (f"\n[persistent-notebooks: {cut:,} characters of this output were cut here: the notebook "
                  f"keeps the first {STREAM_HEAD // 1024} KiB and the last {STREAM_TAIL // 1024} KiB of it]\n"
                  if cut else "")
        return self.head + notice + body[extra:] + self.open_line


class CellOutputs:
    """The outputs of one executed cell, built from the IOPub messages of its execute_request.

    `displays` (display_id -> outputs) is shared by the cells of a run, so that update_display_data
    reaches a display made by an earlier cell, as in Jupyter's frontends.
    """

    def __init__(self, displays: dict[str, list[dict]]) -> None:
        self.outputs: list[dict] = []
        self.streams: dict[int, StreamText] = {}  # the text of each stream output, by its index in outputs
        self.execution_count: int | None = None
        self.displays = displays
        self.clear_pending = False

    def result(self) -> dict:
        """A copy safe to write from another thread while this one keeps growing."""
        outputs = [dict(o) for o in self.outputs]
        for index, stream in self.streams.items():
            outputs[index]["text"] = stream.text()
        return {"outputs": outputs, "execution_count": self.execution_count}

    def add(self, msg_type: str, content: dict) -> bool:
        """Apply one IOPub message; True if the outputs or the count changed."""
        if msg_type == "execute_input":
            self.execution_count = content.get("execution_count")
            return True
        if msg_type == "clear_output":
            if content.get("wait"):
                self.clear_pending = True
            else:
                self.outputs.clear()
                self.streams.clear()
            return True
        if msg_type == "update_display_data":
            display_id = (content.get("transient") or {}).get("display_id")
            for out in self.displays.get(display_id, []):
                out["data"] = content.get("data", {})
                out["metadata"] = content.get("metadata", {})
            return bool(self.displays.get(display_id))
        if msg_type not in ("stream", "display_data", "execute_result", "error"):
            return False
        if self.clear_pending:
            self.outputs.clear()
            self.streams.clear()
            self.clear_pending = False
        if msg_type == "stream":
            last = self.outputs[-1] if self.outputs else None
            if not (last and last["output_type"] == "stream" and last["name"] == content.get("name")):
                self.outputs.append({"output_type": "stream", "name": content.get("name", "stdout"), "text": ""})
                self.streams[len(self.outputs) - 1] = StreamText()
            self.streams[len(self.outputs) - 1].append(str(content.get("text", "")))
            return True
        if msg_type == "error":
            self.outputs.append({"output_type": "error", "ename": str(content.get("ename", "")),
                                 "evalue": str(content.get("evalue", "")),
                                 "traceback": list(content.get("traceback", []))})
            return True
        out = {"output_type": msg_type, "data": content.get("data", {}), "metadata": content.get("metadata", {})}
        if msg_type == "execute_result":
            out["execution_count"] = content.get("execution_count")
            self.execution_count = content.get("execution_count", self.execution_count)
        self.outputs.append(out)
        display_id = (content.get("transient") or {}).get("display_id")
        if display_id:
            self.displays.setdefault(display_id, []).append(out)
        return True

    def note(self, text: str, name: str = "stderr") -> None:
        """A line of this project's own in the cell's output (why the run ended here)."""
        self.add("stream", {"name": name, "text": text if text.endswith("\n") else text + "\n"})

    def fail(self, ename: str, evalue: str) -> None:
        self.outputs.append({"output_type": "error", "ename": ename, "evalue": evalue,
                             "traceback": [f"{ename}: {evalue}"]})
