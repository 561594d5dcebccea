"""Unit layer: every setting read and validated in one place (persistent_notebooks/settings.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from persistent_notebooks import settings
from persistent_notebooks.settings import SettingError

VARIABLES = ("NOTEBOOK_PORT", "TMUX_SESSION", "TMUX_RESTORE", "NOTEBOOK_AWAY_BUFFER", "NOTEBOOK_MEMORY_LIMIT",
             "JUPYTER_CULL_IDLE_TIMEOUT", "JUPYTER_CULL_INTERVAL", "JUPYTER_CULL_CONNECTED", "JUPYTER_TOKEN",
             "JUPYTER_TOKEN_FILE", "WORKSPACE_IS_CUSTOM", "JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_SERVICE_PREFIX",
             "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "KERNEL_CHECKPOINTS", "KERNEL_SNAPSHOTS", "KERNEL_STATE_LIMIT",
             "KERNEL_STATE_FREE_FLOOR")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_with_nothing_set():
    """With no variable set, every setting should have its documented default."""
    assert settings.check_all() == "persistent-notebooks"
    assert settings.port() == 8888
    assert settings.tmux_restore() is True
    assert settings.away_buffer() == 32 * 2**20
    assert settings.memory_limit() == 0
    assert (settings.cull_idle_timeout(), settings.cull_interval(), settings.cull_connected()) == (0, 300, False)
    assert settings.workspace_is_custom() is False
    assert (settings.kernel_checkpoints(), settings.kernel_snapshots()) == (True, True)
    assert (settings.kernel_state_limit(), settings.kernel_state_floor()) == (8 * 2**30, 2 * 2**30)


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("65536", 65536), ("32m", 32 * 2**20), ("32M", 32 * 2**20), ("32MiB", 32 * 2**20), ("32mb", 32 * 2**20),
    ("1.5g", int(1.5 * 2**30)), ("16 g", 16 * 2**30), ("2t", 2 * 2**40), ("512k", 512 * 1024), (" 1g ", 2**30),
])
def test_sizes_read_as_docker_reads_them(text, size):
    """A size should read as bytes, with the units Docker takes for mem_limit."""
    assert settings.parse_size(text, "X") == size


@pytest.mark.parametrize("text", ["", "lots", "32 MB of it", "-1m", "1e9", "32q", "m"])
def test_a_bad_size_is_refused_naming_the_variable(text):
    """A size that is not one should be refused with the variable's name and an example."""
    with pytest.raises(SettingError, match=r"X=.* is not a size\. Set X in \.env"):
        settings.parse_size(text, "X")


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("90m", 5400), ("2d", 172800),
                                              ("1.5h", 5400), ("1w", 604800), ("2 D", 172800)])
def test_durations(text, seconds):
    """A duration should read in s, m, h, d or w."""
    assert settings.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2y", "-1d", "1d2h"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(SettingError, match="is not a duration"):
        settings.parse_duration(text)


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("TRUE", True), ("1", True), ("yes", True),
                                                 ("off", False), ("False", False), ("0", False), ("no", False),
                                                 ("", False), ("  ", False)])
def test_cull_connected_reads_every_word_for_true_and_false(monkeypatch, value, expected):
    """JUPYTER_CULL_CONNECTED=on should mean true everywhere (it once passed the check and meant false)."""
    monkeypatch.setenv("JUPYTER_CULL_CONNECTED", value)
    assert settings.cull_connected() is expected


@pytest.mark.parametrize(("name", "value", "message"), [
    ("NOTEBOOK_PORT", "88a8", "NOTEBOOK_PORT='88a8' is not a port number"),
    ("NOTEBOOK_PORT", "70000", "is not a port number"),
    ("NOTEBOOK_PORT", "0", "is not a port number"),
    ("TMUX_SESSION", "", "TMUX_SESSION is empty"),
    ("TMUX_SESSION", "my work", "e.g. to 'my-work'"),
    ("TMUX_SESSION", "a:b.c", "contains '.:'"),
    ("TMUX_RESTORE", "maybe", "TMUX_RESTORE='maybe' is not true or false"),
    ("JUPYTER_CULL_CONNECTED", "sometimes", "JUPYTER_CULL_CONNECTED='sometimes' is not true or false"),
    ("JUPYTER_CULL_IDLE_TIMEOUT", "1h", "JUPYTER_CULL_IDLE_TIMEOUT='1h' is not a whole number of seconds"),
    ("JUPYTER_CULL_IDLE_TIMEOUT", "-5", "is not a whole number"),
    ("JUPYTER_CULL_IDLE_TIMEOUT", "²", "JUPYTER_CULL_IDLE_TIMEOUT='²' is not a whole number of seconds"),
    ("NOTEBOOK_PORT", "８８８８", "is not a port number"),
    ("JUPYTER_CULL_INTERVAL", "0", "JUPYTER_CULL_INTERVAL='0' is not a whole number of seconds >= 1"),
    ("NOTEBOOK_AWAY_BUFFER", "lots", "NOTEBOOK_AWAY_BUFFER='lots' is not a size"),
    ("NOTEBOOK_MEMORY_LIMIT", "16 gigs", "NOTEBOOK_MEMORY_LIMIT='16 gigs' is not a size"),
    ("NOTEBOOK_MEMORY_LIMIT", "100m", "is below 256m"),
    ("KERNEL_CHECKPOINTS", "often", "KERNEL_CHECKPOINTS='often' is not true or false"),
    ("KERNEL_SNAPSHOTS", "2", "KERNEL_SNAPSHOTS='2' is not true or false"),
    ("KERNEL_STATE_LIMIT", "big", "KERNEL_STATE_LIMIT='big' is not a size"),
    ("KERNEL_STATE_LIMIT", "0", "KERNEL_STATE_LIMIT=0 would save nothing"),
    ("KERNEL_STATE_FREE_FLOOR", "-1g", "KERNEL_STATE_FREE_FLOOR='-1g' is not a size"),
])
def test_every_bad_setting_is_refused_by_check_all(monkeypatch, name, value, message):
    """check_all() (the check service, the entrypoint) should refuse each bad value, naming it and the fix."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as raised:
        settings.check_all()
    assert message in str(raised.value)
    assert "Set" in str(raised.value) or "Change" in str(raised.value) or "remove" in str(raised.value)


@pytest.mark.parametrize(("name", "value", "read", "expected"), [
    ("NOTEBOOK_PORT", "8890", settings.port, 8890),
    ("TMUX_SESSION", "work_2@gpu+x%,y", settings.session_name, "work_2@gpu+x%,y"),
    ("TMUX_RESTORE", "off", settings.tmux_restore, False),
    ("NOTEBOOK_AWAY_BUFFER", "0", settings.away_buffer, 0),
    ("NOTEBOOK_MEMORY_LIMIT", "256m", settings.memory_limit, 256 * 2**20),
    ("JUPYTER_CULL_IDLE_TIMEOUT", "3600", settings.cull_idle_timeout, 3600),
    ("JUPYTER_CULL_INTERVAL", " 60 ", settings.cull_interval, 60),
    ("WORKSPACE_IS_CUSTOM", "yes", settings.workspace_is_custom, True),
    ("KERNEL_CHECKPOINTS", "no", settings.kernel_checkpoints, False),
    ("KERNEL_STATE_LIMIT", "512m", settings.kernel_state_limit, 512 * 2**20),
    ("KERNEL_STATE_FREE_FLOOR", "0", settings.kernel_state_floor, 0),
])
def test_good_values_read_as_the_programs_use_them(monkeypatch, name, value, read, expected):
    monkeypatch.setenv(name, value)
    assert read() == expected
    settings.check_all()


@pytest.mark.parametrize(("token", "message"), [
    ("", "is empty"), ("short", "has 5 characters; at least 16"), ("x" * 513, "at most 512"),
    ("sixteen chars ok", "white space"), ("abcdefghijklmnop\u00e9", "non-ASCII"),
])
def test_a_bad_token_is_refused(monkeypatch, tmp_path, token, message):
    monkeypatch.setenv("JUPYTER_TOKEN", token)
    with pytest.raises(SettingError, match=message):
        settings.given_token(tmp_path / "kept")


def test_token_sources_in_order(monkeypatch, tmp_path):
    """JUPYTER_TOKEN first, then JUPYTER_TOKEN_FILE, then the kept one; none yet is NoTokenYet."""
    kept = tmp_path / "kept"
    with pytest.raises(settings.NoTokenYet):
        settings.given_token(kept)
    kept.write_text("k" * 20 + "\n")
    assert settings.given_token(kept) == ("k" * 20, "kept")
    token_file = tmp_path / "token"
    token_file.write_text("f" * 20 + "\n")
    monkeypatch.setenv("JUPYTER_TOKEN_FILE", str(token_file))
    assert settings.given_token(kept) == ("f" * 20, str(token_file))
    monkeypatch.setenv("JUPYTER_TOKEN", "e" * 20)
    assert settings.given_token(kept) == ("e" * 20, "JUPYTER_TOKEN")


def test_a_token_file_that_is_no_file_is_refused_as_what_it_is(monkeypatch, tmp_path):
    """A missing path, a folder, a device or a big file named as the token file should be refused, named."""
    for path, message in ((tmp_path / "missing", "does not exist"), (tmp_path, "is a folder"),
                          (os.devnull, "is not a regular file")):
        monkeypatch.setenv("JUPYTER_TOKEN_FILE", str(path))
        with pytest.raises(SettingError, match=message):
            settings.given_token(tmp_path / "kept")
    big = tmp_path / "big"
    big.write_text("x" * 4096)
    monkeypatch.setenv("JUPYTER_TOKEN_FILE", str(big))
    with pytest.raises(SettingError, match="4096 bytes: that is not a token file"):
        settings.given_token(tmp_path / "kept")


def test_under_a_hub_the_spawners_url_and_prefix_rule(monkeypatch):
    """Under JupyterHub the port and path should come from the spawner's URL and prefix, not NOTEBOOK_PORT."""
    assert settings.hub_mode() is False and settings.base_url() == "/"
    monkeypatch.setenv("NOTEBOOK_PORT", "9999")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://0.0.0.0:8890/user/alice/")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "abc")
    assert settings.hub_mode() is True
    assert (settings.port(), settings.base_url(), settings.hub_token()) == (8890, "/user/alice/", "abc")


@pytest.mark.parametrize(("variables", "says"), [
    ({"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/"}, "JUPYTERHUB_API_TOKEN is not"),
    ({"JUPYTERHUB_SERVICE_URL": "0.0.0.0:8888", "JUPYTERHUB_API_TOKEN": "x"}, "JUPYTERHUB_SERVICE_URL="),
    ({"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/", "JUPYTERHUB_API_TOKEN": "x",
      "JUPYTERHUB_SERVICE_PREFIX": "user/a/"}, "JUPYTERHUB_SERVICE_PREFIX="),
])
def test_bad_hub_variables_are_refused(monkeypatch, variables, says):
    """A container started by hand with half the hub's variables should be refused, saying which."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match=says):
        settings.hub_token()
        settings.base_url()
        settings.port()


def test_a_hub_needs_the_hub_user_image(monkeypatch, tmp_path):
    """The plain image (no jupyterhub-singleuser) should be refused under a hub, naming the image to use."""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://0.0.0.0:8888/")
    monkeypatch.setattr(settings, "SINGLEUSER_SERVER", str(tmp_path / "missing"))
    with pytest.raises(SettingError, match="hub-user image"):
        settings.server_command()
    monkeypatch.delenv("JUPYTERHUB_SERVICE_URL")
    assert settings.server_command() == settings.PLAIN_SERVER


REPO = Path(__file__).resolve().parents[2]


def env_example() -> dict[str, str]:
    """NAME -> the value .env.example shows (its lines `#NAME=value`)."""
    found = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if match := re.fullmatch(r"#([A-Z][A-Z0-9_]*)=(.*)", line):
            found[match[1]] = match[2]
    return found


def test_env_example_shows_every_declared_setting_with_its_default():
    """.env.example should name exactly the declared settings, in their order, each with its default (or the
    example the declaration gives)."""
    shown = env_example()
    assert list(shown) == [s.name for s in settings.SETTINGS]
    for setting in settings.SETTINGS:
        assert shown[setting.name] == (setting.example if setting.example is not None else setting.default), setting


def test_compose_reads_no_undeclared_variable():
    """Every variable compose.yaml reads from .env or the environment should be a declared setting."""
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (REPO / "compose.yaml").read_text()))
    assert read - {s.name for s in settings.SETTINGS} == set()


def test_the_container_reads_each_declared_value_as_its_default():
    """A declared default should be what the container's reader makes of an unset variable."""
    for setting in settings.SETTINGS:
        if setting.read is None or setting.name == "TMUX_SESSION":
            continue
        unset = setting.read()
        os.environ[setting.name] = setting.default
        try:
            assert setting.read() == unset, setting.name
        finally:
            del os.environ[setting.name]
