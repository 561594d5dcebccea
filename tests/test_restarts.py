"""What survives restarts: the token and URL, files, the kept state; and a different host uid."""

from __future__ import annotations

import os
import shutil

import pytest
from stack import COMPOSE_FILE, Stack, owned_folder

ENV_TOKEN = "test-token-from-env-0123456789abcdef"


@pytest.mark.parametrize("given_token", [None, ENV_TOKEN], ids=["generated-token", "env-token"])
def test_url_survives_restart_and_recreate(make_stack, given_token):
    """Token and URL should stay the same across `restart` and `down` + `up` (volume kept)."""
    stack: Stack = make_stack(**({"JUPYTER_TOKEN": given_token} if given_token else {}))
    stack.up()
    stack.wait_healthy()
    url, token = stack.url(), stack.token()
    if given_token:
        assert token == given_token
    (stack.workspace / "notes.txt").write_text("kept\n")
    first_container = stack.container_id()
    stack.exec("sh", "-c", 'mkdir -p "$PYTHONUSERBASE" && echo kept > "$PYTHONUSERBASE/marker"')

    stack.compose("restart")
    stack.wait_healthy()
    assert stack.url() == url, "the URL changed across `docker compose restart`"

    stack.compose("down")  # keeps the volumes
    stack.up()
    stack.wait_healthy()
    assert stack.container_id() != first_container, "down/up should have made a new container"
    assert stack.url() == url, "the URL changed across `docker compose down` + `up`"
    assert stack.api_status(token) == 200
    assert (stack.workspace / "notes.txt").read_text() == "kept\n"
    kept = stack.exec("sh", "-c", 'cat "$PYTHONUSERBASE/marker"', check=False).stdout
    assert kept == "kept\n", "the state volume (pip --user packages) was not kept"


def test_token_from_a_docker_secret(make_stack, tmp_path):
    """A token given as a Docker secret (/run/secrets/jupyter_token) should be the server's token."""
    secret = tmp_path / "jupyter_token"
    secret.write_text("token-from-a-docker-secret-0123456789\n")
    secret.chmod(0o644)
    override = tmp_path / "compose.override.yaml"
    override.write_text(
        "services:\n  notebooks:\n    secrets: [ca_bundle, jupyter_token]\n"
        f"secrets:\n  jupyter_token:\n    file: {secret}\n"
    )
    stack: Stack = make_stack(override=override)
    stack.up()
    stack.wait_healthy()
    assert stack.token() == "token-from-a-docker-secret-0123456789"
    assert stack.api_status("token-from-a-docker-secret-0123456789") == 200
    assert not stack.exec("test", "-e", "/var/lib/persistent-notebooks/jupyter_token", check=False).returncode == 0, \
        "a token was generated although the secret gave one"


def test_other_host_uid_owns_the_files(make_stack, image_tags, test_image):
    """With HOST_UID/HOST_GID set, the notebook user and the files it makes should have those ids."""
    if os.getuid() != 0:
        pytest.skip("needs root: only root can hand the workspace to another uid, and see that uid own files")
    tag = f"{test_image}-uid4321"
    image_tags.append(tag)
    stack: Stack = make_stack(HOST_UID="4321", HOST_GID="4322", NOTEBOOK_IMAGE=tag)
    owned_folder(stack.workspace, 4321, 4322)
    stack.compose("build", timeout=900)
    stack.up()
    stack.wait_healthy()
    assert stack.exec("id", "-u").stdout.strip() == "4321"
    stack.exec("touch", "/workspace/mine")
    st = (stack.workspace / "mine").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322), f"owned by {st.st_uid}:{st.st_gid}"


def test_root_owned_default_workspace_is_handed_over(make_stack, tmp_path):
    """A default ./workspace owned by root (a clone made by root) should be handed to HOST_UID by `check`."""
    if os.getuid() != 0:
        pytest.skip("needs root to make a root-owned folder")
    checkout = tmp_path / "checkout"
    (checkout / "workspace").mkdir(parents=True)  # root's, as after `sudo git clone`
    shutil.copy(COMPOSE_FILE, checkout / "compose.yaml")
    stack: Stack = make_stack()
    stack.compose_file = checkout / "compose.yaml"
    del stack.variables["WORKSPACE"]  # the default, ./workspace beside that compose.yaml
    stack.up()
    stack.wait_healthy()
    st = (checkout / "workspace").stat()
    expected = (int(stack.variables["HOST_UID"]), int(stack.variables["HOST_GID"]))
    assert (st.st_uid, st.st_gid) == expected, f"./workspace is {st.st_uid}:{st.st_gid}, not {expected}"
    stack.exec("touch", "/workspace/made-inside")
    assert (checkout / "workspace" / "made-inside").stat().st_uid == expected[0]
