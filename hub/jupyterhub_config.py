"""JupyterHub's settings for persistent-notebooks (hub/compose.yaml runs the hub with this file).

Each user's server is the project's persistent server (supervisord, the named tmux session, the kernel
keeper, adoption after a crash) run by jupyterhub-singleuser in a container of its own, spawned by
DockerSpawner on the hub's network; the hub's login replaces the fixed token. Servers are kept: the
hub never removes their containers nor stops them when it stops, and a new hub finds them again.
"""

import os

from persistent_hub import accounts, deployment, passwords
from persistent_hub.spawner import PersistentDockerSpawner, PersistentSwarmSpawner

c = get_config()  # noqa: F821 - provided by JupyterHub

PREFIX = deployment.prefix()

# --- the hub and its proxy -----------------------------------------------------------------------
# The proxy (configurable-http-proxy, started by the hub) listens on all of the container's
# addresses; compose publishes it on the host's loopback only. The hub's API on the network, for servers.
c.JupyterHub.ip = "0.0.0.0"
c.JupyterHub.port = 8000
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = "hub"
c.JupyterHub.db_url = f"sqlite:///{accounts.STATE_DIR / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(accounts.STATE_DIR / "jupyterhub_cookie_secret")
# Persistence is the point: stopping (or upgrading, recreating) the hub stops no user's server.
c.JupyterHub.cleanup_servers = False
# A server found running by a new hub is adopted as it is, not restarted.
c.JupyterHub.allow_named_servers = False
c.JupyterHub.default_url = "/hub/home"

# --- users ---------------------------------------------------------------------------------------
# NativeAuthenticator (persistent_hub.auth): passwords bcrypt-hashed in the hub's database, no
# sign-up; users are made by an admin (`scripts/hub user add`). Why this one: hashed per-user
# passwords in the hub's own volume, nothing to set up on the host (PAM would need the host's
# accounts inside the container; the hub's shared password would let anyone who has it log in as
# anyone).
c.JupyterHub.authenticator_class = "persistent_hub.auth.HashedPasswordAuthenticator"
c.NativeAuthenticator.enable_signup = False
c.NativeAuthenticator.open_signup = False
c.NativeAuthenticator.minimum_password_length = passwords.MIN_CHARACTERS
c.NativeAuthenticator.check_common_password = True
# Lock-out (persistent_hub.auth): 5 failed logins from one client as one user refuse that client for 60 s,
# doubling with each further spell up to an hour; a browser that logged in as the user before is a client
# of its own (a signed cookie), so nobody else's failures lock them out. Kept in login-failures.json.
c.NativeAuthenticator.allowed_failed_logins = 5
c.NativeAuthenticator.seconds_before_next_try = 60
# Who may log in is who has a password (NativeAuthenticator checks it); names as containers can hold them.
c.Authenticator.allow_all = True
c.Authenticator.username_pattern = f"^{accounts.USERNAME_PATTERN}$"
# scripts/hub talks to the hub's API as this service (its token: private, in the hub's volume).
c.JupyterHub.services = [{"name": accounts.ADMIN_SERVICE, "api_token": accounts.admin_token()}]
c.JupyterHub.load_roles = [{"name": "admin", "services": [accounts.ADMIN_SERVICE]}]

# --- each user's server ------------------------------------------------------------------------------
# HUB_SPAWNER=swarm (hub/compose.swarm.yaml): a swarm service per user instead of a container.
SWARM = os.environ.get("HUB_SPAWNER", "docker") == "swarm"
c.JupyterHub.spawner_class = PersistentSwarmSpawner if SWARM else PersistentDockerSpawner
c.PersistentServers.base_image = os.environ.get("HUB_USER_IMAGE", "persistent-notebooks-hub-user:latest")
c.PersistentServers.workspaces_host = os.environ["HUB_WORKSPACES"]
c.DockerSpawner.pull_policy = "skip" if SWARM else "never"
c.DockerSpawner.prefix = PREFIX
c.PersistentDockerSpawner.remove = False  # (a swarm service always goes when its server stops)
c.DockerSpawner.network_name = deployment.network()
c.DockerSpawner.use_internal_ip = True
# The proxy reaches a server by its container's name, which Docker's DNS on the network resolves to its
# address now: a container restarted by hand or by Docker may come back with another address.
c.DockerSpawner.use_internal_hostname = True
c.DockerSpawner.port = 8888
c.DockerSpawner.volumes = {
    # The user's folder on the host (HUB_WORKSPACES/NAME, made by the spawner, owned by their uid).
    f"{os.environ['HUB_WORKSPACES']}/{{raw_username}}": "/workspace",
    # Tokens, kernels' records, tmux's save, environments, history: as the single-user stack's 'state'.
    f"{PREFIX}-{{username}}-state": "/var/lib/persistent-notebooks",
    f"{PREFIX}-{{username}}-vscode": "/home/notebook/.vscode-server",
    # The CA certificates to trust (CA_BUNDLE), as the single-user stack's secret.
    os.environ.get("HUB_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"): {"bind": "/run/secrets/ca_bundle",
                                                                           "mode": "ro"},
}
c.DockerSpawner.extra_host_config = {
    "security_opt": ["no-new-privileges:true"],
    "cap_drop": ["ALL"],
    # Back after a reboot of the engine, as the single-user stack; a server stopped on purpose stays stopped.
    "restart_policy": {"Name": "unless-stopped"},
}
LABELS = {"persistent-notebooks.hub": deployment.project()}
# A server stopped (by its user, the admin, a hub shutdown) gets the single-user stack's grace: each kernel saves its
# variables before it ends (compose.yaml's stop_grace_period), where Docker's default would kill it after 10 s.
STOP_GRACE_S = 90
c.DockerSpawner.extra_create_kwargs = {"labels": LABELS, "hostname": "notebooks", "stop_timeout": STOP_GRACE_S}
# A service's containers: no capabilities (an Engine 20.10 service cannot set no-new-privileges; the
# image runs as the user's uid either way), the same hostname and labels.
c.SwarmSpawner.extra_container_spec = {"cap_drop": ["ALL"], "hostname": "notebooks", "labels": LABELS,
                                       "stop_grace_period": STOP_GRACE_S * 10**9}
c.SwarmSpawner.extra_create_kwargs = {"labels": LABELS}
# The hub reaches a service's one task by its name resolved to the task's own address (DNS round
# robin), not through a virtual IP: one hop fewer, and the virtual IP does not answer on a one-node
# swarm advertised on loopback.
c.SwarmSpawner.extra_endpoint_spec = {"mode": "dnsrr"}
_memory = os.environ.get("HUB_USER_MEMORY_LIMIT", "").strip()
if _memory and _memory != "0":
    c.DockerSpawner.mem_limit = _memory
# The user's settings (as .env's in the single-user stack), passed on when set.
c.DockerSpawner.environment = {name: os.environ[name] for name in (
    "NOTEBOOK_AWAY_BUFFER", "TMUX_SESSION", "TMUX_RESTORE", "JUPYTER_CULL_IDLE_TIMEOUT", "JUPYTER_CULL_INTERVAL",
    "JUPYTER_CULL_CONNECTED", "KERNEL_CHECKPOINTS", "KERNEL_SNAPSHOTS", "KERNEL_STATE_LIMIT",
    "KERNEL_STATE_FREE_FLOOR") if os.environ.get(name)}
# A first start builds the user's image layer and starts supervisord: give it time.
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
# The proxy is configurable-http-proxy as JupyterHub ships it (Node; Debian's package), started by the
# hub with its defaults: it streams responses (the "Your server is starting up" page's events as they
# happen, downloads of any size) and waits on a target as long as the target takes. The pure-Python
# port buffered every response whole in memory: the page's bar stood still until the end, and a
# download over 100 MB failed with a 503.
# No idle culling: the hub ships none (jupyterhub-idle-culler is not installed), and each server's
# own kernel culling is off unless JUPYTER_CULL_IDLE_TIMEOUT is set (it never culls a busy kernel).
