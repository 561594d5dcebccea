"""Jupyter's file saves made truly atomic (ServerApp.contents_manager_class, runs inside the server).

jupyter_server's "atomic" writing copies the old file to a `.~` backup and then rewrites the file *in
place*: a crash (kill -9, OOM, power) in the middle leaves a truncated notebook, and the next save
copies that truncated file over the backup. Here every notebook and file save goes to a temporary
file in the same folder, is flushed to disk and renamed over the old one (nbfile.atomic_write does
the same for runs), so a crash leaves the old file or the new one, never a part of either.

jupyter_server calls `atomic_writing` for every notebook and file save (_save_notebook, _save_file);
test_jupyter_saves_replace_the_file_by_rename fails if an upgrade stops going through it.
"""

from __future__ import annotations

import glob
import os
import secrets
from contextlib import contextmanager

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from .. import paths


@contextmanager
def replacing(path: str, text: bool = True, encoding: str = "utf-8", log=None, **kwargs):
    """A file object whose content replaces `path` by rename once the block ends without error."""
    if os.path.islink(path):  # write through a link to its target, as jupyter_server does
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    folder = os.path.dirname(path) or os.getcwd()
    if os.path.isfile(path) and not os.access(folder, os.W_OK) and os.access(path, os.W_OK):
        # A writable file in a folder we cannot write: no temporary file possible, write in place.
        with open(path, "w" if text else "wb", **({"encoding": encoding} if text else {}), **kwargs) as f:
            yield f
        return
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    base = os.path.basename(path)
    for old in glob.glob(os.path.join(glob.escape(folder), f".~{glob.escape(base)}.*.saving")):
        pid = old[len(os.path.join(folder, f".~{base}.")):].split(".")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:  # left by a save whose server was killed half-way
                os.unlink(old)
            except OSError:
                pass
    tmp = os.path.join(folder, f".~{base}.{os.getpid()}.{secrets.token_hex(4)}.saving")
    if text:
        kwargs.setdefault("newline", "\n")  # Unix line ends, as jupyter_server writes them
        fileobj = open(tmp, "x", encoding=encoding, **kwargs)  # noqa: SIM115 - closed below
    else:
        fileobj = open(tmp, "xb", **kwargs)  # noqa: SIM115 - closed below
    try:
        try:
            yield fileobj
            fileobj.flush()
            os.fsync(fileobj.fileno())
        finally:
            fileobj.close()
        os.chmod(tmp, mode)
        with paths.replacing_lock(path):  # never between a run's check and its rename
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if log is not None:
            log.debug("could not sync folder %s: %s", folder, exc)


class AtomicFileContentsManager(AsyncLargeFileManager):
    """jupyter_server's default contents manager, with saves that replace the file by rename."""

    @contextmanager
    def atomic_writing(self, os_path, *args, **kwargs):
        with self.perm_to_403(os_path):
            kwargs["log"] = self.log
            with replacing(os_path, *args, **kwargs) as f:
                yield f
