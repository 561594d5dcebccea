"""Bad settings fail `docker compose up -d` itself, with a message that names the fix; nothing starts open."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request

import pytest
from stack import Stack


def port_refuses(port: int) -> bool:
    """Nothing answers HTTP on the port (Docker's proxy may accept the connection, then drop it)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5)
    except urllib.error.HTTPError:
        return False  # something answered
    except OSError:
        return True
    return False


def refused(stack: Stack, *expected: str) -> str:
    """`up` should fail non-zero at once; the check's log names the fix; the port must refuse."""
    result = stack.up(check=False)
    assert result.returncode != 0, f"`up -d` succeeded despite the bad setting:\n{result.stderr}"
    assert 'service "check" didn\'t complete successfully' in result.stderr, result.stderr
    logs = stack.compose("logs", "--no-color", "check", check=False).stdout
    for text in expected:
        assert text in logs, f"{text!r} is not in the check's log:\n{logs}"
    assert "Traceback" not in logs, logs
    assert port_refuses(stack.port), "something answers on the port"
    state = stack.inspect()["State"]
    assert not state["Running"] and state["StartedAt"].startswith("0001"), "the service was started anyway"
    return logs


@pytest.mark.parametrize("token, says", [
    ("short-token", "at least 16"),
    ("", "is empty"),
    ("tökén-with-umlauts-0123456789", "non-ASCII"),
], ids=["short", "empty", "non-ascii"])
def test_bad_token_is_refused(make_stack, token, says):
    """`up` should refuse a short, empty or non-ASCII JUPYTER_TOKEN and say how to set one."""
    logs = refused(make_stack(JUPYTER_TOKEN=token), says, "JUPYTER_TOKEN")
    assert "error:" in logs


@pytest.mark.parametrize("name", ["bad:name", "bad.name", "", "#{session_name}", "me$HOME"],
                         ids=["colon", "dot", "empty", "format", "dollar"])
def test_bad_session_name_is_refused(make_stack, name):
    """`up` should refuse a TMUX_SESSION tmux cannot use as given, and say what to change."""
    stack = make_stack(TMUX_SESSION=name)
    refused(stack, "TMUX_SESSION", "Change TMUX_SESSION in .env" if name else "Set TMUX_SESSION in .env")


@pytest.mark.parametrize("variable, value", [
    ("JUPYTER_CULL_IDLE_TIMEOUT", "abc"), ("JUPYTER_CULL_IDLE_TIMEOUT", "1h"), ("JUPYTER_CULL_INTERVAL", "0"),
    ("JUPYTER_CULL_CONNECTED", "maybe"), ("NOTEBOOK_AWAY_BUFFER", "lots"), ("TMUX_RESTORE", "sometimes"),
])
def test_bad_tuning_value_is_refused(make_stack, variable, value):
    """A typo in a tuning variable should fail `up`, naming it, instead of Jupyter skipping its config."""
    refused(make_stack(**{variable: value}), f"{variable}={value!r}", f"{variable} in .env")


def test_read_only_workspace_is_refused_with_chmod_advice(make_stack):
    """A workspace the notebook user owns but may not write should be refused with `chmod`, not `chown`."""
    stack = make_stack()
    stack.workspace.chmod(0o555)
    try:
        logs = refused(stack, "chmod u+rwx")
        assert "chown" not in logs
    finally:
        stack.workspace.chmod(0o755)


def test_root_owned_custom_workspace_is_refused_not_chowned(make_stack):
    """A WORKSPACE the user named that belongs to root should be refused, never chowned."""
    if os.getuid() != 0:
        pytest.skip("needs root to make a root-owned folder")
    stack = make_stack()
    os.chown(stack.workspace, 0, 0)
    refused(stack, "not writable", "belongs to uid 0", "chown")
    assert stack.workspace.stat().st_uid == 0, "the custom workspace was chowned"


def test_unreadable_token_secret_is_refused_at_up(make_stack, tmp_path):
    """A token secret the notebook user cannot read (the README's override) should fail `up`, saying why."""
    if os.getuid() != 0:
        pytest.skip("needs root to make a file the notebook user cannot read")
    secret = tmp_path / "jupyter_token"
    secret.write_text("token-from-an-unreadable-secret-0123\n")
    secret.chmod(0o600)  # root's, and the container user is not root
    override = tmp_path / "compose.override.yaml"
    override.write_text("services:\n  notebooks:\n    secrets: [ca_bundle, jupyter_token]\n"
                        "  check:\n    secrets: [jupyter_token]\n"
                        f"secrets:\n  jupyter_token:\n    file: {secret}\n")
    refused(make_stack(override=override), "cannot be read by the notebook user", "chmod 644")


@pytest.mark.parametrize("path, says", [
    ("/nonexistent", "does not exist in the container"),
    ("/etc/hostname", "at least 16"),  # a readable file, but no token: the container's hostname
    ("/dev/zero", "is not a regular file"),
    ("/etc", "is a folder"),
], ids=["missing", "not-a-token", "device", "folder"])
def test_bad_token_file_is_refused_at_up(make_stack, path, says):
    """A JUPYTER_TOKEN_FILE that is missing, a device, a folder or no token should fail `up`, named as it is."""
    refused(make_stack(JUPYTER_TOKEN_FILE=path), says, path)


def test_huge_token_is_refused_at_up(make_stack):
    """A token too long for an HTTP header should fail `up` instead of every request failing later."""
    refused(make_stack(JUPYTER_TOKEN="x" * 100_000), "at most 512")


@pytest.mark.parametrize("value, says", [("100m", "below 256m"), ("6m", "below 256m")])
def test_memory_limit_too_small_is_refused_at_up(make_stack, value, says):
    """A NOTEBOOK_MEMORY_LIMIT the stack cannot start in should fail `up`, naming the minimum."""
    refused(make_stack(NOTEBOOK_MEMORY_LIMIT=value), f"NOTEBOOK_MEMORY_LIMIT={value}", says)


def test_missing_workspace_is_refused(make_stack, tmp_path):
    """`up` should refuse a WORKSPACE that does not exist instead of making a root-owned folder."""
    missing = tmp_path / "no-such-folder"
    stack = make_stack(WORKSPACE=str(missing))
    result = stack.up(check=False)
    assert result.returncode != 0
    assert str(missing) in result.stderr, result.stderr
    assert not missing.exists(), "Docker made the folder"


def test_taken_port_fails_loudly(make_stack):
    """`up` should fail, naming the port, when NOTEBOOK_PORT is taken (no silent other port)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = make_stack(NOTEBOOK_PORT=str(port))
        result = stack.up(check=False)
    assert result.returncode != 0, "the stack started on a taken port"
    assert f"127.0.0.1:{port}" in result.stderr and "already" in result.stderr, result.stderr
