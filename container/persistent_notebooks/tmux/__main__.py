"""The named tmux session: kept alive, saved to the state volume, and rebuilt from the save.

  python -m persistent_notebooks.tmux keep-session   (supervisord's tmux-session) create the session
        when it is missing, from the last save when the tmux server is new (container start,
        kill-server), then wait as a control-mode client until the session or the server goes
  python -m persistent_notebooks.tmux save           (supervisord's tmux-saver) save the session now:
        every 30 s and once more when it is stopped, while tmux still runs

What is saved, as tmux-resurrect does: each window's index, name (and whether tmux names it), layout
and size, and for each pane its index, working directory and the last SCROLLBACK_LINES lines of its
scrollback as text with colours. A rebuilt pane prints its saved text and then starts a fresh login
shell: programs are not run again. TMUX_RESTORE=false turns saving and rebuilding off.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager

from .. import paths, settings
from ..log import log
from ..tmuxctl import tmux

SCROLLBACK_LINES = 10_000
WORKSPACE = str(settings.WORKSPACE)
# Server-wide marker: the session was made on this tmux server already. Its absence means a new
# server (container start or kill-server): the time to rebuild from the save. A session its user
# ended on purpose (exit, kill-session) comes back fresh instead.
MARKER = "@persistent-notebooks-made"
FIELDS = ("window_index", "window_active", "automatic-rename", "window_width", "window_height",
          "window_layout", "pane_index", "pane_active", "pane_id", "pane_current_path", "window_name")
FORMAT = "\t".join(f"#{{{field}}}" for field in FIELDS)


@contextmanager
def locked():
    """One save or restore at a time (the saver must not save a half-rebuilt session)."""
    save_dir = paths.private_dir(paths.TMUX_SAVE_FILE.parent)
    with open(save_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield save_dir


# --- save --------------------------------------------------------------------------------------

def snapshot(name: str) -> dict | None:
    listing = tmux("list-panes", "-s", "-t", f"={name}", "-F", FORMAT)
    if listing.returncode != 0:
        return None
    windows: dict[int, dict] = {}
    for line in listing.stdout.splitlines():
        values = dict(zip(FIELDS, line.split("\t", len(FIELDS) - 1), strict=False))
        if len(values) < len(FIELDS):
            continue
        window = windows.setdefault(int(values["window_index"]), {
            "index": int(values["window_index"]),
            "name": values["window_name"],
            "automatic_rename": values["automatic-rename"] in ("1", "on"),
            "active": values["window_active"] == "1",
            "width": int(values["window_width"]),
            "height": int(values["window_height"]),
            "layout": values["window_layout"],
            "panes": [],
        })
        text = tmux("capture-pane", "-p", "-e", "-J", "-S", f"-{SCROLLBACK_LINES}", "-t", values["pane_id"]).stdout
        window["panes"].append({
            "index": int(values["pane_index"]),
            "active": values["pane_active"] == "1",
            "path": values["pane_current_path"],
            "text": text.rstrip("\n"),
        })
    for window in windows.values():
        window["panes"].sort(key=lambda pane: pane["index"])
    return {"session": name, "saved": time.time(), "windows": sorted(windows.values(), key=lambda w: w["index"])}


def save(name: str) -> bool:
    """Save the session; with no session there is nothing to save and the last save stays."""
    with locked():
        state = snapshot(name)
        if state is None or not state["windows"]:
            return False
        paths.write_private(paths.TMUX_SAVE_FILE, json.dumps(state))
    return True


# --- restore -----------------------------------------------------------------------------------

def pane_command(text_file: str) -> str:
    quoted = shlex.quote(text_file)
    return f"cat {quoted} 2>/dev/null; rm -f {quoted}; exec bash -l"


def restore(name: str) -> bool:
    """Build the session from the last save; False when there is no usable save."""
    with locked() as save_dir:
        try:
            state = json.loads(paths.TMUX_SAVE_FILE.read_text())
            windows = state["windows"]
        except (OSError, ValueError, KeyError):
            return False
        if not windows:
            return False
        texts = paths.private_dir(save_dir / "panes")

        def command(window: dict, pane: dict) -> str:
            path = texts / f"{window['index']}.{pane['index']}.txt"
            path.write_text(pane["text"] + "\n" if pane["text"] else "")
            return pane_command(str(path))

        def directory(pane: dict) -> str:
            return pane["path"] if os.path.isdir(pane["path"]) else WORKSPACE

        first = windows[0]
        made = tmux("new-session", "-d", "-s", name, "-x", str(first["width"]), "-y", str(first["height"]),
                    "-n", first["name"], "-c", directory(first["panes"][0]), command(first, first["panes"][0]))
        if made.returncode != 0:
            log(f"could not rebuild tmux session {name!r}: {made.stderr.strip()}")
            return False
        base = tmux("display-message", "-p", "-t", f"={name}:", "#{window_index}").stdout.strip()
        if base and int(base) != first["index"]:
            tmux("move-window", "-s", f"={name}:{base}", "-t", f"={name}:{first['index']}")
        for window in windows:
            target = f"={name}:{window['index']}"
            if window is not first:
                tmux("new-window", "-d", "-t", target, "-n", window["name"],
                     "-c", directory(window["panes"][0]), command(window, window["panes"][0]))
            for pane in window["panes"][1:]:
                tmux("split-window", "-d", "-t", target, "-c", directory(pane), command(window, pane))
                tmux("select-layout", "-t", target, "tiled")  # room for the next split
            tmux("select-layout", "-t", target, window["layout"])
            if window["automatic_rename"]:
                tmux("set-option", "-w", "-t", target, "automatic-rename", "on")
            active = next((p for p in window["panes"] if p["active"]), None)
            if active is not None:
                tmux("select-pane", "-t", f"{target}.{active['index']}")
        active_window = next((w for w in windows if w["active"]), first)
        tmux("select-window", "-t", f"={name}:{active_window['index']}")
    panes = sum(len(w["panes"]) for w in windows)
    log(f"rebuilt tmux session {name!r} from the save of {time.ctime(state.get('saved', 0))}: "
        f"{len(windows)} window(s), {panes} pane(s)")
    return True


# --- supervised programs -------------------------------------------------------------------------

def keep_session() -> int:
    name = settings.session_name()
    delay, last_error = 0.05, ""
    while True:
        probe = tmux("has-session", "-t", f"={name}")
        if probe.returncode == 0:
            break
        server_up = "no server running" not in probe.stderr and "error connecting" not in probe.stderr
        if server_up:
            new_server = tmux("show-options", "-gqv", MARKER).stdout.strip() == ""
            if new_server and settings.tmux_restore() and restore(name):
                tmux("set-option", "-g", MARKER, "1")
                break
            made = tmux("new-session", "-d", "-s", name, "-c", WORKSPACE)
            if made.returncode == 0:
                tmux("set-option", "-g", MARKER, "1")
                log(f"created tmux session {name!r}")
                break
            if "duplicate session" not in made.stderr and made.stderr != last_error:
                log(f"could not create tmux session {name!r}: {made.stderr.strip()}")  # once per new error
                last_error = made.stderr
        time.sleep(delay)
        delay = min(delay * 2, 1.0)  # back off: a server that never comes costs nothing
    # A control-mode client of the session: it exits the moment the session or the tmux server
    # goes, and supervisord runs this again at once. No polling while all is well.
    os.execvp("tmux", ["tmux", "-N", "-C", "attach-session", "-f", "ignore-size,no-output,read-only",
                       "-t", f"={name}"])
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "keep-session":
        return keep_session()
    if command == "save":
        if not settings.tmux_restore():
            return 0  # TMUX_RESTORE=false: nothing is saved
        return 0 if save(settings.session_name()) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
