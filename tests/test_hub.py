"""The hub (hub/compose.yaml): a real JupyterHub, its configurable-http-proxy, DockerSpawner and users' servers
of this project's image, driven as users and an admin would (login form, REST API, scripts/hub).

One hub for the module (project pnhubtest, a port and a workspace folder of its own); users alice and
bob are made with scripts/hub. Everything the hub made (users' containers, volumes, images) goes at the end.
"""

from __future__ import annotations

import hashlib
import importlib
import statistics
import sys

import docker.errors
import pytest
import requests
from conftest import css, screenshot_on_failure
from hubclient import Hub, HubUser, api_times_during_logins, running_hub, timed_login, wrong_login_times
from kernelclient import KernelConnection
from stack import REPO, SUPERVISORCTL, docker_client, wait_for

PROJECT = "pnhubtest"
ALICE_PASSWORD = "alice-secret-42"


@pytest.fixture(scope="module")
def hub(hub_turn, tmp_path_factory) -> Hub:
    with running_hub(PROJECT, tmp_path_factory.mktemp("hub") / "users") as hub:
        made = hub.script("user", "add", "alice", "--password-stdin", stdin=ALICE_PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
        hub.passwords["alice"] = ALICE_PASSWORD
        made = hub.script("user", "add", "bob")
        assert made.returncode == 0 and "shown once" in made.stderr, made.stderr
        hub.passwords["bob"] = made.stdout.strip()
        yield hub


@pytest.fixture(scope="module")
def alice(hub: Hub) -> HubUser:
    user = hub.logged_in("alice")
    user.start_server()
    return user


def start_in_a_browser(driver, hub: Hub, name: str) -> None:
    """As a user does it: the login form, Start My Server on the hub's home page, then the "Your server is
    starting up" page, which should go on to JupyterLab by itself once the server is ready."""
    driver.get(f"{hub.base_url}/hub/login")
    wait_for(lambda: css(driver, "#username_input"), 30, "the hub's login form")
    css(driver, "#username_input")[0].send_keys(name)
    css(driver, "#password_input")[0].send_keys(hub.passwords[name])
    css(driver, "#login_submit")[0].click()
    wait_for(lambda: css(driver, "#start"), 30, f"the hub's home page with Start My Server ({driver.current_url})")
    css(driver, "#start")[0].click()
    wait_for(lambda: f"/user/{name}/lab" in driver.current_url and css(driver, ".jp-LauncherCard"), 240,
             f"the starting page to go on to JupyterLab by itself (now at {driver.current_url})")


def test_users_log_in_and_cannot_reach_each_other(hub: Hub, alice: HubUser, browser, tmp_path):
    """Each user should log in through the hub's form, get a server of this image (Bob's first start in a
    real browser ending in JupyterLab), and not reach another's."""
    with screenshot_on_failure(browser, tmp_path / "hub.png"):
        start_in_a_browser(browser, hub, "bob")
    bob = hub.logged_in("bob")
    for user in (alice, bob):
        container = hub.user_container(user.name)
        assert container.image.labels.get("org.opencontainers.image.title") == "persistent-notebooks", container.image
        assert user.server_api("GET", "/api/status").status_code == 200, f"{user.name} cannot reach their server"
    # Alice's token, her login cookie, or nothing: never into Bob's server.
    assert alice.server_api("GET", "/api/status").status_code == 200
    for token in (alice.token, None):
        answer = requests_get(f"{bob.server_url}/api/kernels", token)
        assert answer.status_code in (302, 401, 403), \
            f"alice reached bob's server (with her token: {token is not None}): {answer.status_code}"
    cookie = alice.session.get(f"{bob.server_url}/api/kernels", allow_redirects=True, timeout=30)
    assert cookie.status_code == 403 or "/hub/login" in cookie.url, \
        f"alice's login reached bob's server: {cookie.status_code}"
    assert alice.hub_api("GET", "/users/bob").status_code in (403, 404), "alice can read bob's account"
    # Each user's files: their own folder, their own uid, no one else's way in.
    uids = {}
    for name in ("alice", "bob"):
        folder = hub.workspaces / name
        uids[name] = folder.stat().st_uid
        assert folder.stat().st_mode & 0o777 == 0o700, f"{folder} is open to others: {oct(folder.stat().st_mode)}"
        ran = hub.exec_user(name, "id", "-u")
        assert ran.stdout.strip() == str(uids[name]), \
            f"{name}'s server runs as {ran.stdout}, their folder is {uids[name]}'s"
    assert uids["alice"] != uids["bob"] and 0 not in uids.values(), uids
    mounts = {m["Destination"]: m["Source"] for m in hub.user_container("alice").attrs["Mounts"]}
    assert mounts["/workspace"] == str(hub.workspaces / "alice"), mounts


def requests_get(url: str, token: str | None):
    return requests.get(url, headers={"Authorization": f"token {token}"} if token else {}, timeout=30,
                        allow_redirects=False)


def test_user_servers_are_hardened(hub: Hub, alice: HubUser):
    """A user's server should run unprivileged, publish no port, keep the hub's token from kernels, and be given
    the single-user stack's 90 s to stop (its kernels save their variables), not Docker's 10."""
    attrs = hub.user_container("alice").attrs
    assert attrs["Config"].get("StopTimeout") == 90, attrs["Config"].get("StopTimeout")
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"], host
    assert not host.get("PortBindings"), f"a user's server publishes a port: {host['PortBindings']}"
    assert hub.exec_user("alice", "sh", "-c", "grep CapEff /proc/1/status").stdout.split()[1] == "0" * 16
    kernel_id = alice.server_api("POST", "/api/kernels", json={"name": "python3"}).json()["id"]
    try:
        with KernelConnection(alice.server_url, alice.token, kernel_id) as kernel:
            out = kernel.execute("import os; print(sorted(k for k in os.environ if 'TOKEN' in k))")
        assert out["stdout"].strip() == "[]", f"a kernel's environment holds a token: {out}"
    finally:
        alice.server_api("DELETE", f"/api/kernels/{kernel_id}")
    jupyter = hub.exec_user("alice", "sh", "-c", f"cat /proc/$({' '.join(SUPERVISORCTL)} pid jupyter)/environ "
                            "| tr '\\0' '\\n' | grep -c TOKEN || true")
    assert jupyter.stdout.strip() == "0", "the Jupyter server's environment holds the token"
    logs = hub.user_container("alice").logs().decode(errors="replace")
    assert alice.token not in logs


def test_a_big_file_downloads_whole_through_the_hub(hub: Hub, alice: HubUser):
    """A file bigger than a proxy's usual in-memory limit (100 MB) should download whole through the hub."""
    size = 160 * 2**20
    made = hub.exec_user("alice", "python3", "-c", "import hashlib, os, sys\n"
                         "data = os.urandom(2**20) * 160\nopen('/workspace/big.bin', 'wb').write(data)\n"
                         "print(hashlib.sha256(data).hexdigest())")
    assert made.returncode == 0, made.stderr
    digest, got = hashlib.sha256(), 0
    try:
        with requests.get(f"{alice.server_url}/files/big.bin", headers={"Authorization": f"token {alice.token}"},
                          stream=True, timeout=120) as answer:
            assert answer.status_code == 200, f"the download failed: {answer.status_code} {answer.text[:300]}"
            for chunk in answer.iter_content(2**20):
                digest.update(chunk)
                got += len(chunk)
    finally:
        hub.exec_user("alice", "rm", "-f", "/workspace/big.bin")
    assert got == size, f"the download ended after {got} of {size} bytes"
    assert digest.hexdigest() == made.stdout.strip(), "the downloaded file differs from the user's"


def test_bad_logins_and_names_are_refused(hub: Hub):
    """Unknown users, wrong passwords and names a container cannot hold should be refused, saying why."""
    assert not HubUser(hub.base_url, "mallory").login("whatever-password"), "an unknown user logged in"
    assert not HubUser(hub.base_url, "alice").login("not-her-password"), "a wrong password logged in"
    for name in ("Bad Name", "a/b", "ünï", "9lives", "x" * 33):
        made = hub.script("user", "add", name)
        assert made.returncode == 1 and "user name" in made.stderr and "letters" in made.stderr, made.stderr
    short = hub.script("user", "add", "carol", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr, short.stderr
    twice = hub.script("user", "add", "alice")
    assert twice.returncode == 1 and "exists already" in twice.stderr, twice.stderr
    listed = hub.script("users")
    assert listed.returncode == 0 and "alice" in listed.stdout and "carol" not in listed.stdout, listed


def test_names_too_long_for_a_container_are_refused_with_the_limit(hub: Hub):
    """A name whose container name (DockerSpawner's escaping: . _ - take 3 characters) would pass a DNS label's
    63 characters should be refused at `user add`, saying how long a name may be."""
    made = hub.script("user", "add", "a.b.c.d.e.f.g.h.i.jklmnopqrstuvw")  # 32 characters, 50 escaped
    assert made.returncode == 1 and "too long" in made.stderr and "at most 63" in made.stderr \
        and "may have 48 characters" in made.stderr, made.stderr
    made = hub.script("user", "add", "x" * 34)
    assert made.returncode == 1 and "1 to 32" in made.stderr, made.stderr
    made = hub.script("user", "add", "x" * 32)
    assert made.returncode == 0, made.stderr
    hub.script("user", "remove", "x" * 32, "--delete-state")


@pytest.mark.alone  # times compared within a few ms
def test_wrong_passwords_tell_nothing_and_keep_the_hub_responsive(hub: Hub):
    """Wrong passwords (8 and 100 bytes) of an existing and an unknown user should get the same answer in the
    same time (bcrypt for both; medians of 20, interleaved); a password too long for bcrypt is refused at
    `user password` with a message; 16 concurrent wrong logins should leave the hub's API answering far
    faster than one password check takes (bcrypt off the event loop)."""
    long = hub.script("user", "password", "alice", "--password-stdin", stdin="p" * 80 + "\n")
    assert long.returncode == 1 and "at most 72 bytes" in long.stderr and "Traceback" not in long.stderr, long
    times = wrong_login_times(hub, "alice", 20)
    status = {HubUser(hub.base_url, name).session.post(f"{hub.base_url}/hub/login", timeout=30, data={
        "username": name, "password": "w" * 100}).status_code for name in ("alice", "nobody-else")}
    assert status == {403}, f"answers differ, or are not a refusal: {status}"
    existing, unknown = (statistics.median(times[kind]) for kind in ("existing", "unknown"))
    assert abs(existing - unknown) < max(0.025, existing / 10), \
        f"wrong passwords take {existing * 1000:.0f} ms for an existing user, {unknown * 1000:.0f} ms for another"

    api = api_times_during_logins(hub, 16)
    assert len(api) >= 10, f"16 logins ended before the API was asked 10 times ({len(api)})"
    assert statistics.median(api) < unknown / 4, \
        (f"the hub's API took {statistics.median(api) * 1000:.0f} ms (median) during 16 wrong logins, "
         f"one password check takes {unknown * 1000:.0f} ms: the checks hold up its event loop")


def test_a_lock_out_holds_one_client_across_a_hub_restart_and_no_one_else(hub: Hub):
    """Five wrong passwords from one new client should refuse that client even the right password, still after a
    hub restart; a browser that logged in as the user before should log in all along."""
    made = hub.script("user", "add", "erin", "--password-stdin", stdin="erin-secret-42\n")
    assert made.returncode == 0, made.stderr
    assert HubUser(hub.base_url, "erin").login("erin-secret-42"), "erin could not log in"
    device = HubUser(hub.base_url, "erin")
    assert device.login("erin-secret-42") and device.session.cookies.get("persistent-hub-device"), \
        "a login set no device cookie"
    erin = HubUser(hub.base_url, "erin")  # erin's browser, logged out: only the device cookie kept
    erin.session.cookies.set("persistent-hub-device", device.session.cookies.get("persistent-hub-device"),
                             path="/hub/")
    for _ in range(5):
        assert not timed_login(hub, "erin", "not-erins")[0]
    assert not timed_login(hub, "erin", "erin-secret-42")[0], "five failures from this client locked nothing"
    hub.compose("restart", "hub")
    hub.wait_up()
    assert not timed_login(hub, "erin", "erin-secret-42")[0], "a hub restart forgot the lock-out"
    assert erin.login("erin-secret-42"), "erin's own browser was locked out by another client's failures"
    assert hub.script("user", "remove", "erin", "--delete-state").returncode == 0


def test_kernels_survive_restarting_and_recreating_the_hub(hub: Hub, alice: HubUser):
    """A user's kernel should keep its id and variables, and their server keep running, through a restarted
    and a recreated hub container."""
    container = hub.user_container("alice")
    started = container.attrs["State"]["StartedAt"]
    kernel_id = alice.server_api("POST", "/api/kernels", json={"name": "python3"}).json()["id"]
    with KernelConnection(alice.server_url, alice.token, kernel_id) as kernel:
        kernel.execute("kept = 6 * 7")
    for how in (("restart", "hub"), ("up", "-d", "--force-recreate", "hub")):
        old = hub.hub_container()
        hub.compose(*how)
        hub.wait_up()
        if how[0] == "up":
            assert hub.hub_container() != old, "the hub's container was not recreated"
        wait_for(lambda: alice.server_api("GET", f"/api/kernels/{kernel_id}").status_code == 200, 60,
                 f"alice's kernel through the hub after `{' '.join(how)}`")
        with KernelConnection(alice.server_url, alice.token, kernel_id) as kernel:
            out = kernel.execute("print(kept)")
        assert out["stdout"].strip() == "42", f"the kernel lost its state after `{' '.join(how)}`: {out}"
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started, "alice's server was restarted with the hub"
    alice.server_api("DELETE", f"/api/kernels/{kernel_id}")


def test_a_killed_jupyter_server_keeps_kernels_and_their_output(hub: Hub, alice: HubUser):
    """kill -9 of a user's Jupyter server should bring the same kernels back, with what they printed meanwhile."""
    kernel_id = alice.server_api("POST", "/api/kernels", json={"name": "python3"}).json()["id"]
    try:
        with KernelConnection(alice.server_url, alice.token, kernel_id) as kernel:
            kernel.execute("kept = 'still here'")
            msg_id = kernel.submit("import time\nfor i in range(8):\n    print('line', i, flush=True)\n"
                                   "    time.sleep(0.5)")
            kernel.follow(msg_id, seconds=1)
        supervisorctl = ["supervisorctl", "-c", SUPERVISORCTL[2]]
        pid = hub.exec_user("alice", *supervisorctl, "pid", "jupyter").stdout.strip()
        hub.exec_user("alice", "kill", "-KILL", pid)
        wait_for(lambda: hub.exec_user("alice", *supervisorctl, "pid", "jupyter").stdout.strip() not in ("", "0", pid),
                 30, "supervisord's new Jupyter server")
        wait_for(lambda: alice.server_api("GET", f"/api/kernels/{kernel_id}").status_code == 200, 60,
                 "the kernel, under the same id, through the hub")
        with KernelConnection(alice.server_url, alice.token, kernel_id) as kernel:
            seen = kernel.follow(msg_id, seconds=None)
            out = kernel.execute("print(kept)")
        assert "line 7" in seen["stdout"], f"output printed meanwhile did not reach the next client: {seen['stdout']!r}"
        assert out["stdout"].strip() == "still here", out
    finally:
        alice.server_api("DELETE", f"/api/kernels/{kernel_id}")


def test_a_restarted_user_container_rebuilds_tmux_and_keeps_environments(hub: Hub, alice: HubUser):
    """A user's container restarted should bring back their tmux window and their environments."""
    made = hub.exec_user("alice", "notebookctl", "env", "create", "kept")
    assert made.returncode == 0, made.stderr
    session = "persistent-notebooks"

    def windows() -> str:
        return hub.exec_user("alice", "tmux", "-N", "list-windows", "-t", f"={session}", "-F", "#{window_name}").stdout

    wait_for(windows, 30, "alice's tmux session")
    for command in (("tmux", "-N", "new-window", "-t", f"={session}:", "-n", "analysis"),
                    ("/opt/venv/bin/python", "-m", "persistent_notebooks.tmux", "save")):
        ran = hub.exec_user("alice", *command)
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
    assert "analysis" in windows()
    container = hub.user_container("alice")
    container.restart(timeout=60)
    wait_for(lambda: alice.server_api("GET", "/api/status").status_code == 200, 120, "alice's server after a restart")
    try:
        wait_for(lambda: "analysis" in windows(), 30, "the tmux window to be rebuilt")
    except AssertionError as exc:
        log = container.logs(tail=40).decode(errors="replace")
        raise AssertionError(f"{exc}; windows now: {windows()!r}; the container's log ends:\n{log}") from None
    specs = alice.server_api("GET", "/api/kernelspecs").json()["kernelspecs"]
    assert "kept" in specs, f"the environment's kernel is gone after a restart: {sorted(specs)}"


def test_removed_user_keeps_state_unless_asked(hub: Hub):
    """`scripts/hub user remove` should stop the server and keep the state volume unless --delete-state;
    `user password` should replace the password."""
    made = hub.script("user", "add", "dave", "--password-stdin", stdin="dave-secret-42\n")
    assert made.returncode == 0, made.stderr
    hub.passwords["dave"] = "dave-secret-42"
    dave = hub.logged_in("dave")
    token = hub.script("token", "dave").stdout.strip()
    dave.token = token  # a token of the admin's making (scripts/hub token) serves as the user's own
    dave.start_server()
    volume = f"{hub.project}-user-dave-state"
    removed = hub.script("user", "remove", "dave")
    assert removed.returncode == 0, removed.stderr
    assert docker_client().volumes.get(volume), "the state volume went without --delete-state"
    assert not HubUser(hub.base_url, "dave").login("dave-secret-42"), "a removed user logged in"
    with pytest.raises(docker.errors.NotFound):
        hub.user_container("dave")
    hub.script("user", "add", "dave", "--password-stdin", stdin="dave-secret-42\n")
    changed = hub.script("user", "password", "dave")
    assert changed.returncode == 0 and "shown once" in changed.stderr, changed.stderr
    assert not HubUser(hub.base_url, "dave").login("dave-secret-42"), "the old password still logs in"
    assert HubUser(hub.base_url, "dave").login(changed.stdout.strip()), "the new password does not log in"
    removed = hub.script("user", "remove", "dave", "--delete-state")
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(docker.errors.NotFound):
        docker_client().volumes.get(volume)


@pytest.mark.benchmark
def test_benchmark_hub_section_reports_every_figure(hub: Hub):
    """The benchmark's hub section (scripts/benchmark --hub) should measure every figure on a running hub."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    hub_benchmark = importlib.import_module("hub")
    figures = hub_benchmark.measure(hub, runs=1, tries=3, prefix="bench")
    spawns = figures["login_to_server_s"]
    assert spawns["first_spawn"]["median"] > 0 and spawns["kept_server"]["median"] > 0, spawns
    assert figures["idle_user_container_mib"] > 0 and figures["reconnect_s"]["median"] > 0
    assert figures["hub_container_mib"] > 0
    assert figures["kill_jupyter_3_kernels_back_s"]["median"] > 0
    assert figures["wrong_login_s"]["unknown"]["median"] > 0 and figures["hub_api_s"]["quiet"]["median"] > 0
    assert "| login -> server answering, first spawn" in hub_benchmark.table(figures)
