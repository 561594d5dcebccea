"""`notebookctl env|kernels|run|runs`: environments, the kernel list, server-side runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .. import settings
from ..state import runs as records
from . import runs

# `env` and `kernels` import what they need (the environments' search, psutil, Jupyter's API) when they run, so
# that `run` and `runs`, which scripts and polls call again and again, start without it.

ENV_HELP = """\
Python environments as kernels.

  env create NAME [PACKAGES...] [-r requirements.txt] [--python X.Y]
        make an environment with uv in the state volume (with ipykernel): kernel NAME appears at
        once in Jupyter and VSCode's kernel picker. Packages are cached, so a second one is quick.
  env list [--json]
        environments made here, and every .venv with ipykernel under /workspace (up to 3 folders
        down), which are offered as kernels (venv-FOLDER) without any command
  env remove NAME
        remove an environment made with env create (its kernels must be stopped first)
"""

KERNELS_HELP = """\
Which kernel holds the RAM, and what of it is saved.

  kernels [--json]
        one line per kernel: notebook, kernel name, state (and "restored N/M" after a container
        restart), clients, idle for, memory (PSS and RSS of the kernel and what it started), CPU, its
        server-side run, and its saved variables (age and size of the last checkpoint, "paused (disk)"
        below KERNEL_STATE_FREE_FLOOR); then the total against the container's memory limit
  kernels stop ID|PATH...
        shut these kernels down cleanly (kernel id or its first characters, or notebook path)
  kernels stop --idle-for 2d
        shut down every kernel idle for at least this long (s, m, h, d, w)
  kernels forget ID...
        drop a kernel's saved variables (it saves anew after its next cell)
"""


def env_main(argv: list[str]) -> int:
    from .. import environments as envs
    from . import kernels

    parser = argparse.ArgumentParser(prog="notebookctl env", description=ENV_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="make an environment and its kernel")
    create.add_argument("name")
    create.add_argument("packages", nargs="*", help="requirement specifiers, e.g. pandas 'numpy<2'")
    create.add_argument("-r", "--requirements", action="append", default=[], metavar="FILE")
    create.add_argument("--python", metavar="X.Y", help="Python version (default: the image's own)")
    listing = sub.add_parser("list", help="list environments")
    listing.add_argument("--json", action="store_true")
    remove = sub.add_parser("remove", help="remove an environment made with env create")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "create":
        env = envs.create(args.name, args.packages, args.requirements, args.python)
        print(env.kernel_name)
    elif args.command == "list":
        scan = envs.scan_workspace()
        found = envs.managed_environments() + scan.environments
        for skipped in scan.skipped:
            print(f"notebookctl env list: not searched: {skipped}", file=sys.stderr)
        if args.json:
            print(json.dumps([{"kernel": e.kernel_name, "environment": e.label, "prefix": str(e.prefix),
                               "source": e.source, "python": e.python_version} for e in found], indent=1))
        elif not found:
            print("no environments yet: notebookctl env create NAME [PACKAGES...]")
        else:
            rows = [["KERNEL", "PYTHON", "SOURCE", "LOCATION"]]
            rows += [[e.kernel_name, e.python_version, e.source, str(e.prefix)] for e in found]
            print("\n".join(kernels.columns(rows)))
    else:
        print(f"removed {envs.remove(args.name)}")
    return 0


def kernels_main(argv: list[str]) -> int:
    from . import kernels

    parser = argparse.ArgumentParser(prog="notebookctl kernels", description=KERNELS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="machine-readable (bytes, seconds)")
    parser.add_argument("--total", action="store_true", help="only the total and the 80%% warning")
    parser.add_argument("action", nargs="?", choices=["list", "stop", "forget"], default="list")
    parser.add_argument("targets", nargs="*", help="with stop: kernel ids (or their start) or notebook paths")
    parser.add_argument("--idle-for", metavar="DURATION", help="with stop: every kernel idle this long (2d, 6h)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        if not args.targets and args.idle_for is None:
            parser.error("kernels stop needs kernel ids, notebook paths or --idle-for DURATION")
        stopped = kernels.stop(args.targets, args.idle_for)
        if args.json:
            print(json.dumps(stopped, indent=1))
        for item in stopped if not args.json else []:
            print(f"stopped {item['id'][:8]} {', '.join(p for p in item['notebooks'] if p) or '(no notebook)'}"
                  f" ({item['reason']})")
        if not stopped and not args.json:
            print("no kernel matched; nothing stopped")
        return 0
    if args.action == "forget":
        if not args.targets:
            parser.error("kernels forget needs kernel ids")
        for target in args.targets:
            print(f"forgot the saved variables of kernel {kernels.forget(target)[:8]}")
        return 0
    if args.targets or args.idle_for is not None:
        parser.error("ids, paths and --idle-for go with `kernels stop`")
    data = kernels.collect()
    if args.total and not args.json:
        print("\n".join(kernels.total_lines(data["total"])))
    else:
        print(json.dumps(data, indent=1) if args.json else kernels.table(data))
    return 0


RUN_HELP = """\
Run a notebook server-side, in its kernel, its outputs saved into the file as they come.

  run NOTEBOOK [--wait] [--from N | --cells 3-9] [--kernel ID|NAME] [--keep-going]
        run the notebook's code cells in order, from the file as saved, in the kernel of its Jupyter
        session (the one VSCode or a browser is attached to); with none, a new kernel of its
        kernelspec and a session for that path. Returns once the run has started; --wait follows it
        (Ctrl-C detaches, the run goes on). Cells count from 1, markdown cells included. The run
        stops at the first error unless --keep-going. NOTEBOOK is relative to /workspace. A run that
        a container stop or crash interrupts goes on by itself once its kernel is back with its
        variables, from the cell that was running (run again from its start); --no-resume: it does not.
  run --stop NOTEBOOK|RUN
        interrupt the kernel and end the run
  run [NOTEBOOK] --kernel ID --after CELL
        what %run_on_server asks from inside a notebook: run, in that running kernel, its notebook (the
        one its session or its cells name) from the cell after CELL (the cell's id, or VSCode's cell URI;
        the cell's source on stdin, to find it by its text when its id is not in the file)
"""

RUNS_HELP = """\
Notebook runs: going on, and finished in the last 7 days.

  runs [--json] [--active]        one line per run: notebook, kernel, cell i of N, elapsed, state
  runs --wait RUN|NOTEBOOK        follow a run until it ends
"""


def run_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notebookctl run", description=RUN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", nargs="?", default="",
                        help="path relative to /workspace, or absolute under it (or a run id with --stop)")
    parser.add_argument("--wait", action="store_true", help="follow the run with a progress bar until it ends")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--from", dest="first", type=int, metavar="N", help="run from cell N to the end")
    which.add_argument("--cells", metavar="N-M", help="run cells N to M (N, N-M or N-)")
    which.add_argument("--after", metavar="CELL", help="run from the cell after CELL (its source on stdin)")
    parser.add_argument("--kernel", metavar="ID|NAME", help="a running kernel's id, or a kernel name for a new one")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining cells after an error")
    parser.add_argument("--no-resume", action="store_true",
                        help="do not go on by itself after a container restart interrupts it")
    parser.add_argument("--stop", action="store_true", help="interrupt the kernel and end the run")
    args = parser.parse_args(argv)
    if args.stop:
        if args.wait or args.first or args.cells or args.kernel or args.keep_going or args.no_resume:
            parser.error("--stop takes only the notebook or the run id")
        record = runs.request_run("stop", target=args.notebook)
        print(f"stopping run {record.id} of {record.notebook} at cell {record.cell}")
        return 0
    if args.first is not None and args.first < 1:
        parser.error("--from counts cells from 1")
    if not args.notebook and not args.kernel:
        parser.error("name the notebook to run (or, with --kernel ID, a running kernel whose notebook it is)")
    after = {"cell": args.after, "code": sys.stdin.read()} if args.after is not None else None
    record = runs.request_run("start", notebook=args.notebook, cells=args.cells, keep_going=args.keep_going,
                              kernel=args.kernel, resume=not args.no_resume, after=after, **{"from": args.first})
    print(f"run {record.id}: {record.notebook}, {record.cells_total} code cells, kernel "
          f"{(record.kernel_id or '-')[:8]} ({record.kernel_name})")
    if args.wait:
        return runs.follow(record.id)
    print(f"follow it: notebookctl runs --wait {record.id}  (or notebookctl runs; scripts/runs from the host)")
    return 0


def runs_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notebookctl runs", description=RUNS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="machine-readable (seconds since the epoch)")
    parser.add_argument("--active", action="store_true", help="only the runs going on")
    parser.add_argument("--wait", metavar="RUN|NOTEBOOK", help="follow this run until it ends")
    args = parser.parse_args(argv)
    found = records.all_runs()
    if args.wait:
        target = args.wait.removeprefix(str(settings.WORKSPACE) + "/")
        match = [r for r in found if r.id.startswith(target) or r.notebook == target]
        if not match:
            raise runs.RunsError(f"no run {args.wait!r}; see notebookctl runs")
        return runs.follow(match[0].id)
    if args.active:
        found = [r for r in found if r.state in records.ACTIVE]
    if args.json:
        print(json.dumps([{**dataclasses.asdict(r), "status": r.describe()} for r in found], indent=1))
    elif args.active and not found:
        print("no runs going on")
    else:
        print(runs.table(found))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"env": env_main, "kernels": kernels_main, "run": run_main, "runs": runs_main}
    if not argv or argv[0] not in commands:
        print(ENV_HELP + "\n" + KERNELS_HELP + "\n" + RUN_HELP + "\n" + RUNS_HELP, file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .. import environments as envs
        from . import kernels

        if not isinstance(exc, (envs.EnvError, kernels.UsageError, runs.RunsError)):
            raise
        print(f"notebookctl {argv[0]}: error: {exc}", file=sys.stderr)
        return 1


