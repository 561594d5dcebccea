"""`notebookctl env ...` and `notebookctl kernels ...` (notebookctl runs this with the image's venv)."""

from __future__ import annotations

import argparse
import json
import sys

from . import envs, usage

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
Which kernel holds the RAM.

  kernels [--json]
        one line per kernel: notebook, kernel name, state, clients, idle for, memory (PSS and RSS of
        the kernel and what it started), CPU; then the total against the container's memory limit
  kernels stop ID|PATH...
        shut these kernels down cleanly (kernel id or its first characters, or notebook path)
  kernels stop --idle-for 2d
        shut down every kernel idle for at least this long (s, m, h, d, w)
"""


def env_main(argv: list[str]) -> int:
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
        found = envs.all_environments()
        if args.json:
            print(json.dumps([{"kernel": e.kernel_name, "environment": e.label, "prefix": str(e.prefix),
                               "source": e.source, "python": e.python_version} for e in found], indent=1))
        elif not found:
            print("no environments yet: notebookctl env create NAME [PACKAGES...]")
        else:
            rows = [["KERNEL", "PYTHON", "SOURCE", "LOCATION"]]
            rows += [[e.kernel_name, e.python_version, e.source, str(e.prefix)] for e in found]
            print("\n".join(usage.columns(rows)))
    else:
        print(f"removed {envs.remove(args.name)}")
    return 0


def kernels_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notebookctl kernels", description=KERNELS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="machine-readable (bytes, seconds)")
    parser.add_argument("--total", action="store_true", help="only the total and the 80%% warning")
    parser.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    parser.add_argument("targets", nargs="*", help="with stop: kernel ids (or their start) or notebook paths")
    parser.add_argument("--idle-for", metavar="DURATION", help="with stop: every kernel idle this long (2d, 6h)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        if not args.targets and args.idle_for is None:
            parser.error("kernels stop needs kernel ids, notebook paths or --idle-for DURATION")
        stopped = usage.stop(args.targets, args.idle_for)
        if args.json:
            print(json.dumps(stopped, indent=1))
        for item in stopped if not args.json else []:
            print(f"stopped {item['id'][:8]} {', '.join(p for p in item['notebooks'] if p) or '(no notebook)'}"
                  f" ({item['reason']})")
        if not stopped and not args.json:
            print("no kernel matched; nothing stopped")
        return 0
    if args.targets or args.idle_for is not None:
        parser.error("ids, paths and --idle-for go with `kernels stop`")
    data = usage.collect()
    if args.total and not args.json:
        print("\n".join(usage.total_lines(data["total"])))
    else:
        print(json.dumps(data, indent=1) if args.json else usage.table(data))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"env": env_main, "kernels": kernels_main}
    if not argv or argv[0] not in commands:
        print(ENV_HELP + "\n" + KERNELS_HELP, file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except (envs.EnvError, usage.UsageError) as exc:
        print(f"notebookctl {argv[0]}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
