"""JupyterLab in a real (headless) Chromium: the URL opens it, and a running kernel survives a Jupyter crash.

The browser is Debian's chromium driven by Selenium through chromedriver (scripts/test installs both
where missing). On failure a screenshot of the page is kept; its path is in the failure message.
"""

from __future__ import annotations

import re

from conftest import css, screenshot_on_failure
from kernelclient import api
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from stack import Stack, wait_for

LONG_CELL = "import time\nfor i in range(1200):\n    print(i, flush=True)\n    time.sleep(0.5)"


def cell_output(driver, index: int) -> str:
    cells = css(driver, ".jp-Notebook .jp-Cell")
    if len(cells) <= index:
        return ""
    outputs = cells[index].find_elements(By.CSS_SELECTOR, ".jp-OutputArea")
    return outputs[0].get_attribute("textContent") if outputs else ""


def dismiss_dialogs(driver) -> None:
    """Click away JupyterLab's dialogs as a user would (after a crash: "Server Connection Error", Dismiss)."""
    for button in css(driver, ".jp-Dialog .jp-Dialog-footer button.jp-mod-accept"):
        try:
            button.click()
        except WebDriverException:
            pass  # gone meanwhile


def run_in_new_cell(driver, code: str) -> None:
    """Type code into the cell being edited and run it with Shift+Enter (JupyterLab then edits a new one)."""
    blocked: list[str] = []

    def clicked():
        editors = css(driver, ".jp-Notebook .jp-Cell.jp-mod-active .cm-content")
        if not editors:
            blocked[:] = ["no active cell editor in the notebook"]
            return None
        try:
            # In the middle of the notebook's view, not at an edge where a notification may sit.
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", editors[0])
            editors[0].click()
            return editors[0]
        except ElementClickInterceptedException as exc:  # says which element would receive the click
            dialogs = [d.get_attribute("textContent") for d in css(driver, ".jp-Dialog")]
            blocked[:] = [exc.msg.splitlines()[0], *(f"dialog: {text[:300]}" for text in dialogs)]
            dismiss_dialogs(driver)
            return None

    try:
        editor = wait_for(clicked, 30, "the active cell's editor to take a click")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {'; '.join(blocked)}") from None
    editor.send_keys(code)
    webdriver.ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()


def highest(text: str) -> int:
    found = [int(n) for n in re.findall(r"^\d+$", text, re.MULTILINE)]
    return max(found, default=-1)


def test_jupyterlab_keeps_a_running_kernel_through_a_jupyter_crash(stack: Stack, browser, tmp_path):
    """JupyterLab at the URL should run cells, and reach the same busy kernel at once after kill -9 of Jupyter."""
    token = stack.token()
    before = {s["id"] for s in api(stack.base_url, token, "/api/sessions")}
    with screenshot_on_failure(browser, tmp_path / "jupyterlab.png"):
        browser.get(stack.url())
        wait_for(lambda: "/lab" in browser.current_url and css(browser, ".jp-LauncherCard[data-category='Notebook']"),
                 90, "JupyterLab's launcher at the URL")
        css(browser, ".jp-LauncherCard[data-category='Notebook']")[0].click()
        wait_for(lambda: css(browser, ".jp-Notebook .jp-Cell.jp-mod-active .cm-content"), 60, "a new notebook")
        def new_sessions() -> list:
            return [s for s in api(stack.base_url, token, "/api/sessions") if s["id"] not in before]

        wait_for(new_sessions, 60, "the new notebook's session")
        assert len(new_sessions()) == 1, f"the launcher should have made one notebook session: {new_sessions()}"
    session = new_sessions()[0]
    kernel_id = session["kernel"]["id"]
    try:
        # The screenshot before the page is left (below), or it shows a blank page.
        with screenshot_on_failure(browser, tmp_path / "jupyterlab.png"):
            run_in_new_cell(browser, "kept = 6 * 7\nprint('ready', kept)")
            wait_for(lambda: "ready 42" in cell_output(browser, 0), 60, "the first cell's output in the page")
            run_in_new_cell(browser, LONG_CELL)
            wait_for(lambda: highest(cell_output(browser, 1)) >= 2, 30, "the long cell printing in the page")

            stack.kill_jupyter()
            stack.wait_api(token, 60)
            at_crash = highest(cell_output(browser, 1))
            # The page reconnects by itself; the running cell's output must go on in it (on a server
            # that waits for the busy kernel, only once the cell ends: ten minutes here).
            wait_for(lambda: highest(cell_output(browser, 1)) >= at_crash + 6, 30,
                     f"the long cell's output to go on in the page after the crash (stuck at {at_crash})")
            kernels = [s["kernel"]["id"] for s in api(stack.base_url, token, "/api/sessions")
                       if s["id"] == session["id"]]
            assert kernels == [kernel_id], f"the notebook's kernel changed: {kernel_id} -> {kernels}"

            api(stack.base_url, token, f"/api/kernels/{kernel_id}/interrupt", "POST")
            wait_for(lambda: "KeyboardInterrupt" in cell_output(browser, 1), 30, "the interrupt in the page")
            run_in_new_cell(browser, "print('after the crash', kept)")
            wait_for(lambda: "after the crash 42" in cell_output(browser, 2), 30,
                     "the same kernel (its variables) to answer in the page")
    finally:
        browser.get("about:blank")
        api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")
        (stack.workspace / session["path"]).unlink(missing_ok=True)
