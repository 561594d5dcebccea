"""Python environments as kernels (notebookctl env, discovered .venv folders) and the kernel list with
memory (notebookctl kernels), on a stack of this module's own: it is taken down and up, and
`kernels stop --idle-for` would stop other tests' kernels on a shared one."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator

import pytest
from conftest import own_stack
from kernelclient import KernelConnection, api, shutdown_kernel, start_kernel
from stack import Stack, wait_for

ENVS = "/var/lib/persistent-notebooks/envs"
# Small, pure Python, and not in the image's own environment.
PACKAGE, MODULE = "iniconfig==2.1.0", "iniconfig"
MEMORY_LIMIT = "2g"  # for the 80 % warning


@pytest.fixture(scope="module")
def env_stack(test_image, env_file, tmp_path_factory) -> Iterator[Stack]:
    # TMUX_SESSION unset: the default, as a user without .env has it
    with own_stack(test_image, env_file, tmp_path_factory, "envs", unset=("TMUX_SESSION",),
                   NOTEBOOK_MEMORY_LIMIT=MEMORY_LIMIT) as stack:
        yield stack


def notebookctl(stack: Stack, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return stack.exec("notebookctl", *args, check=check, timeout=timeout)


def kernelspecs(stack: Stack) -> dict:
    return api(stack.base_url, stack.token(), "/api/kernelspecs")["kernelspecs"]


@contextlib.contextmanager
def kernel_of(stack: Stack, kernel_name: str) -> Iterator[str]:
    """A kernel of this kernelspec, shut down afterwards; its id."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token, kernel_name)
    try:
        yield kernel_id
    finally:
        shutdown_kernel(stack.base_url, token, kernel_id)


def run_in(stack: Stack, kernel_name: str, code: str) -> dict:
    """Start a kernel of this kernelspec, run code in it, shut it down; the output."""
    with kernel_of(stack, kernel_name) as kernel_id, \
            KernelConnection(stack.base_url, stack.token(), kernel_id) as kernel:
        return kernel.execute(code)


def test_default_session_name_without_settings(env_stack: Stack):
    """Container should run the tmux session persistent-notebooks when TMUX_SESSION is not set."""
    assert "TMUX_SESSION" not in env_stack.variables
    assert env_stack.session_exists("persistent-notebooks"), env_stack.exec("tmux", "-N", "ls", check=False).stdout


def test_env_create_offers_a_kernel_in_that_environment(env_stack: Stack):
    """env create should make a kernel that runs in the new environment and imports its package."""
    made = notebookctl(env_stack, "env", "create", "tools", PACKAGE)
    assert made.stdout.strip() == "tools", made.stdout + made.stderr
    spec = kernelspecs(env_stack).get("tools")
    assert spec, f"kernel 'tools' not offered: {sorted(kernelspecs(env_stack))}"
    assert spec["spec"]["display_name"].endswith("(tools)")
    out = run_in(env_stack, "tools", f"import shutil, subprocess, sys, {MODULE}\n"
                 "pip = subprocess.run([sys.executable, '-m', 'pip', '--version'], capture_output=True, text=True)\n"
                 "print(sys.prefix, shutil.which('python'), pip.stdout)")
    assert out["error"] is None, out
    parts = out["stdout"].split(maxsplit=2)
    assert len(parts) == 3, f"no pip in the environment (%pip install would fail): {out}"
    prefix, python, pip = parts
    assert (prefix, python) == (f"{ENVS}/tools", f"{ENVS}/tools/bin/python"), out
    assert f"{ENVS}/tools/" in pip, f"%pip would not install into the environment: {pip}"
    base = run_in(env_stack, "python3", f"import {MODULE}")
    assert base["error"] and "ModuleNotFoundError" in base["error"], f"the base kernel imported {MODULE}: {base}"
    listed = json.loads(notebookctl(env_stack, "env", "list", "--json").stdout)
    assert {"kernel": "tools", "source": "env"}.items() <= next(e for e in listed if e["kernel"] == "tools").items()


def test_env_create_of_a_missing_package_leaves_nothing(env_stack: Stack):
    """env create with a package that does not exist should fail clearly and leave no environment or kernel."""
    result = notebookctl(env_stack, "env", "create", "ghost", "no-such-package-persistent-notebooks==1.0",
                         check=False)
    assert result.returncode != 0
    assert "no-such-package-persistent-notebooks" in result.stderr, result.stderr
    assert "could not install the packages" in result.stderr and "Nothing was left behind" in result.stderr
    left = env_stack.exec("ls", "-A", ENVS).stdout.split()
    assert "ghost" not in left and not [n for n in left if n.startswith(".")], f"left behind in {ENVS}: {left}"
    assert "ghost" not in kernelspecs(env_stack)
    bad = notebookctl(env_stack, "env", "create", "Bad Name", check=False)
    assert bad.returncode == 1 and "not a valid environment name" in bad.stderr, bad.stderr


def test_workspace_venv_is_discovered_and_forgotten(env_stack: Stack):
    """A .venv with ipykernel made by hand under /workspace should be a kernel until it is deleted."""
    venv = "/workspace/proj/.venv"
    ipykernel = env_stack.exec("/opt/venv/bin/python", "-c",
                               "import importlib.metadata as m; print(m.version('ipykernel'))").stdout.strip()
    env_stack.exec("uv", "venv", "--quiet", "--python", "/usr/bin/python3", venv)
    env_stack.exec("uv", "pip", "install", "--quiet", "--python", f"{venv}/bin/python", f"ipykernel=={ipykernel}",
                   timeout=300)
    env_stack.exec("uv", "venv", "--quiet", "--python", "/usr/bin/python3", "/workspace/bare/.venv")
    specs = wait_for(lambda: (s := kernelspecs(env_stack)) and "venv-proj" in s and s, 15,
                     "the kernel venv-proj of /workspace/proj/.venv to be offered")
    assert "venv-bare" not in specs, "a .venv without ipykernel is offered as a kernel"
    out = run_in(env_stack, "venv-proj", "import sys; print(sys.prefix)")
    assert out["stdout"].strip() == venv, out
    env_stack.exec("rm", "-rf", "/workspace/proj", "/workspace/bare")
    wait_for(lambda: "venv-proj" not in kernelspecs(env_stack), 15, "venv-proj to disappear once deleted")


def test_kernels_list_memory_and_stop_only_the_idle(env_stack: Stack):
    """kernels should show notebooks and memory (with what a kernel started), stop --idle-for only the idle one."""
    token = env_stack.token()

    def session(path: str) -> str:
        body = {"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}}
        return api(env_stack.base_url, token, "/api/sessions", "POST", body)["kernel"]["id"]

    holder, worker = session("holder.ipynb"), session("sub/worker.ipynb")
    with KernelConnection(env_stack.base_url, token, holder) as a, \
            KernelConnection(env_stack.base_url, token, worker) as b:
        assert a.execute("held = b'x' * (200 * 2**20)")["error"] is None
        # ... and a process it started holds 100 MB more: the kernel's figures include it.
        child = a.execute(
            "import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', \"x = b'x' * (100 * 2**20); print('ready', flush=True);"
            " import time; time.sleep(600)\"], stdout=subprocess.PIPE, text=True)\n"
            "assert child.stdout.readline().strip() == 'ready'\nprint(child.pid)")
        assert child["error"] is None, child
        busy = b.submit("import time; time.sleep(300)")
        b.follow(busy, seconds=1)
        # After each cell the kernel forks a child for a moment to save its variables (seconds, on a loaded
        # machine): the listing counts it while it lasts. The tree must come down to the kernel and its child.
        rows: dict = {}

        def listed() -> bool:
            rows.update((r["id"], r) for r in json.loads(notebookctl(env_stack, "kernels", "--json").stdout)["kernels"])
            return rows[holder]["processes"] == 2
        try:
            wait_for(listed, 60, "the holder kernel's tree to be the kernel and the process it started")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {rows.get(holder)}") from None
        assert rows[holder]["notebooks"] == ["holder.ipynb"] and rows[worker]["notebooks"] == ["sub/worker.ipynb"]
        assert rows[holder]["pss"] >= 300 * 2**20 and rows[holder]["rss"] >= 300 * 2**20, rows[holder]
        assert rows[worker]["pss"] < 200 * 2**20, rows[worker]
        assert rows[worker]["state"] == "busy", rows[worker]
        # An independent reading of the same processes: the kernel's and its child's smaps_rollup.
        pss_kib = 0
        for pid in (rows[holder]["pid"], int(child["stdout"])):
            rollup = env_stack.exec("cat", f"/proc/{pid}/smaps_rollup").stdout
            pss_kib += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
        assert abs(rows[holder]["pss"] / 1024 - pss_kib) < 0.05 * pss_kib, (rows[holder]["pss"], pss_kib)
        text = notebookctl(env_stack, "kernels").stdout
        assert "holder.ipynb" in text and "sub/worker.ipynb" in text and "total:" in text, text

        def holder_idle_for_2s():
            row = next(r for r in json.loads(notebookctl(env_stack, "kernels", "--json").stdout)["kernels"]
                       if r["id"] == holder)
            return (row["idle_seconds"] or 0) >= 2

        wait_for(holder_idle_for_2s, 30, "the holder kernel to be idle for 2 s")
        stopped = notebookctl(env_stack, "kernels", "stop", "--idle-for", "2s").stdout
        assert "holder.ipynb" in stopped and "worker" not in stopped, stopped
        left = {k["id"] for k in api(env_stack.base_url, token, "/api/kernels")}
        assert left == {worker}, f"expected only the busy kernel left, got {left}"
    by_path = notebookctl(env_stack, "kernels", "stop", "sub/worker.ipynb").stdout
    assert worker[:8] in by_path, by_path
    assert api(env_stack.base_url, token, "/api/kernels") == []


def test_environment_kernel_survives_a_jupyter_crash(env_stack: Stack):
    """A kernel of an environment should be adopted under its id, variables kept, after kill -9 of Jupyter."""
    notebookctl(env_stack, "env", "create", "crash")
    token = env_stack.token()
    with kernel_of(env_stack, "crash") as kernel_id:
        with KernelConnection(env_stack.base_url, token, kernel_id) as kernel:
            assert kernel.execute("kept = 41")["error"] is None
        env_stack.kill_jupyter()
        env_stack.wait_api(token)
        with KernelConnection(env_stack.base_url, token, kernel_id) as kernel:
            out = kernel.execute("import sys; print(kept + 1, sys.prefix)")
    assert out["stdout"].split() == ["42", f"{ENVS}/crash"], out


def test_environment_kernel_is_restored_in_its_environment(env_stack: Stack):
    """A kernel of an environment should come back after a container restart in that environment, its variables
    (a function defined in the notebook among them) loaded."""
    notebookctl(env_stack, "env", "create", "restored")
    token = env_stack.token()
    with kernel_of(env_stack, "restored") as kernel_id:
        with KernelConnection(env_stack.base_url, token, kernel_id) as kernel:
            assert kernel.execute("kept = 41\ndef g():\n    return kept + 1")["error"] is None
        env_stack.compose("restart", timeout=180)
        env_stack.wait_healthy()
        env_stack.wait_api(token)
        with KernelConnection(env_stack.base_url, token, kernel_id) as kernel:
            out = kernel.execute("import sys; print(g(), sys.prefix)")
    assert out["stdout"].split() == ["42", f"{ENVS}/restored"], out
    assert "restored 2 of 2 variables" in out["stderr"], out


def test_environments_outlive_down_and_up(env_stack: Stack):
    """Environments and their kernels should outlive `down` and `up`; remove waits for their kernels."""
    notebookctl(env_stack, "env", "create", "kept")
    env_stack.compose("down")
    env_stack.up()
    env_stack.wait_healthy()
    assert "kept" in kernelspecs(env_stack)
    token = env_stack.token()
    kernel_id = api(env_stack.base_url, token, "/api/kernels", "POST", {"name": "kept"})["id"]
    with KernelConnection(env_stack.base_url, token, kernel_id) as kernel:
        out = kernel.execute("import sys; print(sys.prefix)")
    assert out["stdout"].strip() == f"{ENVS}/kept", out
    refused = notebookctl(env_stack, "env", "remove", "kept", check=False)
    assert refused.returncode == 1 and kernel_id[:8] in refused.stderr, "removed under a running kernel"
    shutdown_kernel(env_stack.base_url, token, kernel_id)
    wait_for(lambda: notebookctl(env_stack, "env", "remove", "kept", check=False).returncode == 0, 30,
             "env remove once its kernel is stopped")
    assert "kept" not in kernelspecs(env_stack)


def test_host_helpers_reach_env_and_kernels(env_stack: Stack):
    """scripts/env and scripts/kernels should run notebookctl's env and kernels in the stack's container."""
    listed = env_stack.run_script("env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    kernels = env_stack.run_script("kernels", "--json")
    assert kernels.returncode == 0, kernels.stderr
    assert "total" in json.loads(kernels.stdout)
    status = env_stack.run_script("status")
    assert "kernels:" in status.stdout and "total: kernels" in status.stdout, status.stdout


def test_status_warns_past_80_percent_of_the_limit(env_stack: Stack):
    """scripts/status should show the total and warn once the processes pass 80% of NOTEBOOK_MEMORY_LIMIT."""
    calm = env_stack.run_script("status")
    assert "of the 2.0 GiB limit (NOTEBOOK_MEMORY_LIMIT)" in calm.stdout and "warning" not in calm.stdout, calm.stdout
    with kernel_of(env_stack, "python3") as kernel_id, \
            KernelConnection(env_stack.base_url, env_stack.token(), kernel_id) as kernel:
        assert kernel.execute("held = b'x' * (1700 * 2**20)")["error"] is None
        status = env_stack.run_script("status")
    assert "warning: the container's processes hold" in status.stdout, status.stdout
    assert "over 80%" in status.stdout and "kernels stop" in status.stdout, status.stdout


def test_kernels_show_gpu_memory_where_nvidia_smi_reports_it(env_stack: Stack):
    """kernels should add each kernel's GPU memory from nvidia-smi, where it exists."""
    smi = "/usr/local/bin/nvidia-smi"
    with kernel_of(env_stack, "python3") as kernel_id:
        with KernelConnection(env_stack.base_url, env_stack.token(), kernel_id) as kernel:
            pid = kernel.execute("import os; print(os.getpid())")["stdout"].strip()
        assert "GPU" not in notebookctl(env_stack, "kernels").stdout.splitlines()[0]
        # No GPU here: a stand-in that answers as nvidia-smi does for one compute process.
        script = f"#!/bin/sh\necho '{pid}, 1536'\necho '999999, 512'\n"
        subprocess.run(["docker", "exec", "-u", "0", "-i", env_stack.container, "sh", "-c",
                        f"cat > {smi} && chmod 755 {smi}"], input=script, text=True, check=True)
        try:
            data = json.loads(notebookctl(env_stack, "kernels", "--json").stdout)
            text = notebookctl(env_stack, "kernels").stdout
        finally:
            subprocess.run(["docker", "exec", "-u", "0", env_stack.container, "rm", "-f", smi], check=True)
    row = next(r for r in data["kernels"] if r["id"] == kernel_id)
    assert row["gpu_memory"] == 1536 * 2**20, row
    assert data["total"]["gpu_memory"] == 2048 * 2**20, data["total"]
    assert text.splitlines()[0].split()[-1] == "GPU" and "1.5 GiB" in text, text
