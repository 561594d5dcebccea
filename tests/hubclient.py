"""A JupyterHub user as a browser would be one: log in through the hub's login form, start the server,
make an API token; then the server's REST API and kernels through the hub's proxy."""

from __future__ import annotations

import re

import requests
from stack import wait_for


class HubUser:
    def __init__(self, base_url: str, name: str):
        self.base_url, self.name = base_url.rstrip("/"), name
        self.session = requests.Session()
        self.token: str | None = None

    def login(self, password: str) -> bool:
        """The hub's login form, as a browser posts it; True when the hub took the password."""
        page = self.session.get(f"{self.base_url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        form = {"username": self.name, "password": password, **({"_xsrf": xsrf.group(1)} if xsrf else {})}
        answer = self.session.post(f"{self.base_url}/hub/login", data=form, allow_redirects=False, timeout=30)
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
        answer = self.hub_api("POST", f"/users/{self.name}/server")
        assert answer.status_code in (201, 202, 400), f"the hub did not start {self.name}'s server: {answer.text}"
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
