"""Secrets stay secret, and settings are what Jupyter really uses."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import urllib.parse
import uuid

import pytest
from kernelclient import KernelConnection, api, start_kernel
from stack import SUPERVISORCTL, Stack, http_get

ENV_TOKEN = "token-set-in-env-0123456789abcdef"


def test_token_never_reaches_the_logs(stack: Stack):
    """A refused request carrying ?token= should leave no token in `docker compose logs`."""
    token = stack.token()
    for path in ("/api/contents/no-such-file", "/api/kernels/no-such-kernel", "/nbconvert/nothing"):
        status, _ = http_get(f"{stack.base_url}{path}?token={urllib.parse.quote(token)}")
        assert 400 <= status < 500, f"{path} answered {status}"
    logs = stack.logs()
    assert "no-such-file" in logs, "the refused request is not logged at all"
    assert token not in logs, "the token is in the logs"


def test_state_and_runtime_folders_are_private(stack: Stack):
    """The state volume, Jupyter's runtime folder and the token files should be the notebook user's only."""
    modes = stack.exec("stat", "-c", "%a %n", "/var/lib/persistent-notebooks",
                       "/var/lib/persistent-notebooks/jupyter/runtime", "/var/lib/persistent-notebooks/run",
                       "/var/lib/persistent-notebooks/kernels", "/var/lib/persistent-notebooks/run/token").stdout
    for line in modes.splitlines():
        mode, path = line.split(" ", 1)
        expected = 0o600 if path.endswith("token") else 0o700
        assert int(mode, 8) & 0o777 == expected, f"{path} has mode {mode}, not {expected:o}"


def test_token_is_in_no_process_environment(make_stack):
    """JUPYTER_TOKEN from .env should reach no process supervisord starts: Jupyter, kernels, tmux shells."""
    stack: Stack = make_stack(JUPYTER_TOKEN=ENV_TOKEN)
    stack.up()
    stack.wait_healthy()
    assert stack.token() == ENV_TOKEN and stack.api_status(ENV_TOKEN) == 200
    kernel_id = start_kernel(stack.base_url, ENV_TOKEN)
    with KernelConnection(stack.base_url, ENV_TOKEN, kernel_id) as c:
        out = c.execute("import os, subprocess; print(os.environ.get('JUPYTER_TOKEN'), "
                        "subprocess.run(['env'], capture_output=True, text=True).stdout.count('JUPYTER_TOKEN'))")
    assert out["stdout"] == "None 0\n", out
    for program in ("jupyter", "tmux", "kernel-keeper"):
        environ = stack.exec("cat", f"/proc/{stack.program_pid(program)}/environ").stdout
        assert ENV_TOKEN not in environ and "JUPYTER_TOKEN=" not in environ, f"{program} has the token"


def test_new_token_ends_old_logins(make_stack):
    """A browser cookie from the old token should stop working once JUPYTER_TOKEN changes."""
    stack: Stack = make_stack(JUPYTER_TOKEN=ENV_TOKEN)
    stack.up()
    stack.wait_healthy()

    def with_cookie(cookie: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        connection.request("GET", "/api/status", headers={"Cookie": cookie})
        status = connection.getresponse().status
        connection.close()
        return status

    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    connection.request("GET", f"/api/status?token={ENV_TOKEN}")
    response = connection.getresponse()
    cookie = "; ".join(c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or [])
    connection.close()
    assert response.status == 200 and cookie, "no login cookie was set"
    assert with_cookie(cookie) == 200, "the login cookie does not work"
    stack.compose("restart")  # same token: logins are kept
    stack.wait_healthy()
    assert with_cookie(cookie) == 200, "a restart with the same token ended the login"
    stack.variables["JUPYTER_TOKEN"] = "another-token-0123456789abcdef"
    stack.up()
    stack.wait_healthy()
    assert with_cookie(cookie) in (401, 403), "the old token's cookie still logs in"


def test_bridge_address_still_needs_the_token(stack: Stack):
    """Jupyter listens on the container's bridge address too (decided): there, too, no token means no entry."""
    networks = stack.inspect()["NetworkSettings"]["Networks"]
    address = next(n["IPAddress"] for n in networks.values() if n["IPAddress"])
    status, _ = http_get(f"http://{address}:{stack.port}/api/status")
    assert status in (401, 403), f"the bridge address answered {status} without a token"
    status, _ = http_get(f"http://{address}:{stack.port}/api/kernels", "wrong-" + stack.token())
    assert status in (401, 403), f"the bridge address answered {status} to a wrong token"


def test_container_trusts_a_handed_in_ca(make_stack, tmp_path):
    """A CA given as CA_BUNDLE should be trusted by Python's ssl inside the container (the merge works)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test CA")
    name = f"persistent-notebooks-test-ca-{uuid.uuid4().hex[:8]}"
    ca = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-keyout", str(tmp_path / "ca.key"), "-out", str(ca)], check=True, capture_output=True)
    ca.chmod(0o644)
    stack: Stack = make_stack(CA_BUNDLE=str(ca))
    stack.up()
    stack.wait_healthy()
    probe = ("import ssl; names = [dict(x[0] for x in c['subject']).get('commonName') "
             "for c in ssl.create_default_context().get_ca_certs()]; "
             f"print({name!r} in names, len(names) > 100)")
    assert stack.exec("python3", "-c", probe).stdout.strip() == "True True", \
        "the handed-in CA (or Debian's own CAs) is not trusted inside"


def test_culling_is_off_by_default_in_jupyter(stack: Stack):
    """The running Jupyter's configuration should have culling off unless JUPYTER_CULL_IDLE_TIMEOUT is set."""
    pid = stack.exec(*SUPERVISORCTL, "pid", "jupyter").stdout.strip()
    environ = dict(line.split("=", 1) for line in stack.exec("cat", f"/proc/{pid}/environ").stdout.split("\0")
                   if "=" in line)
    shown = stack.exec("env", "-i", *[f"{k}={v}" for k, v in environ.items()], "jupyter-server", "--show-config").stdout
    settings = dict(re.findall(r"^\s+\.(\w+) = (.*)$", shown, re.M))  # (never print `shown`: it has the token)
    assert settings.get("cull_idle_timeout") == "0", f"culling: {settings.get('cull_idle_timeout')}"
    assert settings.get("allow_remote_access") == "False", "Jupyter did not load persistent-notebooks' settings"


def test_config_file_refuses_a_bad_value(stack: Stack):
    """A bad value that got past the check should stop Jupyter, naming it, never run it without our settings."""
    result = stack.exec("env", "JUPYTER_CULL_IDLE_TIMEOUT=1h", "jupyter-server", "--show-config", check=False)
    assert result.returncode == 78, f"Jupyter ran with a bad setting ({result.returncode})"
    assert "JUPYTER_CULL_IDLE_TIMEOUT='1h'" in result.stderr, result.stderr[-2000:]


def test_health_is_the_watchdogs_report(stack: Stack):
    """Docker's healthcheck should read the watchdog's report: no resident or periodic Python of its own."""
    config = stack.inspect()["Config"]["Healthcheck"]["Test"]
    assert config == ["CMD", "/usr/local/lib/persistent-notebooks/healthcheck"], config
    assert stack.exec("notebookctl", "health").stdout.strip() == "ok"
    status = stack.exec(*SUPERVISORCTL, "status", check=False).stdout
    assert "watchdog" not in status, f"the watchdog should be a thread of supervisord, not a program:\n{status}"
    pythons = [line for line in stack.exec("ps", "-eo", "args").stdout.splitlines()
               if "python" in line.split(" ", 1)[0] and "ipykernel_launcher" not in line]  # kernels: the user's
    roles = sorted("supervisord" if "persistent_notebooks.supervisor" in p else "jupyter" if "jupyter-server" in p
                   else "keeper" if "persistent_notebooks.keeper" in p
                   else "runner" if "persistent_notebooks.runner" in p
                   else "tmux-save" if "persistent_notebooks.tmux save" in p else p for p in pythons)
    # The programs started on demand only while they have work (or had it in the last IDLE_EXIT seconds): the keeper
    # while kernels run, the runner after a run or a JupyterLab cell; and the tmux session's save, a moment every 30 s.
    resident = [role for role in roles if role not in ("keeper", "runner", "tmux-save")]
    assert resident == ["jupyter", "supervisord"], \
        f"expected supervisord and Jupyter (and the programs started on demand) as the only Pythons: {pythons}"
    assert api(stack.base_url, stack.token(), "/api/status")["started"]


@pytest.mark.parametrize(("report", "healthy", "says"), [
    ("{now} ok", True, "ok"),
    ("{now} Jupyter does not answer: timed out", False, "Jupyter does not answer"),
    ("{old} ok", False, "s old"),
    ("{future} ok", False, "s old"),
    ("not a report", False, ""),
    (None, False, "no report from the watchdog yet"),
])
def test_healthcheck_reads_only_a_recent_ok(stack: Stack, report, healthy, says):
    """Docker's healthcheck should pass only on an `ok` report of the last 20 seconds, saying what is wrong."""
    now = int(float(stack.exec("cat", "/proc/uptime").stdout.split()[0]))
    path = f"/tmp/health-test-{uuid.uuid4().hex[:8]}"
    if report is not None:
        text = report.format(now=now, old=now - 60, future=now + 3600)
        stack.exec("sh", "-c", f"printf '%s\\n' '{text}' > {path}")
    result = stack.exec("/usr/local/lib/persistent-notebooks/healthcheck", path, check=False)
    stack.exec("rm", "-f", path)
    assert (result.returncode == 0) == healthy, f"{report!r}: exit {result.returncode}, {result.stdout}"
    assert says in result.stdout, result.stdout
