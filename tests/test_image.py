"""Extending the image without editing it: EXTRA_APT_PACKAGES and EXTRA_PIP_REQUIREMENTS (build arguments)."""

from __future__ import annotations

import subprocess

from stack import REPO, RUN_ID, TEST_GID, TEST_UID, Stack


def in_image(tag: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", tag, "-c", command],
                          capture_output=True, text=True, timeout=120)


def test_extra_packages_are_built_in(test_image, image_tags, env_file, tmp_path):
    """The image built with EXTRA_APT_PACKAGES=jq and a requirements file should have both; the plain one neither."""
    requirements = REPO / f"requirements-pntest-{RUN_ID}.txt"  # at the top of the checkout, as documented
    requirements.write_text("iniconfig==2.1.0\n")
    tag = f"persistent-notebooks:test-{RUN_ID}-extended"
    image_tags.append(tag)
    try:
        builder = Stack(tmp_path, tag, env_file, HOST_UID=str(TEST_UID), HOST_GID=str(TEST_GID),
                        EXTRA_APT_PACKAGES="jq", EXTRA_PIP_REQUIREMENTS=requirements.name)
        builder.compose("build", timeout=1800)
    finally:
        requirements.unlink()
    probe = "command -v jq && /opt/venv/bin/python -c 'import iniconfig'"
    extended = in_image(tag, probe)
    assert extended.returncode == 0, f"jq or iniconfig missing from the extended image: {extended.stderr}"
    assert in_image(test_image, "command -v jq").returncode != 0, "the plain image has jq already"
    assert in_image(test_image, "/opt/venv/bin/python -c 'import iniconfig'").returncode != 0
    tools = in_image(test_image, "git --version && ssh -V")
    assert tools.returncode == 0 and "git version" in tools.stdout, tools.stdout + tools.stderr
