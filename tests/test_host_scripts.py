"""The host-side helpers in scripts/: status and attach against the stack, the base image's mirror lookup."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
from pathlib import Path

from stack import REPO, TEST_GID, TEST_UID, WHEN_IDLE, Stack, docker_client


def test_status_reports_a_healthy_stack(stack: Stack):
    """scripts/status should report health, the three programs, the session and the URL, and exit 0."""
    result = stack.run_script("status")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "container: healthy" in out
    for program in ("jupyter", "tmux", "tmux-session"):
        assert any(line.split()[:2] == [program, "RUNNING"] for line in out.splitlines()), out
    for program, when_idle in WHEN_IDLE.items():  # on demand: running, or said to be at rest by design
        line = next(line for line in out.splitlines() if line.split()[:1] == [program])
        assert line.split()[1] == "RUNNING" or line.endswith(f"({when_idle})"), line
    assert stack.variables["TMUX_SESSION"] in out
    assert f"http://127.0.0.1:{stack.port}/?token=" in out
    live = docker_client().info()["LiveRestoreEnabled"]
    assert f"docker engine: live-restore {'on' if live else 'off'}" in out, out
    assert live or "/etc/docker/daemon.json" in out, "how to turn live-restore on"


def test_attach_without_a_terminal_says_so(stack: Stack):
    """scripts/attach should refuse clearly when it has no terminal, instead of hanging."""
    result = stack.run_script("attach")
    assert result.returncode == 1
    assert "needs a terminal" in result.stderr, result.stderr


def test_helpers_name_the_fix_when_the_stack_is_down(env_file, tmp_path):
    """scripts/url should say how to start the stack when it is not running."""
    stack = Stack(tmp_path, "unused:tag", env_file)
    result = stack.run_script("url")
    assert result.returncode == 1
    assert "docker compose up -d" in result.stderr, result.stderr


def load_make_base_image():
    path = REPO / "scripts" / "make-base-image"
    loader = importlib.machinery.SourceFileLoader("make_base_image", str(path))
    spec = importlib.util.spec_from_loader("make_base_image", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_base_image_mirror_comes_from_the_hosts_apt_sources(tmp_path: Path, monkeypatch):
    """make-base-image should read the Debian and security mirrors from deb822 and one-line apt sources."""
    module = load_make_base_image()
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing here\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: trixie trixie-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: trixie-security\nComponents: main\n")
    monkeypatch.setattr(module, "Path", lambda p: tmp_path / Path(p).relative_to("/etc/apt"))
    assert module.host_mirrors() == ("http://mirror.invalid/debian", "http://mirror.invalid/debian-security")

    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://other.invalid/debian bookworm main\n")
    assert module.host_mirrors() == ("http://other.invalid/debian", None)


def test_host_helpers_take_paths_as_the_host_sees_them(stack: Stack):
    """scripts/run should take the notebook as the host names it: under the workspace folder, relative to where
    the user is (tab completion gives workspace/x.ipynb) or absolute; a path outside it is refused."""
    notebook = stack.workspace / "host-path.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": None,
                                               "outputs": [], "source": "print('ran')"}],
                                    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
                                    "nbformat": 4, "nbformat_minor": 5}))
    if os.getuid() == 0:
        os.chown(notebook, TEST_UID, TEST_GID)
    for given in (os.path.relpath(notebook), str(notebook)):
        result = stack.run_script("run", given, "--wait")
        assert result.returncode == 0, f"{given}: {result.stdout}{result.stderr}"
        outputs = json.loads(notebook.read_text())["cells"][0]["outputs"]
        assert outputs and "ran" in "".join(outputs[0]["text"]), outputs
    outside = stack.run_script("run", str(REPO / "README.md"))
    assert outside.returncode != 0, outside.stdout
