"""Jupyter's sessions database (notebook path <-> kernel), kept in the state volume, repaired when damaged; and
the notebook of a kernel whose session does not name it (VSCode's), learnt from the cells it runs."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .. import paths, settings
from ..state import kernels as records

log = logging.getLogger("persistent_notebooks")


def notebook_of_cell(uri: str) -> str | None:
    """The workspace path of the notebook a cell URI names (VSCode's execute requests carry one as
    metadata.cellId: vscode-notebook-cell://dev-container%2B.../workspace/a/train.ipynb#W0sZmlsZQ%3D%3D,
    the host's path under Remote-SSH): the path under /workspace, or else the longest end of the path that
    is a notebook in the workspace."""
    from urllib.parse import unquote, urlsplit

    try:
        path = Path(unquote(urlsplit(uri).path))
    except ValueError:
        return None
    if path.suffix != ".ipynb":
        return None
    if path.is_relative_to(settings.WORKSPACE):
        return str(path.relative_to(settings.WORKSPACE))
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for start in range(len(parts)):
        candidate = Path(*parts[start:])
        if (settings.WORKSPACE / candidate).is_file():
            return str(candidate)
    return None


def note_notebook(kernel_id: str, notebook: str) -> None:
    """Record in the kernel's record which notebook its cells come from, and when last (for the runner's
    choice between two kernels of one notebook); written when it changes, or a minute after the last time."""
    record = records.read(kernel_id)
    if record is None:
        return
    now = time.time()
    if record.notebook == notebook and now - (record.notebook_seen or 0) < 60:
        return
    records.write(record.replace(notebook=notebook, notebook_seen=now))


def repair_sessions_db() -> None:
    """A damaged sessions database (truncated, garbage, a folder in its place) would make Jupyter fail or
    answer 500 to every session request: move it aside and start a fresh one, with a session for each
    running kernel whose record names its notebook (JPY_SESSION_NAME), so editors find their kernels."""
    import sqlite3
    import uuid

    stamp = time.strftime("%Y%m%dT%H%M%S")
    # SQLite's side files must be files: a folder (or anything else) there fails every session request.
    for suffix in ("-journal", "-wal", "-shm"):
        side = paths.SESSIONS_DB.with_name(paths.SESSIONS_DB.name + suffix)
        if (side.exists() or side.is_symlink()) and not side.is_file():
            os.replace(side, side.with_name(f"{side.name}.damaged-{stamp}"))
            log.warning("persistent-notebooks: %s was not a file: moved aside", side.name)
    if not (paths.SESSIONS_DB.exists() or paths.SESSIONS_DB.is_symlink()):
        return
    if paths.SESSIONS_DB.is_file() and not os.access(paths.SESSIONS_DB, os.R_OK | os.W_OK):
        try:  # read-only (chmod 444, a copy from elsewhere): ours to write again
            paths.SESSIONS_DB.chmod(0o600)
            log.warning("persistent-notebooks: the sessions database was not writable: made it writable")
        except OSError:
            pass  # not ours: moved aside below
    problem = None
    if paths.SESSIONS_DB.is_dir() or not paths.SESSIONS_DB.is_file():
        problem = "it is not a regular file"
    elif not os.access(paths.SESSIONS_DB, os.R_OK | os.W_OK):
        problem = "it is not readable and writable by the notebook user"
    else:
        try:
            with sqlite3.connect(f"file:{paths.SESSIONS_DB}?mode=ro", uri=True, timeout=5) as db:
                result = db.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    problem = f"quick_check: {result}"
                else:
                    db.execute("SELECT session_id, path, name, type, kernel_id FROM session LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):  # an empty database: Jupyter makes the table
                problem = str(exc)
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
    if problem is None:
        return
    aside = paths.SESSIONS_DB.with_name(f"sessions.db.damaged-{stamp}")
    os.replace(paths.SESSIONS_DB, aside)
    rows = []
    for record in records.all_records():
        kernel_id = record.kernel_id
        if record.notebook:
            notebook = settings.WORKSPACE / record.notebook
        elif "JPY_SESSION_NAME" in record.env:
            notebook = Path(record.env["JPY_SESSION_NAME"])
        else:
            continue
        # JPY_SESSION_NAME is the kernel's folder joined with the session's name: the notebook's path
        # when the name is its file name (JupyterLab, notebookctl run); other sessions are not rebuilt.
        if notebook.is_relative_to(settings.WORKSPACE) and notebook.is_file():
            rel = str(notebook.relative_to(settings.WORKSPACE))
            rows.append((str(uuid.uuid4()), rel, notebook.name,
                         "notebook" if rel.endswith(".ipynb") else "file", kernel_id))
    with sqlite3.connect(paths.SESSIONS_DB) as db:
        db.execute("CREATE TABLE IF NOT EXISTS session (session_id, path, name, type, kernel_id)")
        db.executemany("INSERT INTO session VALUES (?, ?, ?, ?, ?)", rows)
    log.warning("persistent-notebooks: the sessions database was damaged (%s): moved it aside to %s and started a "
                "new one with %d session(s) rebuilt from the kernel records", problem, aside.name, len(rows))
