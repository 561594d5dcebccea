"""Each user's image: the hub-user image plus one layer in which the notebook user has that user's ids.

The layer runs the image's own add-notebook-user (the script the single-user image's last layer runs),
so a user's files in their workspace folder and state volume belong to their uid. Built once per
(base image, uid, gid) by the Docker Engine's builder, then reused; a rebuilt base image gets new ones.
"""

from __future__ import annotations

import io

LABEL = "persistent-notebooks.hub-user-of"


def user_image(client, base: str, uid: int, gid: int, log=print) -> str:
    """The tag of the user's image, built from `base` when missing. client: docker.APIClient."""
    base_id = client.inspect_image(base)["Id"].split(":")[-1]
    tag = f"{base.rsplit(':', 1)[0]}:{base_id[:12]}-uid{uid}-gid{gid}"
    try:
        client.inspect_image(tag)
        return tag
    except Exception as exc:  # noqa: BLE001 - docker.errors.ImageNotFound; anything else surfaces below
        if getattr(getattr(exc, "response", None), "status_code", 404) != 404:
            raise
    dockerfile = (f"FROM {base}\nUSER root\nRUN add-notebook-user {uid} {gid}\nUSER {uid}:{gid}\n"
                  f'LABEL {LABEL}="{base_id}"\n')
    log(f"building {tag} (the notebook user with uid {uid}, gid {gid})")
    for chunk in client.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True,
                              decode=True, pull=False):
        if "error" in chunk:
            raise RuntimeError(f"building {tag} failed: {chunk['error'].strip()}")
    return tag
