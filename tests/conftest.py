"""Fixtures: one test image built from this checkout, the main stack (pytest-docker) and extra stacks.

Everything a run makes carries a unique name (image tag, compose projects) and is removed at the end. Under
pytest-xdist (scripts/test runs the suite on several workers, `--dist loadfile`: a module's tests, which may share a
stack of their own, run on one worker) the image is built once for all workers, each worker has a main stack of its
own, and the longest modules are handed out first, the two hub modules one after the other on one worker
(tests/schedule.py, hub_turn).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelclient import shutdown_kernel, start_kernel
from schedule import pytest_xdist_make_scheduler  # noqa: F401  (a hook: pytest finds it here)
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from stack import (
    COMPOSE_FILE,
    STACK_VARIABLES,
    TEST_GID,
    TEST_IMAGE,
    TEST_UID,
    Stack,
    build_test_image,
    image_exists,
    owned_folder,
    remove_test_image,
)


@pytest.fixture(scope="session")
def env_file(tmp_path_factory) -> Path:
    """An empty env file: stacks see only the variables a test gives, never the user's .env."""
    path = tmp_path_factory.mktemp("env") / "test.env"
    path.write_text("")
    return path


@pytest.fixture(scope="session")
def image_tags() -> Iterator[list[str]]:
    """Image tags a test builds for itself; removed at the end of the worker's session."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True)


def is_controller(config: pytest.Config) -> bool:
    """The process that ends the run: the xdist controller, or pytest itself when it runs alone."""
    return not hasattr(config, "workerinput")


def run_folder(config: pytest.Config, tmp_path_factory) -> Path:
    """The run's base temporary folder, shared by every worker (a worker's own is a folder in it)."""
    base = tmp_path_factory.getbasetemp()
    return base if is_controller(config) else base.parent


@contextlib.contextmanager
def run_lock(config: pytest.Config, tmp_path_factory, name: str) -> Iterator[None]:
    """An flock shared by every worker of this run (in the run's folder)."""
    with open(run_folder(config, tmp_path_factory) / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def hub_turn(pytestconfig, tmp_path_factory) -> Iterator[None]:
    """Held by a hub module while its hub runs: the hubs share their images (the hub's, its users'), and the swarm
    hub makes the engine a swarm, so the two hub modules never run at once on two workers."""
    with run_lock(pytestconfig, tmp_path_factory, "hub"):
        yield


@pytest.fixture(scope="session")
def test_image(pytestconfig, tmp_path_factory) -> str:
    """The image built from this checkout under a tag of this run's own: built once, by the first worker that
    needs it (the others wait for it), unless scripts/test built it before pytest began; removed at the end by
    whoever built it (pytest_sessionfinish, told by the file BUILT; or scripts/test)."""
    with run_lock(pytestconfig, tmp_path_factory, "test-image"):
        if not image_exists(TEST_IMAGE):
            build_test_image()
            (run_folder(pytestconfig, tmp_path_factory) / BUILT).touch()
    return TEST_IMAGE


BUILT = "test-image.built"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The run's test image goes once every worker is done with it, if this run built it."""
    if is_controller(session.config) and (session.config._tmp_path_factory.getbasetemp() / BUILT).exists():
        remove_test_image()


LOGGED = pytest.StashKey[list]()


def show_logs_on_failure(item: pytest.Item, stack: Stack) -> None:
    """The stack's last log lines go into the report of the test `item` if it fails (read while the stack runs)."""
    item.stash.setdefault(LOGGED, []).append(stack)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call) -> Iterator[None]:
    report = (yield).get_result()
    if report.when == "call" and report.failed:
        for stack in item.stash.get(LOGGED, []):
            report.sections.append((f"logs of stack {stack.project}", stack.logs()[-8000:]))


@pytest.fixture
def make_stack(request, test_image, env_file, tmp_path) -> Iterator:
    """Factory of extra stacks for one test, whose logs a failure shows; each is brought down with its volumes
    afterwards."""
    made: list[Stack] = []

    def make(**variables) -> Stack:
        workspace = owned_folder(tmp_path / f"workspace-{len(made)}", TEST_UID, TEST_GID)
        variables = {"HOST_UID": str(TEST_UID), "HOST_GID": str(TEST_GID), **variables}
        override = variables.pop("override", None)
        stack = Stack(workspace, variables.pop("NOTEBOOK_IMAGE", test_image), env_file, override, **variables)
        made.append(stack)
        show_logs_on_failure(request.node, stack)
        return stack

    yield make
    for stack in made:
        stack.down()


# --- the main stack, through pytest-docker ---------------------------------------------------

@pytest.fixture(scope="session")
def main_stack_config(test_image, env_file, tmp_path_factory) -> Iterator[Stack]:
    workspace = owned_folder(tmp_path_factory.mktemp("main") / "workspace", TEST_UID, TEST_GID)
    stack = Stack(workspace, test_image, env_file, HOST_UID=str(TEST_UID), HOST_GID=str(TEST_GID))
    # pytest-docker runs compose with this process's environment: give it exactly the stack's.
    saved = {k: os.environ.get(k) for k in STACK_VARIABLES}
    for key in STACK_VARIABLES:
        os.environ.pop(key, None)
    os.environ.update(stack.variables)
    yield stack
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def docker_compose_command(env_file) -> str:
    return f"docker compose --env-file {shlex.quote(str(env_file))}"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name(main_stack_config) -> str:
    return main_stack_config.project


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down --volumes --remove-orphans --timeout 30"]


@pytest.fixture
def kernel(stack: Stack) -> Iterator[str]:
    """A kernel on the shared stack, shut down after the test."""
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    yield kernel_id
    shutdown_kernel(stack.base_url, token, kernel_id)


@pytest.fixture(scope="session")
def stack(docker_services, main_stack_config) -> Stack:
    """The main stack, started once for the session and healthy (in Docker's eyes too)."""
    main_stack_config.wait_healthy(docker=True)
    return main_stack_config


def pytest_collection_modifyitems(config, items) -> None:
    """The unit layer (tests/unit, no Docker) runs first, so that a mistake there fails in seconds. (On workers,
    the order of the modules is the scheduler's: tests/schedule.py.)"""
    items.sort(key=lambda item: "unit" not in item.path.parent.parts[-1:])


@contextlib.contextmanager
def own_stack(test_image: str, env_file: Path, tmp_path_factory, name: str, unset: tuple[str, ...] = (),
              **variables: str) -> Iterator[Stack]:
    """A healthy stack of its own (for a module whose tests kill or restart things), removed afterwards."""
    workspace = owned_folder(tmp_path_factory.mktemp(name) / "workspace", TEST_UID, TEST_GID)
    stack = Stack(workspace, test_image, env_file, HOST_UID=str(TEST_UID), HOST_GID=str(TEST_GID), **variables)
    for variable in unset:
        del stack.variables[variable]
    try:
        stack.up()
        stack.wait_healthy()
        yield stack
    finally:
        stack.down()


# --- a real browser (JupyterLab's and the hub's pages) ----------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browsers(tmp_path):
    """Start headless Chromium sessions (each with a profile of its own); all quit at the end."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed: scripts/test installs them (Debian's chromium, "
                    "chromium-driver)")
    started = []

    def start():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                         "--disable-gpu", f"--user-data-dir={tmp_path / f'profile-{len(started)}'}"):
            options.add_argument(argument)
        started.append(webdriver.Chrome(service=Service(CHROMEDRIVER), options=options))
        return started[-1]

    try:
        yield start
    finally:
        for driver in started:
            with contextlib.suppress(WebDriverException):
                driver.quit()


@pytest.fixture
def browser(browsers):
    return browsers()


@contextlib.contextmanager
def screenshot_on_failure(driver, path):
    try:
        yield
    except BaseException as exc:
        try:
            driver.save_screenshot(str(path))
            note = f"(screenshot of the page: {path})"
        except WebDriverException as shot:
            note = f"(no screenshot: {shot.msg})"
        if isinstance(exc, AssertionError | TimeoutError):
            raise type(exc)(f"{exc} {note}") from exc
        raise


def css(driver, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)
