"""JupyterLab's terminals live in the named tmux session (server/terminals.py, `notebookctl terminal`): what runs
in one outlives Jupyter, and the terminal reopened shows it. Spoken to as the page does (termclient.py)."""

from __future__ import annotations

import uuid

import requests
from stack import Stack, wait_for
from termclient import TerminalConnection, new_terminal, terminal_names


def tmux(stack: Stack, *args: str) -> str:
    return stack.exec("tmux", "-N", *args, check=False).stdout.strip()


def windows(stack: Stack) -> list[str]:
    return tmux(stack, "list-windows", "-t", f"={stack.variables['TMUX_SESSION']}", "-F", "#{window_name}").split()


def alive(stack: Stack, pid: str) -> bool:
    return stack.exec("kill", "-0", pid, check=False).returncode == 0


def test_a_browser_terminal_is_a_tmux_window_that_outlives_jupyter(stack: Stack):
    """A terminal opened as JupyterLab opens one should be a window of the named session ($TMUX set) without
    moving the session's own view (VSCode's); a process started in it should live through kill -9 of Jupyter;
    the terminal should be listed again and, reopened, show what it printed; Shut Down should end the window."""
    token, session = stack.token(), stack.variables["TMUX_SESSION"]
    vscode_view = tmux(stack, "display-message", "-p", "-t", f"={session}", "#{window_id}")
    name, marker = new_terminal(stack.base_url, token), uuid.uuid4().hex[:12]
    with TerminalConnection(stack.base_url, token, name) as terminal:
        terminal.type(f"echo in-tmux=${{TMUX:+yes}}; sleep 1000 & echo {marker}=$!=pid\r")
        pid = terminal.expect(rf"{marker}=(\d+)=pid").group(1)
    assert "in-tmux=yes" in terminal.screen, f"the terminal's shell is not in tmux: {terminal.screen[-300:]!r}"
    assert f"lab-{name}" in windows(stack), windows(stack)
    assert tmux(stack, "display-message", "-p", "-t", f"={session}", "#{window_id}") == vscode_view, \
        "opening a browser terminal moved the session's own view"
    stack.kill_jupyter()
    stack.wait_api(token)
    assert alive(stack, pid), "the terminal's process died with Jupyter"
    wait_for(lambda: name in terminal_names(stack.base_url, token), 30, f"terminal {name} listed again")
    with TerminalConnection(stack.base_url, token, name) as terminal:
        terminal.expect(rf"{marker}=\d+=pid")  # the window's screen, redrawn for the new view
    shut = requests.delete(f"{stack.base_url}/api/terminals/{name}", headers={"Authorization": f"token {token}"},
                           timeout=30)
    assert shut.status_code == 204, shut.text
    wait_for(lambda: f"lab-{name}" not in windows(stack), 15, "Shut Down to end the terminal's window")
    wait_for(lambda: not alive(stack, pid), 15, "Shut Down to end the terminal's processes")


def test_exit_in_a_browser_terminal_closes_it(stack: Stack):
    """`exit` in the terminal's shell should end its window and close the browser's terminal, not show another
    window of the session."""
    token = stack.token()
    name = new_terminal(stack.base_url, token)
    with TerminalConnection(stack.base_url, token, name) as terminal:
        terminal.type("echo ready-$((6 * 7))\r")
        terminal.expect("ready-42")
        terminal.type("exit\r")
        assert terminal.expect("never printed", 20) is None, "the terminal did not close"
    wait_for(lambda: f"lab-{name}" not in windows(stack), 15, "the window to end")
    wait_for(lambda: name not in terminal_names(stack.base_url, token), 15, "the terminal to leave the list")
