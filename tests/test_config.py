"""Static checks: devcontainer.json against the official schema, compose.yaml, and lint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from stack import COMPOSE_FILE, REPO, STACK_VARIABLES

SCHEMA = REPO.parent / "shared" / "schemas" / "devContainer.base.schema.json"
DEVCONTAINER = REPO / ".devcontainer.json"


def compose_config(env: dict[str, str] | None = None, compose_file: Path = COMPOSE_FILE) -> dict:
    """compose.yaml as `docker compose config` resolves it with no .env and only the given variables
    (the caller's own NOTEBOOK_PORT and friends do not leak in)."""
    clean = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
    result = subprocess.run(
        ["docker", "compose", "--env-file", "/dev/null", "-f", str(compose_file), "config", "--format", "json"],
        capture_output=True, text=True, env={**clean, **(env or {})})
    assert result.returncode == 0, f"docker compose config refused compose.yaml:\n{result.stderr}"
    return json.loads(result.stdout)


def load_jsonc(text: str) -> object:
    """JSON with comments and trailing commas, as VSCode reads devcontainer.json."""
    text = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', lambda m: m.group(1) or "", text, flags=re.S)
    text = re.sub(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])', lambda m: m.group(1) or m.group(2), text)
    return json.loads(text)


def test_devcontainer_reuses_the_running_stack():
    """.devcontainer.json should name this compose file and service and never stop, rebuild or recreate it."""
    config = load_jsonc(DEVCONTAINER.read_text())
    files = config["dockerComposeFile"]
    for name in [files] if isinstance(files, str) else files:
        assert (DEVCONTAINER.parent / name).resolve() == COMPOSE_FILE, name
    assert config["service"] in compose_config()["services"]
    assert config["shutdownAction"] == "none" and config["workspaceFolder"] == "/workspace"
    assert config["overrideCommand"] is False, "VSCode must keep the image's entrypoint (supervisord)"
    assert config["updateRemoteUserUID"] is False, "VSCode must not rebuild and recreate the running container"
    assert "customizations" not in config, "VSCode settings belong in one place: the image's metadata label"


def test_devcontainer_passes_the_official_schema():
    """.devcontainer.json should pass the official devcontainer schema."""
    if not SCHEMA.is_file():
        pytest.skip(f"the official schema is not at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text())
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(load_jsonc(DEVCONTAINER.read_text())))
    assert not errors, "\n".join(e.message for e in errors)


def test_image_metadata_label_carries_the_vscode_settings():
    """The image's devcontainer.metadata label should set the user, extensions and the tmux terminal."""
    dockerfile = (REPO / "Dockerfile").read_text()
    raw = re.search(r'devcontainer\.metadata="((?:\\.|[^"\\])*)"', dockerfile).group(1)
    (label,) = json.loads(raw.replace('\\"', '"'))
    assert label["remoteUser"] == "notebook"
    vscode = label["customizations"]["vscode"]
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(vscode["extensions"])
    settings = vscode["settings"]
    assert settings["terminal.integrated.defaultProfile.linux"] == "tmux"
    assert settings["terminal.integrated.profiles.linux"]["tmux"]["args"] == ["attach"]
    assert settings["terminal.integrated.automationProfile.linux"]["path"] == "/bin/bash"


def test_config_does_not_depend_on_who_runs_compose():
    """The service's config should be the same for any USER, sudo or login: only .env and chosen variables."""
    configs = [compose_config({"USER": user, "LOGNAME": user, "SUDO_USER": user})
               for user in ("alice", "root", "john.doe")]
    assert configs[0] == configs[1] == configs[2], "the container's config changes with the caller"
    assert "TMUX_SESSION" not in {k for k, v in configs[0]["services"]["notebooks"]["environment"].items()
                                  if v is not None}, "the default session name must come from notebookctl only"


def test_checkouts_in_other_folders_get_stacks_of_their_own(tmp_path):
    """A checkout in another folder should get its own project, so never another checkout's container or state."""
    names = []
    for folder in ("persistent-notebooks", "pn-second"):
        checkout = tmp_path / folder
        checkout.mkdir()
        shutil.copy(COMPOSE_FILE, checkout / "compose.yaml")
        names.append(compose_config(compose_file=checkout / "compose.yaml")["name"])
    assert names == ["persistent-notebooks", "pn-second"], names
    assert compose_config({"COMPOSE_PROJECT_NAME": "mine"})["name"] == "mine"


def test_compose_config_is_accepted_with_no_configuration():
    """`docker compose config` should accept compose.yaml with no .env and safe defaults."""
    service = compose_config()["services"]["notebooks"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in service["ports"]] == [("127.0.0.1", "8888", 8888)]
    assert service["restart"] == "unless-stopped"
    assert "JUPYTER_TOKEN" not in {k for k, v in service["environment"].items() if v is not None}


def test_stop_grace_period_outlasts_supervisord():
    """Compose's stop grace period should be longer than supervisord's stop waits, added up."""
    conf = (REPO / "supervisord.conf").read_text()
    waits = [int(w) for w in re.findall(r"^stopwaitsecs=(\d+)", conf, re.M)]
    assert len(waits) == len(re.findall(r"^\[(?:program|eventlistener):", conf, re.M)), \
        "every program should set stopwaitsecs"
    grace = compose_config()["services"]["notebooks"]["stop_grace_period"]
    if isinstance(grace, str):  # compose writes a Go duration: "45s", "1m0s"
        minutes, secs = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", grace).groups()
        seconds = 60 * int(minutes or 0) + int(secs or 0)
    else:
        seconds = int(grace) / 1e9
    assert seconds > sum(waits), f"stop_grace_period {grace} <= {sum(waits)} s of supervisord waits"


def test_memory_limit_is_optional_and_applies():
    """NOTEBOOK_MEMORY_LIMIT should be off by default and become the container's memory limit when set."""
    assert not compose_config()["services"]["notebooks"].get("mem_limit")
    limited = compose_config({"NOTEBOOK_MEMORY_LIMIT": "2g"})["services"]["notebooks"]
    assert int(limited["mem_limit"]) == 2 * 2**30


def test_gpu_override_requests_nvidia_gpus():
    """compose.gpu.yaml should pass `docker compose config` and request all NVIDIA GPUs for notebooks only."""
    clean = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
    result = subprocess.run(
        ["docker", "compose", "--env-file", "/dev/null", "-f", str(COMPOSE_FILE), "-f", str(REPO / "compose.gpu.yaml"),
         "config", "--format", "json"], capture_output=True, text=True, env=clean)
    assert result.returncode == 0, f"docker compose config refused compose.gpu.yaml:\n{result.stderr}"
    services = json.loads(result.stdout)["services"]
    devices = services["notebooks"]["deploy"]["resources"]["reservations"]["devices"]
    assert [(d["driver"], d["count"], "gpu" in d["capabilities"]) for d in devices] == [("nvidia", -1, True)], devices
    assert "deploy" not in services["check"], "the one-shot check needs no GPU"
    assert services["notebooks"]["environment"] == compose_config()["services"]["notebooks"]["environment"]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed (scripts/test installs it from tests/requirements.txt)"
    return found


def python_files() -> list[str]:
    scripts = [p for p in (REPO / "scripts").iterdir()
               if p.is_file() and p.read_text().startswith("#!/usr/bin/env python3")]
    return [str(p) for p in scripts]


def test_lint_python():
    """ruff should find nothing in the Python code, extension-less programs included."""
    result = subprocess.run([tool("ruff"), "check", str(REPO), *python_files()], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_dockerfile_and_shell():
    """hadolint should pass the Dockerfile and shellcheck the shell scripts."""
    command = [tool("hadolint"), "--no-color", str(REPO / "Dockerfile"), str(REPO / "hub" / "Dockerfile"),
               str(REPO / "hub" / "kubernetes" / "Dockerfile")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    shell = [str(REPO / p) for p in (".ci/run", "container/profile.sh", "container/apt-install",
                                     "container/healthcheck", "container/add-notebook-user")]
    result = subprocess.run([tool("shellcheck"), *shell], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
