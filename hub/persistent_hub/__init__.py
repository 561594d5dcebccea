"""The hub side of persistent-notebooks (runs in the hub's container, hub/Dockerfile).

- accounts: user names as the hub takes them, each user's uid/gid (users.json in the hub's volume), the
  admin service's token; stdlib only.
- images: each user's image, the hub-user image with one layer giving the notebook user that user's uid.
- spawner: DockerSpawner, keeping servers (never removed, found again by a new hub) with a workspace
  folder, a state volume and an image of each user's own.
- admin: `python -m persistent_hub.admin` (scripts/hub): users made, removed and listed, API tokens.

jupyterhub_config.py (beside this package in the repository) puts these together.
"""
