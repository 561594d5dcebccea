"""The hub (hub/compose.yaml) for tests: a deployment of its own (Hub, running_hub), and a user as a browser
would be one (HubUser): log in through the hub's login form, start the server, make an API token; then the
server's REST API and kernels through the hub's proxy."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker.errors
import requests
from stack import REPO, docker_client, free_port, http_get, wait_for


class HubUser:
    def __init__(self, base_url: str, name: str):
        self.base_url, self.name = base_url.rstrip("/"), name
        self.session = requests.Session()
        self.token: str | None = None

    def login(self, password: str, timeout: float = 30) -> bool:
        """The hub's login form, as a browser posts it; True when the hub took the password."""
        page = self.session.get(f"{self.base_url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        form = {"username": self.name, "password": password, **({"_xsrf": xsrf.group(1)} if xsrf else {})}
        answer = self.session.post(f"{self.base_url}/hub/login", data=form, allow_redirects=False, timeout=timeout)
        return answer.status_code == 302 and "/hub/login" not in answer.headers.get("Location", "")

    def _xsrf(self) -> dict:
        return {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}

    def make_token(self) -> str:
        """An API token of this user's own, made with the login cookie (as on the hub's token page)."""
        answer = self.session.post(f"{self.base_url}/hub/api/users/{self.name}/tokens", json={"note": "tests"},
                                   headers=self._xsrf(), timeout=30)
        assert answer.status_code in (200, 201), \
            f"the hub made no token for {self.name}: {answer.status_code} {answer.text}"
        self.token = answer.json()["token"]
        return self.token

    def hub_api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.base_url}/hub/api{path}", timeout=30,
                                headers={"Authorization": f"token {self.token}"}, **kwargs)

    def start_server(self, timeout: float = 240) -> None:
        """Start the server and follow its progress events through the proxy until `ready`, as the hub's
        "Your server is starting up" page does (which then goes on to the server). Where the start is a new
        spawn, its first event should arrive while the spawn is still pending (a proxy that buffers whole
        responses holds every event back until the end, and the page's bar stands still)."""
        answer = self.hub_api("POST", f"/users/{self.name}/server")
        assert answer.status_code in (201, 202, 400), f"the hub did not start {self.name}'s server: {answer.text}"
        events: list[dict] = []
        pending_at_first_event = None
        with requests.get(f"{self.base_url}/hub/api/users/{self.name}/server/progress", timeout=timeout,
                          headers={"Authorization": f"token {self.token}"}, stream=True) as progress:
            for line in progress.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if len(events) == 1:
                        pending_at_first_event = self.hub_api("GET", f"/users/{self.name}").json()["pending"]
            assert progress.status_code == 200 and events and events[-1].get("ready"), \
                f"the start's progress events did not end ready: {progress.status_code} {events[-3:]}"
        if answer.status_code == 202 and not events[0].get("ready"):  # (a start that ended meanwhile: only ready)
            assert pending_at_first_event == "spawn", \
                f"the progress events reached the client only once the start had ended: {events}"
        wait_for(lambda: self.server_api("GET", "/api/status").status_code == 200, timeout,
                 f"{self.name}'s server to answer through the hub")

    @property
    def server_url(self) -> str:
        return f"{self.base_url}/user/{self.name}"

    def server_api(self, method: str, path: str, token: str | None = "own", **kwargs) -> requests.Response:
        token = self.token if token == "own" else token
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.request(method, f"{self.server_url}{path}", headers=headers, timeout=30,
                                allow_redirects=False, **kwargs)


# Every variable hub/compose.yaml reads besides CA_BUNDLE and BASE_IMAGE.
HUB_SETTINGS = ("HUB_PORT", "HUB_WORKSPACES", "HUB_USER_IMAGE", "HUB_USER_MEMORY_LIMIT", "NOTEBOOK_AWAY_BUFFER",
                "TMUX_SESSION", "TMUX_RESTORE", "JUPYTER_CULL_IDLE_TIMEOUT", "JUPYTER_CULL_INTERVAL",
                "JUPYTER_CULL_CONNECTED", "EXTRA_APT_PACKAGES", "EXTRA_PIP_REQUIREMENTS", "COMPOSE_PROJECT_NAME")


class Hub:
    def __init__(self, project: str, port: int, workspaces: Path, swarm: bool = False):
        self.project, self.port, self.workspaces = project, port, workspaces
        files = ["hub/compose.yaml"] + (["hub/compose.swarm.yaml"] if swarm else [])
        self.command = ["docker", "compose", "--project-directory", str(REPO / "hub"), "-p", project,
                        *(arg for f in files for arg in ("-f", str(REPO / f)))]
        self.base_url = f"http://127.0.0.1:{port}"
        # The hub's settings as the test gives them, none from this process's environment (the main
        # stack's fixture puts its own TMUX_SESSION and friends there for the whole session).
        self.env = {**{k: v for k, v in os.environ.items() if k not in HUB_SETTINGS},
                    "HUB_PORT": str(port), "HUB_WORKSPACES": str(workspaces)}
        self.passwords: dict[str, str] = {}

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        assert not check or result.returncode == 0, f"docker compose {' '.join(args)}: {result.stderr[-2000:]}"
        return result

    def script(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO / "scripts" / "hub"), "-p", self.project, *args], capture_output=True,
                              text=True, input=stdin, env=self.env, timeout=300)

    def wait_up(self, timeout: float = 120) -> None:
        wait_for(lambda: http_get(f"{self.base_url}/hub/health")[0] == 200, timeout, "the hub to answer /hub/health")

    def hub_container(self) -> str:
        return self.compose("ps", "-q", "hub").stdout.strip()

    def user_container(self, name: str):
        return docker_client().containers.get(f"{self.project}-user-{name}")

    def logged_in(self, name: str) -> HubUser:
        user = HubUser(self.base_url, name)
        assert user.login(self.passwords[name]), f"{name} could not log in with their password"
        user.make_token()
        return user

    def exec_user(self, name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", f"{self.project}-user-{name}", *args], capture_output=True, text=True,
                              timeout=120)


def timed_login(hub: Hub, name: str, password: str) -> tuple[bool, float]:
    """A login from a new browser (no cookie); whether it was taken, and the seconds it took (its GET of the
    form is a few ms, the same for every name). Measured, not judged: logins at once queue for the hub's one
    low-priority password checker, which a busy machine starves for tens of seconds."""
    started = time.perf_counter()
    taken = HubUser(hub.base_url, name).login(password, timeout=180)
    return taken, time.perf_counter() - started


def wrong_login_times(hub: Hub, name: str, rounds: int) -> dict[str, list[float]]:
    """Seconds of wrong logins (8 and 100 bytes) as NAME (an existing user, whose right password is logged in
    first and then between every four: no lock-out in the measure, whatever failed before) and as unknown
    users, interleaved."""
    times: dict[str, list[float]] = {"existing": [], "unknown": []}
    assert timed_login(hub, name, hub.passwords[name])[0], f"{name}'s own password was refused"
    for round_ in range(rounds):
        for password in ("wrong-pw", "w" * 100):
            for kind, who in (("existing", name), ("unknown", f"nobody{round_}x{len(password)}")):
                taken, seconds = timed_login(hub, who, password)
                assert not taken, f"{who} logged in with a wrong password"
                times[kind].append(seconds)
        if round_ % 2:
            assert timed_login(hub, name, hub.passwords[name])[0], f"{name}'s own password was refused"
    return times


def api_seconds(hub: Hub) -> float:
    """Seconds of one GET /hub/api/ (the hub's version: no database, no user)."""
    started = time.perf_counter()
    assert requests.get(f"{hub.base_url}/hub/api/", timeout=30).status_code == 200
    return time.perf_counter() - started


def api_times_during_logins(hub: Hub, logins: int) -> list[float]:
    """Seconds of the hub's API asked again and again while LOGINS wrong logins (unknown names) run at once."""
    with concurrent.futures.ThreadPoolExecutor(logins) as pool:
        done = [pool.submit(timed_login, hub, f"guess{i}", "wrong-pw") for i in range(logins)]
        times = []
        while not all(f.done() for f in done):
            times.append(api_seconds(hub))
        assert not any(f.result()[0] for f in done), "a wrong password logged in"
    return times


def build_images() -> None:
    """The hub's images (the hub's own and its users' base), as every test's hub builds them."""
    Hub("pntest-hub-images", 0, Path(tempfile.gettempdir())).compose("build", timeout=1800)


def remove_everything_of(project: str) -> None:
    """Users' services (on a swarm), containers and volumes of the hub `project`."""
    client, label = docker_client(), {"label": f"persistent-notebooks.hub={project}"}
    with contextlib.suppress(docker.errors.APIError):  # not a swarm manager: no services
        for service in client.services.list(filters=label):
            service.remove()
    wait_for(lambda: all(c.remove(force=True) or True for c in client.containers.list(all=True, filters=label))
             and not client.containers.list(all=True, filters=label), 60, f"{project}'s users' containers to go")
    for volume in client.volumes.list():
        if volume.name.startswith(f"{project}-user-"):
            volume.remove(force=True)


@contextlib.contextmanager
def running_hub(project: str, workspaces: Path, swarm: bool = False):
    """A hub of its own (a project, a port, a workspace folder); everything it made goes at the end:
    its containers, network and volumes, users' containers (or services) and volumes, users' images."""
    hub = Hub(project, free_port(), workspaces, swarm)
    remove_everything_of(project)
    hub.compose("build")  # from the cache where scripts/test built them during its set-up (build_images)
    try:
        hub.compose("up", "-d")
        hub.wait_up()
        yield hub
    finally:
        # Users' containers first: they are on the hub's network, which `down` removes only once they are gone.
        remove_everything_of(project)
        hub.compose("down", "-v", "--remove-orphans", check=False)
        client = docker_client()
        for image in client.images.list(filters={"label": "persistent-notebooks.hub-user-of"}):
            with contextlib.suppress(docker.errors.APIError):  # another hub's, still in use
                client.images.remove(image.id, force=True)
        shutil.rmtree(workspaces, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python tests/hubclient.py build  (the hub's images, for the hub tests to find in the cache)")
    began = time.monotonic()
    build_images()
    print(f"built the hub's images in {time.monotonic() - began:.0f} s")
