"""DockerSpawner for persistent servers: each user's container is kept, and found again by a new hub.

What it adds to DockerSpawner: before each start, the user's ids (accounts), their image with that uid
(images), and their workspace folder under HUB_WORKSPACES, made and owned by their uid (mode 0700: no
other user's server mounts it, no other host user reads it). Containers are never removed by the
hub (DockerSpawner.remove stays False; cleanup_servers is off in the config): stopping the hub, or
recreating it, ends no kernel.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from dockerspawner import DockerSpawner
from traitlets import Unicode

from . import accounts, images


class PersistentDockerSpawner(DockerSpawner):
    base_image = Unicode("persistent-notebooks-hub-user:latest", config=True,
                         help="The hub-user image (the repository's Dockerfile, target hub-user).")
    workspaces_host = Unicode(config=True, help="HUB_WORKSPACES: the host folder of users' workspace folders.")
    workspaces_here = Unicode("/hub-workspaces", config=True, help="Where the hub sees HUB_WORKSPACES.")

    def _workspace(self, uid: int, gid: int) -> None:
        folder = Path(self.workspaces_here) / self.user.name
        if not folder.exists():
            folder.mkdir(mode=0o700)
            os.chown(folder, uid, gid)
            self.log.info("made %s's workspace folder %s/%s (uid %d)", self.user.name, self.workspaces_host,
                          self.user.name, uid)
        elif folder.stat().st_uid == 0:
            os.chown(folder, uid, gid)  # made by hand as root: handed over, as the single-user check does

    async def get_command(self):
        """Nothing: the image's entrypoint (tini, supervisord) is the whole program, and it starts
        jupyterhub-singleuser from the hub's JUPYTERHUB_* variables (no arguments to pass)."""
        return []

    async def start(self):
        name = accounts.check_username(self.user.name)
        uid, gid = accounts.ids_of(name)
        if await self.get_object() is None:
            # A new container: the user's image and folder. A kept one is started as it is.
            self.image = await asyncio.to_thread(images.user_image, self.client, self.base_image, uid, gid,
                                                 self.log.info)
            await asyncio.to_thread(self._workspace, uid, gid)
        return await super().start()
