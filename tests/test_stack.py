"""The running stack: health, the token, the tmux session, healing, security and file ownership."""

from __future__ import annotations

import http.client
import json
import os
import pty
import select
import time
import uuid

from stack import SUPERVISORCTL, Stack, docker_client, http_get, wait_for


def test_stack_turns_healthy(stack: Stack):
    """Container should start from nothing and turn healthy (in Docker's eyes), with all three programs running."""
    wait_for(lambda: stack.health() == "healthy", 30, "Docker to call the container healthy")
    status = stack.exec(*SUPERVISORCTL, "status", check=False).stdout
    for program in ("tmux ", "tmux-session ", "jupyter "):
        line = next((ln for ln in status.splitlines() if ln.startswith(program)), "")
        assert "RUNNING" in line, f"supervisord program {program.strip()!r} is not running:\n{status}"
    logs = stack.logs()
    for line in ("spawned: 'jupyter'", "Jupyter Server", "created tmux session"):
        assert line in logs, f"{line!r} is not in `docker compose logs`"


def test_jupyter_requires_the_token(stack: Stack):
    """Jupyter should answer with the token and refuse without it or with a wrong one."""
    token = stack.token()
    assert len(token) >= 16, f"generated token too short: {token!r}"
    assert stack.api_status(token) == 200
    for path in ("/api/status", "/api/kernels", "/api/contents"):
        code_none = http_get(f"{stack.base_url}{path}")[0]
        code_wrong = http_get(f"{stack.base_url}{path}", "wrong-" + token)[0]
        assert code_none in (401, 403), f"{path} without a token answered {code_none}"
        assert code_wrong in (401, 403), f"{path} with a wrong token answered {code_wrong}"


def test_jupyter_refuses_foreign_host_names(stack: Stack):
    """Jupyter should refuse a request whose Host header is not local (DNS rebinding), even with the token."""
    token = stack.token()
    for host, expected in ((f"127.0.0.1:{stack.port}", 200), (f"localhost:{stack.port}", 200),
                           (f"attacker.example:{stack.port}", 403)):
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        connection.request("GET", "/api/status", headers={"Host": host, "Authorization": f"token {token}"})
        status = connection.getresponse().status
        connection.close()
        assert status == expected, f"Host: {host} answered {status}, expected {expected}"


def test_url_script_prints_a_working_url(stack: Stack):
    """scripts/url should print the loopback URL with the token, and that URL should log in."""
    url = stack.url()
    token = stack.token()
    assert url == f"http://127.0.0.1:{stack.port}/?token={token}", url
    status, _ = http_get(url.replace("/?token=", "/api/status?token="))
    assert status == 200, f"the printed URL was refused ({status})"
    # The same URL works inside the container, where VSCode's Jupyter extension runs when attached.
    inside = stack.exec("python3", "-c", "import sys, urllib.request; "
                        "print(urllib.request.urlopen(sys.argv[1], timeout=10).status)",
                        url.replace("/?token=", "/api/status?token="))
    assert inside.stdout.strip() == "200", inside.stdout + inside.stderr


def attached_client(stack: Stack) -> tuple[int, int]:
    """A real terminal client on the session (what a VSCode terminal runs): (pid, pty fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the terminal program
        os.execvp("docker", ["docker", "exec", "-it", "-e", "TERM=xterm", stack.container,
                             "notebookctl", "attach"])
    return pid, fd


def read_until(fd: int, pid: int, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                os.read(fd, 65536)
            except OSError:
                break
    assert done(), "the terminal client did not get there in time"


def test_session_keeps_scrollback_after_detach(stack: Stack):
    """Text typed into the session should stay in its scrollback after the client detaches."""
    name = stack.variables["TMUX_SESSION"]
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    pid, fd = attached_client(stack)
    clients = lambda: stack.exec("tmux", "-N", "list-clients", "-t", f"={name}", "-F",  # noqa: E731
                                 "#{client_tty} #{client_control_mode}").stdout
    try:
        read_until(fd, pid, lambda: " 0" in clients(), 30)  # a non-control client is attached
        os.write(fd, f"echo {marker}-$((6*7))\r".encode())
        pane = lambda: stack.exec("tmux", "-N", "capture-pane", "-p", "-J", "-S", "-",  # noqa: E731
                                  "-t", f"={name}:").stdout
        read_until(fd, pid, lambda: f"{marker}-42" in pane(), 30)
        os.write(fd, b"\x02d")  # Ctrl-b d: detach
        read_until(fd, pid, lambda: " 0" not in clients(), 30)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    history = stack.exec("tmux", "-N", "capture-pane", "-p", "-J", "-S", "-", "-t", f"={name}:").stdout
    assert f"{marker}-42" in history, f"the output is gone from the scrollback:\n{history[-2000:]}"
    assert stack.session_exists(), "the session went away with its client"


def test_security_defaults(stack: Stack, test_image: str):
    """Container should publish on loopback only, run as non-root, keep no token in the image."""
    info = stack.inspect()
    bindings = info["HostConfig"]["PortBindings"][f"{stack.port}/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
    published = info["NetworkSettings"]["Ports"][f"{stack.port}/tcp"]
    assert {b["HostIp"] for b in published} == {"127.0.0.1"}, published
    assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"]
    assert "ALL" in info["HostConfig"]["CapDrop"] and not info["HostConfig"]["CapAdd"], info["HostConfig"]
    assert info["Config"]["User"] == f"{stack.variables['HOST_UID']}:{stack.variables['HOST_GID']}"

    # Every process, tmux and Jupyter included, runs as the notebook user.
    ps = stack.exec("ps", "-eo", "uid=,comm=").stdout.split("\n")
    rows = [line.split(None, 1) for line in ps if line.strip()]
    assert all(uid != "0" for uid, _ in rows), f"processes running as root: {rows}"
    commands = " ".join(comm for _, comm in rows)
    assert "tmux" in commands and "jupyter" in commands, commands

    token = stack.token()
    image = json.dumps(docker_client().images.get(test_image).attrs)
    history = json.dumps(docker_client().api.history(test_image))
    assert token not in image and token not in history, "the token is in the image"
    assert "JUPYTER_TOKEN=" not in image, "the image sets a token"
    # The generated token is readable by its owner only.
    mode = stack.exec("stat", "-c", "%a", "/var/lib/persistent-notebooks/jupyter_token").stdout.strip()
    assert mode == "600", f"token file mode {mode}"


def test_workspace_files_belong_to_the_host_user(stack: Stack):
    """A file made in the workspace inside the container should belong to HOST_UID/HOST_GID."""
    name = f"made-inside-{uuid.uuid4().hex[:6]}.txt"
    stack.exec("sh", "-c", f"echo hello > /workspace/{name}")
    made = stack.workspace / name
    assert made.read_text() == "hello\n"
    st = made.stat()
    expected = (int(stack.variables["HOST_UID"]), int(stack.variables["HOST_GID"]))
    assert (st.st_uid, st.st_gid) == expected, f"owned by {st.st_uid}:{st.st_gid}, not {expected}"
