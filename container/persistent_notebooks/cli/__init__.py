"""`notebookctl`, the container's command line (/opt/venv/bin/notebookctl, also run by the one-shot
check and VSCode's terminal profile).

Each command imports only what it needs, so that the entrypoint and the check start quickly.
"""

from __future__ import annotations

import sys

USAGE = """\
usage: notebookctl COMMAND [ARGS...]

  url                 the URL to paste into VSCode's "Existing Jupyter Server" (or open in a browser)
  token               the token alone
  attach              attach to the named tmux session
  health              what the watchdog found on its last round (exit 1 unless all is well)
  env ...             Python environments as kernels: env create NAME [PKG...], env list, env remove NAME
  kernels ...         kernels with their notebooks and memory; kernels stop ID|PATH|--idle-for 2d
  run NOTEBOOK        run a notebook server-side in its kernel, outputs into the file (--wait, --stop)
  runs                runs going on and finished (--json, --wait RUN)

The container's own: check, prepare-workspace, terminal (JupyterLab's terminals; see
persistent_notebooks/cli/setup.py).
"""

SETUP = ("check", "prepare-workspace", "attach", "terminal", "url", "token", "health")
WORK = ("env", "kernels", "run", "runs")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command in SETUP:
        from ..settings import SettingError
        from . import setup

        try:
            return getattr(setup, "cmd_" + command.replace("-", "_"))(argv[1:])
        except SettingError as exc:
            setup.log(f"error: {exc}")
            return 78  # EX_CONFIG
    if command in WORK:
        from . import commands

        return commands.main(argv)
    print(USAGE, file=sys.stderr)
    return 2
