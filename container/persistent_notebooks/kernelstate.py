"""A kernel's variables saved to the state volume and loaded again, so that kernels outlive the container.

Runs inside every IPython kernel (the image's and every environment's: standard library and dill only,
from /opt/persistent-notebooks/kernel-lib), loaded by /etc/ipython/kernel_state.py; the Jupyter server
hands each kernel its Config and removes a kernel's saved state when the kernel ends for good.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import hmac
import io
import json
import os
import pickle
import re
import shutil
import signal
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import atomic

ENV = "PERSISTENT_NOTEBOOKS_KERNEL_STATE"  # the Config, as JSON, in the kernel's environment (popped at start)
MANIFEST = "manifest.json"
RESTORED = "restored.json"  # what the last restore brought back (read by `notebookctl kernels`)
STATUS = "checkpoint.json"  # the last checkpoint's outcome (read by `notebookctl kernels`)
WRITING = ".writing"  # present while a snapshot at stop is written: the keeper waits for it
LOCK = ".lock"
OUT_OF_BAND = 1 << 20  # array buffers from this size are stored as files of their own, by content
DUTY = 0.2  # checkpoints after cells take at most this share of the time (a big namespace is saved less often)
CHILD_TIMEOUT = 3600  # a checkpoint child that has not finished after this is ended
HISTORY_KEPT = 10_000  # inputs (In[...]) kept with a snapshot
# IPython's own names in the user namespace: output caches (_, __, _5), inputs (_i, _ii, _i5), lists.
IPYTHON_NAMES = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_oh|_ih|_dh|In|Out|exit|quit|get_ipython")


@dataclass(frozen=True)
class Config:
    """What a kernel needs to save and load its state (settings.py validates the values)."""

    kernel_id: str
    directory: str  # the kernel's own folder in the state volume (0700)
    key_file: str  # the stack's key: only snapshots it signed are loaded
    stop_marker: str  # exists while the container stops: a kernel shut down then saves its state
    checkpoints: bool  # KERNEL_CHECKPOINTS
    at_stop: bool  # KERNEL_SNAPSHOTS
    limit: int  # KERNEL_STATE_LIMIT, bytes
    floor: int  # KERNEL_STATE_FREE_FLOOR, bytes
    restore: bool = False  # load the saved state before the first request

    def to_env(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls, environ) -> Config | None:
        text = environ.pop(ENV, None)
        return cls(**json.loads(text)) if text else None


@dataclass
class Entry:
    """One saved variable: its pickle (by content hash) and its large array buffers (by content hash)."""

    name: str
    codec: str  # "pickle" (its own functions and classes by value through dill) or "dill" (all of it)
    stream: str
    buffers: list[list] = field(default_factory=list)  # [sha256, size]
    size: int = 0
    type: str = ""


@dataclass
class Manifest:
    """A snapshot: the variables, what was left out and why, and the kernel's counters."""

    kernel_id: str
    written: float
    reason: str  # "checkpoint" (after a cell) or "stop" (the container stopped)
    execution_count: int  # the next cell's number
    entries: list[Entry]
    skipped: dict[str, str]
    inputs: list[str] = field(default_factory=list)
    size: int = 0

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        return cls(**{**data, "entries": [Entry(**e) for e in data["entries"]]})


@dataclass
class Report:
    """What a restore brought back; the notice in the first cell after it is made from this."""

    at: float
    restored: list[str]
    skipped: dict[str, str]
    snapshot_written: float | None = None
    snapshot_reason: str | None = None
    failure: str | None = None  # the whole restore failed: the kernel started empty

    def notice(self) -> str:
        if not self.restored and not self.skipped and not self.failure:
            return ("persistent-notebooks: this kernel was started again under its id after the container "
                    "restarted; it had no saved variables.")
        if self.failure:
            return (f"persistent-notebooks: this kernel was started again under its id after the container "
                    f"restarted, but its saved state could not be loaded ({self.failure}): it starts empty.")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.snapshot_written or self.at))
        source = "the state saved when the container stopped" if self.snapshot_reason == "stop" else \
            "the checkpoint after the last cell that ended"
        total = len(self.restored) + len(self.skipped)
        text = (f"persistent-notebooks: this kernel was restored after the container restarted, from {source} "
                f"({when}): restored {len(self.restored)} of {total} variables")
        if self.skipped:
            text += "; not restored: " + ", ".join(f"{name} ({why})" for name, why in sorted(self.skipped.items()))
        return text + "."


class FloorReached(Exception):
    """Writing would leave less free space on the state volume than KERNEL_STATE_FREE_FLOOR."""


# --- the store: one kernel's folder -----------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, chunks, fsync: bool = True) -> None:
    """Write a private file whole or not at all (temporary file, fsync, rename)."""
    atomic.write(path, chunks, 0o600, fsync=fsync)


def _chunks(view: memoryview, size: int = 64 << 20):
    view = view.cast("B")
    for start in range(0, len(view), size):
        yield view[start:start + size]


def sha256_of(view) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(memoryview(view)):
        digest.update(chunk)
    return digest.hexdigest()


class Store:
    """A kernel's folder: content-addressed files, a signed manifest naming the current ones, a lock."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dir = Path(config.directory)

    def key(self) -> bytes:
        return Path(self.config.key_file).read_bytes().strip()

    @contextlib.contextmanager
    def locked(self):
        """One writer at a time (a checkpoint child, the kernel at stop)."""
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def free(self) -> int:
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def put(self, data, likely_new: bool = False) -> str:
        """Store content (not rewritten when the folder already has it); returns its sha256. Content that is
        likely new is hashed while it is written (one pass at the disk's pace), the rest hashed first."""
        view = memoryview(data).cast("B")
        if likely_new:
            self._check_floor(view.nbytes)
            tmp = self.dir / f".new.{os.getpid()}.tmp"
            digest = _write_hashing(tmp, view)
            path = self.dir / f"c-{digest}"
            if path.exists():
                tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
            return digest
        digest = sha256_of(view)
        path = self.dir / f"c-{digest}"
        if not path.exists():
            self._check_floor(view.nbytes)
            _write_file(path, [view])
        return digest

    def _check_floor(self, size: int) -> None:
        if self.free() - size < self.config.floor:
            raise FloorReached(f"{_mib(self.free())} free on the state volume, {_mib(size)} to write, "
                               f"KERNEL_STATE_FREE_FLOOR={_mib(self.config.floor)}")

    def read(self, digest: str, size: int | None = None) -> bytearray:
        """Content by its sha256, verified (each chunk hashed in a thread while the next is read)."""
        path = self.dir / f"c-{digest}"
        data = bytearray(path.stat().st_size if size is None else size)
        hasher = hashlib.sha256()
        with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(1) as pool:
            view, done, hashing = memoryview(data), 0, None
            for chunk in _chunks(view, 16 << 20):
                got = 0
                while got < len(chunk):
                    n = f.readinto(chunk[got:])
                    if not n:
                        raise ValueError(f"{path.name} is shorter than recorded")
                    got += n
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(hasher.update, chunk)
                done += got
            if hashing is not None:
                hashing.result()
        if hasher.hexdigest() != digest:
            raise ValueError(f"{path.name} does not match its checksum")
        return data

    def write_manifest(self, manifest: Manifest) -> None:
        body = json.dumps(asdict(manifest), sort_keys=True, separators=(",", ":")).encode()
        mac = hmac.new(self.key(), body, hashlib.sha256).hexdigest()
        _write_file(self.dir / MANIFEST, [json.dumps({"mac": mac, "manifest": body.decode()}).encode()])
        _fsync_dir(self.dir)
        keep = {f"c-{e.stream}" for e in manifest.entries} | \
            {f"c-{b[0]}" for e in manifest.entries for b in e.buffers}
        for path in self.dir.iterdir():
            if (path.name.startswith("c-") and path.name not in keep) or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)

    def read_manifest(self) -> Manifest:
        """The current manifest, only if this stack signed it (the key is the state volume's own)."""
        outer = json.loads((self.dir / MANIFEST).read_text())
        body = outer["manifest"].encode()
        if not hmac.compare_digest(hmac.new(self.key(), body, hashlib.sha256).hexdigest(), outer["mac"]):
            raise ValueError("its manifest is not signed with this stack's key: not loaded")
        manifest = Manifest.from_json(json.loads(body))
        if manifest.kernel_id != self.config.kernel_id:
            raise ValueError(f"the snapshot is of kernel {manifest.kernel_id}")
        return manifest

    def write_json(self, name: str, record) -> None:
        _write_file(self.dir / name, [json.dumps(asdict(record)).encode()], fsync=False)


def _write_hashing(path: Path, view: memoryview) -> str:
    """Write a private file (fsynced) while a thread hashes what was written; its sha256."""
    hasher = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with ThreadPoolExecutor(1) as pool:
            hashing = None
            for chunk in _chunks(view, 16 << 20):
                rest = chunk
                while rest:
                    rest = rest[os.write(fd, rest):]
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(hasher.update, chunk)
            if hashing is not None:
                hashing.result()
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return hasher.hexdigest()


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def read_json(path: Path) -> dict | None:
    """A status file of a kernel's folder (RESTORED, STATUS), None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def forget(directory: Path) -> None:
    """Drop a kernel's saved state (it was shut down, restarted fresh, or `notebookctl kernels forget`)."""
    shutil.rmtree(directory, ignore_errors=True)


# --- pickling one variable ----------------------------------------------------------------------------

def _refused(value) -> str | None:
    """Why a value is not saved at all (what would come back would not be what it was)."""
    kind = type(value)
    if isinstance(value, io.IOBase):
        return "an open file: open it again"
    if isinstance(value, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        return "a generator: its position cannot be saved"
    if isinstance(value, threading.Thread):
        return "a thread: start it again"
    if kind.__module__ in ("socket", "ssl", "sqlite3") or kind.__module__.startswith("_thread"):
        return f"a {kind.__module__} {kind.__name__}: make it again"
    return None


class _OutOfBand:
    """A big bytes or bytearray variable, pickled out of band as arrays are: written from its own memory,
    loaded as the very buffer read back (the C pickler keeps builtin types from reducer_override)."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __reduce__(self):
        return (_as_bytes if type(self.value) is bytes else _as_bytearray), (pickle.PickleBuffer(self.value),)


def _as_bytearray(buffer) -> bytearray:
    """A big bytearray's buffer, as loaded (a bytearray read from its file): itself, not a copy."""
    return buffer if type(buffer) is bytearray else bytearray(buffer)


def _as_bytes(buffer) -> bytes:
    return bytes(buffer)


def _load_dill(data: bytes):
    import dill

    return dill.loads(data)


class _Pickler(pickle.Pickler):
    """The C pickler (fast for many small objects); the variable itself, when it is a function or class
    defined in the notebook, goes by value through dill; one inside another value goes by reference to
    the notebook's namespace, where it is loaded first (so isinstance() holds after a restore)."""

    def __init__(self, file, top, buffers: list) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self.top = top
        self.out_of_band = buffers

    def _buffer(self, buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND:
            return True  # in the stream
        self.out_of_band.append(view)
        return False

    def reducer_override(self, obj):
        if isinstance(obj, types.ModuleType):
            return __import__("importlib").import_module, (obj.__name__,)
        if obj is self.top and isinstance(obj, types.FunctionType | type) and \
                getattr(obj, "__module__", None) == "__main__":
            import dill

            return _load_dill, (dill.dumps(obj, protocol=5),)
        return NotImplemented


def _kind_order(value) -> int:
    """Load order: modules, then classes, then functions, then the rest (which refer to them)."""
    if isinstance(value, types.ModuleType):
        return 0
    if isinstance(value, type):
        return 1
    if callable(value) and isinstance(value, types.FunctionType):
        return 2
    return 3


def _estimate(value) -> int:
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    try:
        return sys.getsizeof(value)
    except Exception:  # noqa: BLE001 - an estimate only orders the variables
        return 0


def user_variables(shell, shown: set[str] = frozenset()) -> dict:
    """The user's variables: not IPython's own, nor what start-up code defined (but the `shown` names)."""
    hidden = shell.user_ns_hidden
    return {name: value for name, value in shell.user_ns.items()
            if not (name.startswith("__") or IPYTHON_NAMES.fullmatch(name)
                    or (name in hidden and hidden[name] is value and name not in shown))}


def save(store: Store, namespace: dict, reason: str, execution_count: int, inputs: list[str]) -> Manifest:
    """Write a snapshot of `namespace` (only content the folder does not hold yet), then its manifest.

    Variables are taken smallest first, so that the kernel's size limit leaves out the biggest ones.
    Raises FloorReached before anything is half-written; the previous manifest stays in force."""
    entries, skipped, total = [], {}, 0
    try:
        before = {e.name: [size for _, size in e.buffers] for e in store.read_manifest().entries}
    except Exception:  # noqa: BLE001 - none yet, or unreadable: everything is new
        before = {}
    names = sorted(namespace, key=lambda n: (_kind_order(namespace[n]), _estimate(namespace[n]), n))
    for name in names:
        value = namespace[name]
        why = _refused(value)
        if why:
            skipped[name] = why
            continue
        buffers: list[memoryview] = []
        stream = io.BytesIO()
        codec = "pickle"
        big = type(value) in (bytes, bytearray) and len(value) >= OUT_OF_BAND
        try:
            _Pickler(stream, value, buffers).dump(_OutOfBand(value) if big else value)
        except Exception:  # noqa: BLE001 - not for the C pickler: all of it through dill
            import dill

            buffers.clear()
            stream = io.BytesIO()
            codec = "dill"
            try:
                dill.Pickler(stream, protocol=5, buffer_callback=lambda b, kept=buffers: _keep(b, kept)).dump(value)
            except Exception as exc:  # noqa: BLE001 - this variable is left out, never the others
                skipped[name] = f"cannot be saved: {type(exc).__name__}: {str(exc)[:120]}"
                continue
        data = stream.getbuffer()
        size = data.nbytes + sum(b.nbytes for b in buffers)
        if total + size > store.config.limit:
            skipped[name] = (f"{_mib(size)}: over the kernel's limit, KERNEL_STATE_LIMIT="
                             f"{_mib(store.config.limit)}")
            continue
        total += size
        new = before.get(name) != [b.nbytes for b in buffers]  # a new variable, or buffers of other sizes
        refs = [[store.put(b, likely_new=new), b.nbytes] for b in buffers]
        entries.append(Entry(name, codec, store.put(data), refs, size, type(value).__name__))
    manifest = Manifest(store.config.kernel_id, time.time(), reason, execution_count, entries, skipped,
                        inputs[-HISTORY_KEPT:], total)
    store.write_manifest(manifest)
    return manifest


def _keep(buffer: pickle.PickleBuffer, buffers: list) -> bool:
    view = buffer.raw()
    if view.nbytes < OUT_OF_BAND:
        return True
    buffers.append(view)
    return False


def load(store: Store, namespace: dict) -> tuple[Manifest, dict[str, str]]:
    """Load the signed snapshot into `namespace`, one variable at a time: one that fails is named, the
    others still come back."""
    manifest = store.read_manifest()
    skipped = dict(manifest.skipped)
    for entry in manifest.entries:
        try:
            stream = store.read(entry.stream)
            buffers = [store.read(digest, size) for digest, size in entry.buffers]
            if entry.codec == "dill":
                import dill

                namespace[entry.name] = dill.loads(stream, buffers=buffers)
            else:
                namespace[entry.name] = pickle.loads(stream, buffers=buffers)
        except Exception as exc:  # noqa: BLE001 - one variable, never the rest
            skipped[entry.name] = f"could not be loaded: {type(exc).__name__}: {str(exc)[:120]}"
    return manifest, skipped


# --- inside the kernel --------------------------------------------------------------------------------

class KernelState:
    """The kernel's side: load at start, a checkpoint after cells (forked: copy-on-write), a snapshot at stop."""

    def __init__(self, shell, config: Config) -> None:
        self.shell = shell
        self.config = config
        self.store = Store(config)
        self.notices: list[str] = []
        self.running = False  # a cell is running (set and cleared by IPython's events)
        self.cell_lock = threading.Lock()  # a fork happens between cells, never during one
        self.child: int | None = None
        self.child_started = 0.0
        self.next_allowed = 0.0
        self.pending = False
        self.paused: str | None = None
        self.execution_count = shell.execution_count
        self.wake = threading.Event()
        self.restored: set[str] = set()
        self.exiting = False  # at_exit ran: no checkpoint is taken any more

    # --- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.dir.mkdir(parents=True, exist_ok=True)
        self.store.dir.chmod(0o700)
        if self.config.restore:
            self.restore()
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        if self.config.checkpoints:
            threading.Thread(target=self._checkpointer, name="kernel-state", daemon=True).start()
        atexit.register(self.at_exit)

    def restore(self) -> None:
        report = Report(time.time(), [], {})
        try:
            manifest, skipped = load(self.store, self.shell.user_ns)
            report.restored = [e.name for e in manifest.entries if e.name not in skipped]
            self.restored = set(report.restored)
            report.skipped = skipped
            report.snapshot_written, report.snapshot_reason = manifest.written, manifest.reason
            self.shell.execution_count = self.execution_count = max(manifest.execution_count, 1)
            history = self.shell.history_manager
            if manifest.inputs and history is not None:
                history.input_hist_parsed[:] = ["", *manifest.inputs]
                history.input_hist_raw[:] = ["", *manifest.inputs]
        except FileNotFoundError:
            pass  # no cell ever ended in it: nothing to load
        except Exception as exc:  # noqa: BLE001 - the kernel starts empty, and says so
            report.failure = f"{type(exc).__name__}: {str(exc)[:200]}"
        with contextlib.suppress(OSError):
            self.store.write_json(RESTORED, report)
        self.notices.append(report.notice())
        self._log(report.notice())

    # --- cells ----------------------------------------------------------------------------------

    def _unhide(self) -> None:
        """IPython hides what its start-up code defined from %who (and so from these snapshots): the
        restored variables are the user's, shown and saved as before."""
        hidden, namespace = self.shell.user_ns_hidden, self.shell.user_ns
        for name in self.restored:
            if name in hidden and hidden[name] is namespace.get(name):
                del hidden[name]
        self.restored = set()

    def pre_run_cell(self, info) -> None:
        if not self.running:  # (a cell whose post_run_cell never came holds it already)
            self.cell_lock.acquire()
            self.running = True
        if not getattr(info, "store_history", False):
            return  # start-up code (exec_lines), or a client's own bookkeeping: not the user's cell
        # Cells sent back to back (JupyterLab's Run All, VSCode's queue) leave the checkpointer no moment between
        # them: a checkpoint due is forked here, before this cell, or a long queue would have none until its end.
        self._fork_if_due()
        if self.restored:
            self._unhide()
        for notice in self.notices:
            print(notice, file=sys.stderr, flush=True)
        self.notices.clear()

    def post_run_cell(self, result) -> None:
        count = getattr(result, "execution_count", None)
        self.execution_count = (count + 1) if isinstance(count, int) else self.shell.execution_count
        if self.running:
            self.running = False
            self.cell_lock.release()
        if getattr(getattr(result, "info", None), "store_history", False):  # a cell, not start-up code
            self.pending = True
            self.wake.set()

    # --- checkpoints after cells ------------------------------------------------------------------

    def _checkpointer(self) -> None:
        """Forks a checkpoint once a cell has ended, while no cell runs, one at a time, at most DUTY of
        the time: a checkpoint that took D seconds is followed by the next no sooner than D/DUTY - D."""
        while True:
            if self.child:
                timeout = 0.5
            elif self.pending:
                timeout = max(0.0, self.next_allowed - time.monotonic())
            else:
                timeout = None
            self.wake.wait(timeout)
            self.wake.clear()
            self._turn()

    def _turn(self) -> None:
        """One turn of the checkpointer: the last checkpoint's child reaped, the next forked if due."""
        self._reap()
        if self._due():
            with self.cell_lock:  # waits while a cell runs
                self._fork_if_due()

    def _due(self) -> bool:
        """A cell ended since the last checkpoint, none is being written, the duty limit allows one now, and the
        kernel is not exiting."""
        return self.pending and not self.child and not self.exiting and time.monotonic() >= self.next_allowed

    def _fork_if_due(self) -> None:
        """A checkpoint, if one is due; called with cell_lock held (between cells)."""
        if self._due():
            self.pending = False
            self._fork()

    def _fork(self) -> None:
        namespace = user_variables(self.shell, self.restored)
        inputs = list(getattr(self.shell.history_manager, "input_hist_raw", [""]))[1:]
        count = self.execution_count
        self.child_started = time.monotonic()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "use of fork() may lead to deadlocks"
            pid = os.fork()
        if pid == 0:  # the child: the namespace as the cell left it, copy-on-write
            code = 1
            try:
                signal.alarm(CHILD_TIMEOUT)
                sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child _exits
                code = self.checkpoint(namespace, "checkpoint", count, inputs)
            finally:
                os._exit(code)
        self.child = pid

    def checkpoint(self, namespace: dict, reason: str, count: int, inputs: list[str]) -> int:
        """Save; record the outcome for `notebookctl kernels`. 0: saved, 3: paused at the floor, 1: failed."""
        status: dict = {"at": time.time(), "reason": reason}
        started = time.monotonic()
        try:
            if not self.store.dir.is_dir():
                return 1  # the kernel's state was dropped meanwhile
            with self.store.locked():
                manifest = save(self.store, namespace, reason, count, inputs)
            status.update(ok=True, size=manifest.size, variables=len(manifest.entries),
                          skipped=manifest.skipped, took=time.monotonic() - started)
            code = 0
        except FloorReached as exc:
            status.update(ok=False, paused=str(exc))
            code = 3
        except Exception as exc:  # noqa: BLE001 - the previous snapshot stays in force
            status.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            code = 1
        with contextlib.suppress(OSError):
            _write_file(self.store.dir / STATUS, [json.dumps(status).encode()], fsync=False)
        return code

    def _reap(self) -> None:
        child = self.child  # (at_exit, in the main thread, may end and reap it meanwhile)
        if not child:
            return
        try:
            pid, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            self.child = None
            return
        if pid == 0:
            if time.monotonic() - self.child_started > CHILD_TIMEOUT:
                os.kill(child, signal.SIGKILL)
            return
        took = time.monotonic() - self.child_started
        self.child = None
        self.next_allowed = time.monotonic() + took * (1 / DUTY - 1)
        code = os.waitstatus_to_exitcode(status)
        if code == 3 and not self.paused:
            self.paused = self._status_text("paused")
            self.notices.append(f"persistent-notebooks: checkpoints of this kernel are paused: {self.paused}. "
                                "Free space on the state volume (or lower KERNEL_STATE_FREE_FLOOR); they go on "
                                "by themselves once there is room.")
            self._log(self.notices[-1])
        elif code == 0 and self.paused:
            self.paused = None
            self.notices.append("persistent-notebooks: checkpoints of this kernel go on again.")

    def _status_text(self, key: str) -> str:
        try:
            return json.loads((self.store.dir / STATUS).read_text()).get(key) or "?"
        except (OSError, ValueError):
            return "?"

    # --- stop -------------------------------------------------------------------------------------

    def at_exit(self) -> None:
        """The kernel ends: no checkpoint is forked from now on; when the container is stopping and no cell was cut
        short, save everything now.

        The checkpointer thread runs on through the interpreter's exit, and IPython's own exit handler, which runs
        after this one, empties the namespace name by name: a checkpoint deferred by the duty limit that fell due then
        replaced the stop snapshot with what was left of it."""
        if not self.running:  # (else this thread holds the lock: the cell was cut short)
            self.cell_lock.acquire(timeout=10)  # a fork under way has set self.child by then; never released
        self.exiting = True
        if not (self.config.at_stop and os.path.exists(self.config.stop_marker)):
            return
        if self.running:
            self._end_child()
            self._log("persistent-notebooks: a cell was running at stop: the kernel's last checkpoint is kept")
            return
        marker = self.store.dir / WRITING
        try:
            # First the mark (the keeper then waits up to 40 s rather than 8), then the checkpoint's child ended: on a
            # busy disk, a child killed in the middle of a write may take seconds to go.
            with contextlib.suppress(OSError):
                marker.touch()
            self._end_child()
            inputs = list(getattr(self.shell.history_manager, "input_hist_raw", [""]))[1:]
            started = time.monotonic()
            code = self.checkpoint(user_variables(self.shell, self.restored), "stop", self.shell.execution_count,
                                   inputs)
            self._log(f"persistent-notebooks: kernel {self.config.kernel_id}: state saved at stop "
                      f"({'ok' if code == 0 else 'failed: see ' + STATUS}, {time.monotonic() - started:.1f} s)")
        finally:
            marker.unlink(missing_ok=True)

    def _end_child(self) -> None:
        child = self.child  # (the checkpointer thread may reap it meanwhile)
        if child:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            self.child = None

    @staticmethod
    def _log(text: str) -> None:
        with contextlib.suppress(Exception):
            sys.__stderr__.write(text + "\n")
            sys.__stderr__.flush()


def install(shell, environ=os.environ) -> KernelState | None:
    """Called by /etc/ipython/kernel_state.py in every kernel; nothing when the kernel has no Config
    (started outside the stack's Jupyter server)."""
    config = Config.from_env(environ)
    if config is None or not (config.checkpoints or config.at_stop or config.restore):
        return None
    state = KernelState(shell, config)
    state.start()
    return state
