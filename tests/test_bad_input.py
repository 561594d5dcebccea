"""Bad settings are refused with a message that names the fix, and nothing is started open."""

from __future__ import annotations

import os
import socket

import pytest
from stack import Stack, wait_for


def refused(stack: Stack, *expected: str) -> str:
    """Start the stack; wait for the refusal in the logs; the server must never have answered."""
    stack.up()
    logs = wait_for(lambda: all(e in (text := stack.logs()) for e in expected) and text, 60,
                    f"the refusal {expected} in the logs")
    assert "Jupyter Server" not in logs, "Jupyter started despite the bad setting"
    assert stack.health() != "healthy"
    return logs


@pytest.mark.parametrize("token, says", [
    ("short-token", "at least 16"),
    ("", "is empty"),
], ids=["short", "empty"])
def test_bad_token_is_refused(make_stack, token, says):
    """Container should refuse a short or empty JUPYTER_TOKEN and say how to set one."""
    logs = refused(make_stack(JUPYTER_TOKEN=token), says, "JUPYTER_TOKEN in .env")
    assert "error:" in logs


@pytest.mark.parametrize("name", ["bad:name", "bad.name", ""], ids=["colon", "dot", "empty"])
def test_bad_session_name_is_refused(make_stack, name):
    """Container should refuse a TMUX_SESSION tmux cannot use and say what to change."""
    stack = make_stack(TMUX_SESSION=name)
    refused(stack, "TMUX_SESSION", "Change TMUX_SESSION in .env" if name else "Set TMUX_SESSION in .env")


def test_unwritable_workspace_is_refused(make_stack, tmp_path):
    """Container should refuse a workspace the notebook user cannot write, and say how to fix it."""
    stack = make_stack()
    stack.workspace.chmod(0o555)
    try:
        refused(stack, "not writable", "chown", "HOST_UID")
    finally:
        stack.workspace.chmod(0o755)


def test_root_owned_custom_workspace_is_refused_not_chowned(make_stack):
    """A WORKSPACE the user named that belongs to root should be refused, never chowned."""
    if os.getuid() != 0:
        pytest.skip("needs root to make a root-owned folder")
    stack = make_stack()
    os.chown(stack.workspace, 0, 0)
    refused(stack, "not writable", "belongs to uid 0")
    assert stack.workspace.stat().st_uid == 0, "the custom workspace was chowned"


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
