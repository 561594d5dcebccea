"""Spawners for persistent servers: each user's server is kept, and found again by a new hub.

What they add to DockerSpawner and SwarmSpawner: before a server is made, the user's ids (accounts),
their image with that uid (images), and their workspace folder under HUB_WORKSPACES, made and owned by
their uid (mode 0700: no other user's server mounts it, no other host user reads it). The hub never
removes a running server's container (DockerSpawner.remove stays False; cleanup_servers is off in the
config): stopping the hub, or recreating it, ends no kernel.

On a swarm (SwarmSpawner: a service per user) a user's state volume is a local volume of the node their
server first ran on, so the user is pinned to that node (a placement constraint kept in the spawner's
state, in the hub's database); their workspace folder and image must be on that node too (see the
README: one node, or HUB_WORKSPACES on a shared file system and the image on every node).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from docker.types import Mount
from dockerspawner import DockerSpawner, SwarmSpawner
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from . import accounts, images


class PersistentServers(LoggingConfigurable):
    """The part both spawners share (first in their bases; its settings: c.PersistentServers)."""

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

    async def prepare(self) -> None:
        """The user's ids, image and folder, before a new container or service is made."""
        name = accounts.check_username(self.user.name)
        uid, gid = accounts.ids_of(name)
        self.image = await asyncio.to_thread(images.user_image, self.client, self.base_image, uid, gid,
                                             self.log.info)
        await asyncio.to_thread(self._workspace, uid, gid)


class PersistentDockerSpawner(PersistentServers, DockerSpawner):
    async def start(self):
        kept = await self.get_object()
        if kept is None:
            await self.prepare()
        else:
            self.image = kept["Config"]["Image"]  # a kept container is started as it is, from its image
        return await super().start()


class PersistentSwarmSpawner(PersistentServers, SwarmSpawner):
    node = Unicode("", help="The swarm node the user's state volume is on (kept in the spawner's state).")

    def get_state(self):
        state = super().get_state()
        if self.node:
            state["node"] = self.node
        return state

    def load_state(self, state):
        super().load_state(state)
        self.node = state.get("node", self.node)

    def clear_state(self):
        node = self.node
        super().clear_state()
        self.node = node  # the volume stays on that node after the service goes

    @property
    def mounts(self):
        """Named volumes as volumes (SwarmSpawner makes every mount a bind mount), folders as binds."""
        return [Mount(target=vol["bind"], source=source, read_only=vol["mode"] == "ro",
                      type="bind" if source.startswith("/") else "volume")
                for source, vol in self.volume_binds.items()]

    async def start(self):
        if await self.get_object() is None:
            await self.prepare()
            if not self.node:
                self.node = (await self.docker("info"))["Swarm"]["NodeID"]
            self.extra_placement_spec = {**self.extra_placement_spec, "constraints": [f"node.id=={self.node}"]}
        answer = await super().start()
        return answer
