"""Every environment as a kernel, in Jupyter's kernelspec list (and so in VSCode's kernel picker).

The environments themselves (made with `notebookctl env`, or a .venv in the workspace) are found by
../environments.py; this offers them to Jupyter beside the usual kernelspecs.
"""

from __future__ import annotations

import threading
import time

from jupyter_client.kernelspec import KernelSpecManager

from ..environments import SCAN_BUDGET, Environment, Scan, managed_environments, scan_workspace

# Discovery of the workspace is cached this long (VSCode asks for the kernelspecs often); an env
# made or removed with notebookctl shows at once (it is looked up directly).
SCAN_TTL = 3.0
FIRST_SCAN_WAIT = 0.5  # the first kernelspec request waits this long for the first search


class EnvironmentKernelSpecManager(KernelSpecManager):
    """The usual kernelspecs, plus one per environment (see the module's docstring).

    The workspace is searched in a thread of its own, never in a request: a request is answered from
    the last search (started again once it is SCAN_TTL old), so a workspace of 100,000 folders slows
    no request and no server start. Environments made with `notebookctl env` are looked up directly.
    """

    _lock = threading.Lock()
    _scan: Scan | None = None
    _scanned_at = 0.0
    _scanning: threading.Thread | None = None

    def _workspace(self) -> list[Environment]:
        cls = type(self)
        with cls._lock:
            due = cls._scan is None or time.monotonic() - cls._scanned_at >= SCAN_TTL
            if due and (cls._scanning is None or not cls._scanning.is_alive()):
                cls._scanning = threading.Thread(target=self._search, name="workspace-environments", daemon=True)
                cls._scanning.start()
            thread, scan = cls._scanning, cls._scan
        if scan is None and thread is not None:
            thread.join(FIRST_SCAN_WAIT)  # the very first answer waits a little for a small workspace
            scan = cls._scan
        return scan.environments if scan else []

    def _search(self) -> None:
        cls = type(self)
        try:
            scan = scan_workspace(SCAN_BUDGET)
        except Exception as exc:  # noqa: BLE001 - a failed search keeps the last result
            self.log.warning("searching the workspace for .venv environments failed: %s", exc)
            return
        if scan.seconds > 1:
            self.log.info("searched the workspace for .venv environments in %.1f s", scan.seconds)
        with cls._lock:
            cls._scan, cls._scanned_at = scan, time.monotonic()

    def environments(self) -> dict[str, Environment]:
        envs: dict[str, Environment] = {}
        for env in managed_environments() + self._workspace():
            envs.setdefault(env.kernel_name, env)
        return envs

    def find_kernel_specs(self) -> dict[str, str]:
        specs = super().find_kernel_specs()
        for name, env in self.environments().items():
            specs.setdefault(name, env.resource_dir)
        return specs

    def get_kernel_spec(self, kernel_name: str):
        env = self.environments().get(kernel_name.lower())
        if env is None or self._find_spec_directory(kernel_name.lower()) is not None:
            return super().get_kernel_spec(kernel_name)
        return self.kernel_spec_class(resource_dir=env.resource_dir, **env.kernel_dict())
