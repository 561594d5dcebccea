"""JupyterLab in a real (headless) Chromium: the URL opens it, and a running kernel survives a Jupyter crash.

The browser is Debian's chromium driven by Selenium through chromedriver (scripts/test installs both
where missing). On failure a screenshot of the page is kept; its path is in the failure message.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import css, screenshot_on_failure
from kernelclient import api
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from stack import SUPERVISORCTL, Stack, wait_for

LONG_CELL = "import time\nfor i in range(1200):\n    print(i, flush=True)\n    time.sleep(0.5)"


def cell_output(driver, index: int) -> str:
    cells = css(driver, ".jp-Notebook .jp-Cell")
    if len(cells) <= index:
        return ""
    outputs = cells[index].find_elements(By.CSS_SELECTOR, ".jp-OutputArea")
    return outputs[0].get_attribute("textContent") if outputs else ""


def dismiss_dialogs(driver) -> None:
    """Click away JupyterLab's dialogs as a user would: its accept button, else its last one (after a crash:
    "Server Connection Error", whose one button is Close)."""
    for dialog in css(driver, ".jp-Dialog"):
        buttons = dialog.find_elements(By.CSS_SELECTOR, ".jp-Dialog-footer button")
        accept = [b for b in buttons if "jp-mod-accept" in (b.get_attribute("class") or "")]
        for button in (accept or buttons[-1:]):
            try:
                button.click()
            except WebDriverException:
                pass  # gone meanwhile


def kernel_status(driver) -> str:
    """The notebook's kernel as JupyterLab's status bar shows it ("Python 3 (ipykernel) | Idle")."""
    bars = css(driver, "#jp-main-statusbar")
    return bars[0].text if bars else ""


def run_in_new_cell(driver, code: str) -> None:
    """Type code into the cell being edited and run it with Shift+Enter (JupyterLab then edits a new one), once the
    page shows its kernel (as a user waits for: before, JupyterLab runs nothing and leaves the cell as it was)."""
    wait_for(lambda: "| Idle" in kernel_status(driver) or "| Busy" in kernel_status(driver), 90,
             "the page to show its kernel Idle or Busy")
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


RUN_ALL_CELLS = [
    "kept = 6 * 7\nprint('cell 1 ran')",
    "print('cell 2 ran', kept)",
    "import time\nfor i in range(20):\n    print('cell 3 line', i, flush=True)\n    time.sleep(1)",
    "print('cell 4 ran', kept)",
    "print('cell 5 ran')",
]


def run_menu(driver, item: str) -> None:
    """Run > ITEM from JupyterLab's menu bar, clicked as a user would."""
    menu = wait_for(lambda: [m for m in css(driver, ".lm-MenuBar-itemLabel") if m.text == "Run"], 30, "the Run menu")
    menu[0].click()
    entry = wait_for(lambda: [e for e in css(driver, ".lm-Menu-itemLabel") if e.text == item], 10, f"Run > {item}")
    entry[0].click()


def write_notebook(path, sources: list[str], prefix: str) -> str:
    """A notebook of code cells (ids PREFIX-1, PREFIX-2, ...) for the python3 kernel, written as JupyterLab opens it;
    its text."""
    cells = [{"cell_type": "code", "id": f"{prefix}-{i}", "metadata": {}, "source": code, "outputs": [],
              "execution_count": None} for i, code in enumerate(sources, 1)]
    path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}, indent=1))
    return path.read_text()


def notebook_url(stack: Stack, name: str) -> str:
    """JupyterLab's URL of notebook NAME (?reset: this notebook alone, not the tabs an earlier test left in
    JupyterLab's saved workspace)."""
    return stack.url().replace("/?token=", f"/lab/tree/{name}?reset&token=")


def open_notebook(driver, stack: Stack, token: str, name: str, cells: int) -> None:
    """Open notebook NAME in JupyterLab and wait for its cells and its kernel, idle (before, Run All runs nothing)."""
    driver.get(notebook_url(stack, name))
    wait_for(lambda: len(css(driver, ".jp-Notebook .jp-Cell")) == cells, 90, f"the notebook's {cells} cells")
    wait_for(lambda: [s for s in api(stack.base_url, token, "/api/sessions") if s["path"] == name
                      and s["kernel"]["execution_state"] == "idle"], 60, "the notebook's kernel, idle")


def end_sessions(stack: Stack, token: str, name: str) -> None:
    """Shut down the sessions (and kernels) of notebook NAME."""
    for session in api(stack.base_url, token, "/api/sessions"):
        if session["path"] == name:
            api(stack.base_url, token, f"/api/sessions/{session['id']}", "DELETE")


def file_outputs(path) -> list[str]:
    """Each cell's output text, as the notebook file on disk holds it."""
    nb = json.loads(path.read_text())
    return ["".join("".join(o.get("text") or "") for o in c.get("outputs") or []) for c in nb["cells"]]


@pytest.mark.parametrize("ending", ["browser closed", "jupyter killed, browser closed"])
def test_run_all_goes_on_with_the_browser_closed_and_lands_in_the_file(stack: Stack, browsers, tmp_path, ending):
    """JupyterLab's Run All, the browser closed while cell 3 of 5 runs (and Jupyter killed first): every cell runs in
    the notebook's kernel, each one's output lands in the file once, and a new browser session shows them. While
    the page was connected nothing was written (it saves them itself, without a question about a changed file)."""
    token = stack.token()
    name = f"run-all-{ending.split()[0]}.ipynb"
    path = stack.workspace / name
    written = write_notebook(path, RUN_ALL_CELLS, "cell")
    try:
        first = browsers()
        with screenshot_on_failure(first, tmp_path / "run-all.png"):
            open_notebook(first, stack, token, name, 5)
            run_menu(first, "Run All Cells")
            wait_for(lambda: highest_line(cell_output(first, 2)) >= 2, 60, "cell 3 printing in the page")
            assert "cell 2 ran 42" in cell_output(first, 1)
            assert path.read_text() == written, "the file was written while the page that ran the cells was there"
            if ending.startswith("jupyter killed"):
                stack.kill_jupyter()
        first.quit()

        def all_in_file() -> bool:
            outputs = file_outputs(path)
            return "cell 5 ran" in outputs[4] and "cell 3 line 19" in outputs[2]

        try:
            wait_for(all_in_file, 60, "every cell's output in the notebook file")
        except AssertionError as exc:
            runs = stack.exec("notebookctl", "runs", check=False).stdout
            raise AssertionError(f"{exc}; the file holds {file_outputs(path)}; notebookctl runs:\n{runs}") from None
        outputs = file_outputs(path)
        assert outputs[0] == "cell 1 ran\n" and outputs[1] == "cell 2 ran 42\n", outputs
        assert outputs[2] == "".join(f"cell 3 line {i}\n" for i in range(20)), outputs[2]
        assert outputs[3] == "cell 4 ran 42\n" and outputs[4] == "cell 5 ran\n", outputs
        counts = [c.get("execution_count") for c in json.loads(path.read_text())["cells"]]
        assert None not in counts and counts == sorted(counts), f"execution counts in the file: {counts}"

        stack.wait_api(token, 60)
        second = browsers()
        with screenshot_on_failure(second, tmp_path / "run-all-again.png"):
            second.get(notebook_url(stack, name))
            wait_for(lambda: "cell 5 ran" in cell_output(second, 4), 60, "the outputs in a new browser session")
            assert "cell 3 line 19" in cell_output(second, 2) and "cell 1 ran" in cell_output(second, 0)
            second.get("about:blank")
    finally:
        end_sessions(stack, token, name)
        path.unlink(missing_ok=True)


def test_run_all_with_the_browser_closed_at_once_runs_every_cell_into_the_file(stack: Stack, browsers, tmp_path):
    """JupyterLab's Run All and the browser closed the moment after, the notebook runner not running (it starts on
    demand and ends when idle): every cell runs, and its output lands in the file."""
    token = stack.token()
    name = "run-all-and-leave.ipynb"
    path = stack.workspace / name
    write_notebook(path, [f"print('cell {i} ran')" for i in range(4)], "leave")
    try:
        page = browsers()
        with screenshot_on_failure(page, tmp_path / "run-all-and-leave.png"):
            open_notebook(page, stack, token, name, 4)
            stack.exec(*SUPERVISORCTL, "stop", "notebook-runner", check=False)  # (not running: said, not an error)
            run_menu(page, "Run All Cells")
        page.quit()
        try:
            wait_for(lambda: [text.strip() for text in file_outputs(path)] == [f"cell {i} ran" for i in range(4)], 60,
                     "every cell's output in the notebook file")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the file holds {file_outputs(path)}") from None
    finally:
        end_sessions(stack, token, name)
        path.unlink(missing_ok=True)


def highest_line(text: str) -> int:
    found = [int(n) for n in re.findall(r"^cell 3 line (\d+)$", text, re.MULTILINE)]
    return max(found, default=-1)
