"""Unit layer: the token mask of the logs, kernel names of workspace environments, the health report."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from persistent_notebooks import environments
from persistent_notebooks.server import follow
from persistent_notebooks.server.logfilter import MASK, MaskToken
from persistent_notebooks.state import health

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("text", [
    f"403 GET /api/kernels?token={TOKEN} (127.0.0.1)",
    f"GET /lab?foo=1&token={TOKEN}&x=2",
    f"headers: {{'Authorization': 'token {TOKEN}'}}",
    f"Authorization: token {TOKEN}",
    f"the token is {TOKEN} itself",
])
def test_the_token_is_masked_wherever_it_stands(text):
    """No log line should carry the token, whether in a URL, a header or on its own."""
    mask = MaskToken()
    mask.token = TOKEN
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s", (text,), None)
    assert mask.filter(record)
    assert TOKEN not in record.getMessage() and MASK in record.getMessage()


def test_other_tokens_in_urls_are_masked_too():
    """A token= parameter that is not the server's (a guess, an old one) should be masked as well."""
    assert "guess" not in MaskToken().mask("GET /api?token=guess-guess-guess")


@pytest.mark.parametrize(("folder", "name"), [
    ("proj", "venv-proj"), ("My Project", "venv-my-project"), ("a/b/c", "venv-a-b-c"), (".", "venv-workspace"),
    ("Ünïcode/x", "venv-n-code-x"), ("...", "venv-workspace"), ("data_2.1", "venv-data_2.1"),
])
def test_workspace_environments_get_kernel_names_jupyter_takes(folder, name):
    """A .venv's folder should become a kernel name of lower-case letters, digits, - _ . only."""
    assert environments.kernel_name_for_workspace(environments.WORKSPACE / folder) == name


@pytest.mark.parametrize(("name", "ok"), [("torch-2", True), ("a", True), ("python3", False), ("venv-x", False),
                                          ("Torch", False), ("-x", False), ("x" * 65, False), ("a b", False)])
def test_environment_names(name, ok):
    if ok:
        assert environments.check_name(name) == name
    else:
        with pytest.raises(environments.EnvError):
            environments.check_name(name)


def test_health_report_is_ok_only_when_recent(tmp_path: Path, monkeypatch):
    """The watchdog's report should read healthy only while it is `ok` and at most MAX_AGE seconds old."""
    report = tmp_path / "health"
    assert health.read_health(report) == (False, "no report from the watchdog yet")
    health.write_health("ok", report)
    assert health.read_health(report) == (True, "ok")
    health.write_health("Jupyter does not answer:\n timed out", report)
    assert health.read_health(report) == (False, "Jupyter does not answer: timed out"), "one line, always"
    health.write_health("ok", report)
    now = health.uptime()
    monkeypatch.setattr(health, "uptime", lambda: now + health.MAX_AGE + 1)
    healthy, text = health.read_health(report)
    assert not healthy and "s old" in text


def test_supervisord_conf_and_the_code_name_the_same_socket_file_and_programs():
    """The package should name supervisord.conf's path, socket and on-demand programs as the files do."""
    import configparser

    from persistent_notebooks import paths, programs

    repo = Path(__file__).resolve().parents[2]
    conf = configparser.RawConfigParser()
    conf.read(repo / "supervisord.conf")
    assert conf["unix_http_server"]["file"] == programs.SUPERVISOR_SOCKET
    assert conf["supervisorctl"]["serverurl"] == f"unix://{programs.SUPERVISOR_SOCKET}"
    on_demand = {s.split(":", 1)[1] for s in conf.sections()
                 if s.startswith("program:") and conf[s].get("autostart", "true") == "false"}
    assert on_demand == set(programs.ON_DEMAND), on_demand
    assert f"COPY supervisord.conf {paths.SUPERVISORD_CONF}\n" in (repo / "Dockerfile").read_text()


def test_asking_supervisord_leaves_no_socket_open(tmp_path):
    """programs.start() should close its connection to supervisord's socket (jupyter_server's own tests flag an
    unclosed socket as a ResourceWarning), answered or not."""
    import gc
    import socketserver
    import threading
    import warnings
    import xmlrpc.client

    from persistent_notebooks import programs

    class Answer(socketserver.StreamRequestHandler):
        def handle(self):
            length = 0
            while (line := self.rfile.readline().strip()):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.rfile.read(length)
            body = xmlrpc.client.dumps(xmlrpc.client.Fault(programs.ALREADY_STARTED, "ALREADY_STARTED"),
                                       methodresponse=True).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))

    path = str(tmp_path / "supervisor.sock")
    server = socketserver.UnixStreamServer(path, Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            assert programs.start("kernel-keeper", path=path) is False
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    finally:
        server.shutdown()
        server.server_close()


EXECUTE = {"msg_type": "execute_request", "msg_id": "m1"}


@pytest.mark.parametrize(("header", "metadata", "content", "followed"), [
    (EXECUTE, {"cellId": "0d5f3c2e-8a1b-4c6d-9e7f-123456789abc"}, {"code": "x = 1"}, True),  # JupyterLab's cell id
    (EXECUTE, {"cellId": "vscode-notebook-cell://dev-container%2B1/workspace/a.ipynb#W0sZmlsZQ%3D%3D"},
     {"code": "x = 1"}, False),  # VSCode's: a URI, and the notebook is VSCode's own to save
    (EXECUTE, {}, {"code": "x = 1"}, False),  # a console, or a client that names no cell
    (EXECUTE, {"cellId": "c1"}, {"code": "x = 1", "silent": True}, False),  # a frontend's own silent request
    ({"msg_type": "comm_msg", "msg_id": "m2"}, {"cellId": "c1"}, {}, False),
])
def test_only_jupyterlabs_cells_are_handed_to_the_runner(header, metadata, content, followed):
    """The server should hand the runner JupyterLab's notebook cells, and nothing VSCode or a console sends."""
    cell = follow.lab_cell("k1", "client-1", header, metadata, content)
    assert (cell is not None) == followed
    if followed:
        assert (cell.kernel, cell.client, cell.msg_id, cell.cell_id, cell.code) == \
            ("k1", "client-1", "m1", metadata["cellId"], "x = 1")
