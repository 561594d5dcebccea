"""One way every program of the container writes a file whole or not at all: a temporary file beside it, written,
fsynced, renamed into place; on any error (a full disk included) the temporary file goes and the file is untouched.

Stdlib only, and nothing else of the package (any Python from 3.9: every kernel's imports it, through
kernelstate, and supervisord's). The
hub's image does not carry the package: hub/persistent_hub/accounts.py keeps a copy of its own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path


def write(path: Path, data: str | bytes | Iterable[bytes | bytearray | memoryview], mode: int = 0o600,
          fsync: bool = True, replace: Callable[[Path, Path], None] = os.replace, sync_folder: bool = False) -> None:
    """Replace `path` by a file holding `data` (text, bytes, or buffers written one after the other, so that a big
    file is never copied whole), with `mode` whatever the umask. `replace(tmp, path)` renames it into place (a
    caller may take a lock and look again first, or raise to give up); `sync_folder` makes the rename durable too."""
    tmp = path.with_name(f".~{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            chunks = [data.encode()] if isinstance(data, str) else [data] if isinstance(data, bytes) else data
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                while view:
                    view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
