"""The hub with SwarmSpawner (hub/compose.swarm.yaml) on a one-node swarm this module makes and leaves."""

from __future__ import annotations

import subprocess

import pytest
from hubclient import running_hub
from kernelclient import KernelConnection
from stack import docker_client, wait_for

PROJECT = "pnhubswarm"


def swarm_state() -> str:
    return docker_client().info()["Swarm"]["LocalNodeState"]


@pytest.fixture(scope="module")
def swarm(hub_turn):
    """A one-node swarm of the test's own; the engine is left as it was found (no swarm, no docker_gwbridge)."""
    if swarm_state() != "inactive":
        pytest.skip(f"this engine is in a swarm already ({swarm_state()}): the test makes a swarm of its own "
                    "and leaves it, so it runs only on an engine in none")
    client = docker_client()
    had_gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
    subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
        wait_for(lambda: swarm_state() == "inactive", 60, "the engine to leave the test's swarm")
        # `swarm init` made the bridge that connects overlay networks to the host; `leave` keeps it.
        if not had_gwbridge:
            for network in client.networks.list(names=["docker_gwbridge"]):
                network.remove()


@pytest.fixture(scope="module")
def hub(swarm, tmp_path_factory):
    with running_hub(PROJECT, tmp_path_factory.mktemp("hub-swarm") / "users", swarm=True) as hub:
        made = hub.script("user", "add", "erin", "--password-stdin", stdin="erin-secret-42\n")
        assert made.returncode == 0, made.stderr
        hub.passwords["erin"] = "erin-secret-42"
        yield hub


def test_swarm_server_keeps_a_kernel_across_a_hub_restart(hub):
    """A user's server should run as a swarm service pinned to its node and keep a kernel across a hub restart."""
    erin = hub.logged_in("erin")
    erin.start_server()
    service = docker_client().services.get(f"{PROJECT}-user-erin")
    constraints = service.attrs["Spec"]["TaskTemplate"]["Placement"].get("Constraints", [])
    node = docker_client().info()["Swarm"]["NodeID"]
    assert constraints == [f"node.id=={node}"], f"the user is not pinned to their volume's node: {constraints}"
    grace = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("StopGracePeriod")
    assert grace == 90 * 10**9, f"the server's stop grace is {grace} ns, not the single-user stack's 90 s"
    kernel_id = erin.server_api("POST", "/api/kernels", json={"name": "python3"}).json()["id"]
    with KernelConnection(erin.server_url, erin.token, kernel_id) as kernel:
        kernel.execute("kept = 6 * 7")
    tasks = {t["ID"] for t in service.tasks()}
    hub.compose("restart", "hub")
    hub.wait_up()
    wait_for(lambda: erin.server_api("GET", f"/api/kernels/{kernel_id}").status_code == 200, 60,
             "erin's kernel through the restarted hub")
    with KernelConnection(erin.server_url, erin.token, kernel_id) as kernel:
        out = kernel.execute("print(kept)")
    assert out["stdout"].strip() == "42", out
    service.reload()
    assert {t["ID"] for t in service.tasks()} == tasks, "erin's server was restarted with the hub"
