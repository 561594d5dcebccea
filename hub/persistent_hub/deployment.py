"""The hub's own container, asked once: its compose project (user containers and volumes are named
after it, so two hubs on one engine keep apart) and its network (user containers join it)."""

from __future__ import annotations

import functools
import os
import socket


@functools.cache
def _me() -> dict:
    import docker

    return docker.APIClient().inspect_container(socket.gethostname())


def project() -> str:
    return _me()["Config"]["Labels"].get("com.docker.compose.project", "persistent-notebooks-hub")


def network() -> str:
    return next(iter(_me()["NetworkSettings"]["Networks"]))


def prefix() -> str:
    """User containers are PREFIX-NAME, their volumes PREFIX-NAME-state and PREFIX-NAME-vscode."""
    return os.environ.get("HUB_CONTAINER_PREFIX") or f"{project()}-user"


def container_name(user: str, prefix_: str | None = None) -> str:
    """As DockerSpawner names it (its escaping: . _ - become -2e -5f -2d)."""
    from dockerspawner import DockerSpawner

    return f"{prefix() if prefix_ is None else prefix_}-{DockerSpawner._escape(user)}"
