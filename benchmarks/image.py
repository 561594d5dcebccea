"""The image: built for the run unless --image names one, and its uncompressed size by layer group (base image,
Debian packages, Python venv, the rest): what a user downloads and stores."""

from __future__ import annotations

import docker
from harness import Bench, progress
from stack import Stack

BUILT = "persistent-notebooks:benchmark"  # the tag of the image the benchmark builds (removed at the end)


def build(bench: Bench) -> None:
    """Build the image as compose builds it, when --image names none (bench.image then its tag)."""
    if bench.image is None:
        bench.image = BUILT
        progress("building the image (cached layers are reused)")
        Stack(bench.workspace, bench.image, bench.env_file, HOST_UID=bench.uid, HOST_GID=bench.uid).compose(
            "build", timeout=1800)


def image_sizes(client: docker.DockerClient, image: str, base: str) -> dict:
    """Uncompressed size, and the layers attributed to base, Debian packages, venv and the rest."""
    history = client.api.history(image)  # newest first; the base image's own layers come last
    own = history[: len(history) - len(client.api.history(base))]
    groups = {"base image": client.images.get(base).attrs["Size"], "debian packages": 0, "python venv": 0,
              "project files and user": 0}
    for layer in own:
        created = layer.get("CreatedBy", "")
        # The Dockerfile's steps: the system (Debian's packages, supervisord), the notebook venv (uv), the rest.
        key = ("debian packages" if "apt-install ca-certificates" in created else
               "python venv" if "uv pip install" in created else "project files and user")
        groups[key] += layer["Size"]
    total = client.images.get(image).attrs["Size"]
    return {"total_mb": total / 1e6, **{f"{k}_mb": v / 1e6 for k, v in groups.items()}}


def measure(bench: Bench) -> None:
    """results["image"]."""
    bench.results["image"] = image_sizes(bench.client, bench.image, bench.args.base_image)
