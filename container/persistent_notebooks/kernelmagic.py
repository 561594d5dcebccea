"""%run_on_server, in every IPython kernel of the container: hands the rest of this kernel's notebook to the
notebook runner (`notebookctl run`), to go on in this very kernel with nobody connected. Standard library
only: it is imported by environments' kernels too, of any Python."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys

NOTEBOOKCTL = "/usr/local/bin/notebookctl"
HELP = """\
%run_on_server [NOTEBOOK] [--from N | --cells N-M] [--keep-going]

Run the rest of this notebook on the server, in this kernel: from the cell after this one (or from cell N,
or cells N to M, counted from 1 with markdown cells), as `scripts/run` does, its outputs written into the
notebook file as they come, with nobody connected. Returns at once. The notebook runs as saved on disk:
save it first (unsaved edits in the editor are not run). NOTEBOOK: when this kernel serves several.
Follow it with `scripts/runs` on the workstation (or `notebookctl runs` in a terminal)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def _parse(line: str) -> argparse.Namespace:
    parser = _Parser(prog="%run_on_server", add_help=False)
    parser.add_argument("notebook", nargs="?", default="")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--from", dest="first", type=int)
    which.add_argument("--cells")
    parser.add_argument("--keep-going", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    return parser.parse_args(shlex.split(line, comments=True))


def this_kernel() -> str | None:
    """This kernel's id, from its connection file's name (kernel-ID.json, as the server names it)."""
    try:
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return None
    if not IPKernelApp.initialized():
        return None
    found = re.search(r"kernel-([0-9a-f-]{36})\.json$", IPKernelApp.instance().connection_file or "")
    return found.group(1) if found else None


def run_on_server(line: str) -> None:
    """%run_on_server [NOTEBOOK] [--from N | --cells N-M] [--keep-going]: the rest of this notebook on the
    server (`%run_on_server --help`)."""
    from IPython import get_ipython

    try:
        args = _parse(line)
    except ValueError as exc:
        print(f"%run_on_server: {exc}. Nothing was started.\n\n{HELP}", file=sys.stderr)
        return
    if args.help:
        print(HELP)
        return
    if args.first is not None and args.first < 1:
        print("%run_on_server: --from counts cells from 1. Nothing was started.", file=sys.stderr)
        return
    kernel = this_kernel()
    if kernel is None:
        print("%run_on_server: this is not a kernel of this container's Jupyter server; run the notebook with "
              "scripts/run instead. Nothing was started.", file=sys.stderr)
        return
    command = [NOTEBOOKCTL, "run", *([args.notebook] if args.notebook else []), "--kernel", kernel]
    cell = ""
    if args.first is not None:
        command += ["--from", str(args.first)]
    elif args.cells:
        command += ["--cells", args.cells]
    else:  # from the cell after this one: the request's cellId (JupyterLab: the cell's id) and its code
        shell = get_ipython()
        parent = shell.kernel.get_parent("shell") if getattr(shell, "kernel", None) else {}
        command += ["--after", str((parent.get("metadata") or {}).get("cellId") or "")]
        cell = (parent.get("content") or {}).get("code") or ""
    if args.keep_going:
        command.append("--keep-going")
    try:
        done = subprocess.run(command, input=cell, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"%run_on_server: {exc}. Nothing was started.", file=sys.stderr)
        return
    if done.returncode != 0:
        message = re.sub(r"^(notebookctl run: error: |usage: .*\n)", "", done.stderr.strip(), flags=re.M)
        print(f"%run_on_server: {message} Nothing was started.", file=sys.stderr)
        return
    print(done.stdout.strip())
    print("It runs in this kernel once this cell ends: the notebook as saved on disk (unsaved edits are not in "
          "it), its outputs written into the file as they come, with or without an editor connected.")
