"""Which module scripts/test's workers get next: the longest left (so that no worker ends the run with a long one
begun late), a module's tests on one worker (`--dist loadfile`), the two hub modules as one unit."""

from __future__ import annotations

from pathlib import Path

from xdist.scheduler import LoadFileScheduling

# The modules that take longest (their tests' time summed, from a run's --durations; a group by its modules' sum),
# longest first. The rest follow in the order of collection.
LONGEST_FIRST = ("test_hub.py", "test_runs.py", "test_damage.py", "test_benchmark.py", "test_survival.py",
                 "test_environments.py", "test_kernel_restore.py", "test_every_line.py", "test_away.py",
                 "test_browser.py", "test_restarts.py", "test_hardening.py", "test_bad_input.py")

# Modules that run one after the other on one worker, as one unit: the two hubs share their images and must not run
# at once (conftest's hub_turn), and a worker waiting for the other's turn stood idle.
GROUPS = {"test_hub.py": "hub", "test_hub_swarm.py": "hub"}


def rank(scope: str) -> int:
    """A unit's place in LONGEST_FIRST (a group: its first module's), or after all of them."""
    modules = [module for module, group in GROUPS.items() if group == scope] or [Path(scope).name]
    return min(LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
               for module in modules)


class LongestFirst(LoadFileScheduling):
    """`--dist loadfile` with GROUPS' modules as one unit, the longest unit left handed out first."""

    def _split_scope(self, nodeid: str) -> str:
        module = super()._split_scope(nodeid)
        return GROUPS.get(Path(module).name, module)

    def _assign_work_unit(self, node) -> None:
        # The workers' collections are in file order (pytest's order on a worker); the queue follows it.
        self.workqueue.move_to_end(min(self.workqueue, key=rank), last=False)
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadfile` (scripts/test), LongestFirst. (pytest-xdist's own `loadgroup` marks tests by
    rewriting their node ids, which pytest 9 no longer reads.)"""
    return LongestFirst(config, log) if config.getvalue("dist") == "loadfile" else None
