"""What survives restarts: the token and URL, files, the kept state; and a different host uid."""

from __future__ import annotations

import pytest
from stack import Stack

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


def test_other_host_uid_owns_the_files(make_stack, image_tags, test_image):
    """With HOST_UID/HOST_GID set, the notebook user and the files it makes should have those ids."""
    tag = f"{test_image}-uid4321"
    image_tags.append(tag)
    from conftest import owned_folder
    stack: Stack = make_stack(HOST_UID="4321", HOST_GID="4322", NOTEBOOK_IMAGE=tag)
    owned_folder(stack.workspace, 4321, 4322)
    stack.compose("build", timeout=900)
    stack.up()
    stack.wait_healthy()
    assert stack.exec("id", "-u").stdout.strip() == "4321"
    stack.exec("touch", "/workspace/mine")
    st = (stack.workspace / "mine").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322), f"owned by {st.st_uid}:{st.st_gid}"
