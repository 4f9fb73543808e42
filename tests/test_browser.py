"""What a person sees in a real browser: the exported HiPlot page, and a lesson run in JupyterLab.

Debian's ``chromium`` (``sudo apt-get install chromium``) driven by the ``playwright`` package
through ``executable_path``: playwright's own browser download is never needed. Without chromium
these tests skip, saying so.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from records import GRID, make_run, write_log

from course_lib import analysis

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file()
                                         else None)
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LESSON = "01_forward_pass.ipynb"
LESSONS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LAB_CONFIG = ROOT / "tools" / "lab_config"  # what `make lab` puts on JUPYTER_CONFIG_PATH
INLINE = "hiplot_inline.ipynb"  # written by the jupyterlab fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                       "(sudo apt-get install chromium); the browser tests need it"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# --- The exported HiPlot page ----------------------------------------------------------------

# Counts the lines drawn on each canvas since it was last cleared: HiPlot draws the parallel
# plot's lines on a <canvas> (one beginPath ... stroke per datapoint), so they are not in the DOM.
COUNT_STROKES = """
(() => {
  const ctx = CanvasRenderingContext2D.prototype;
  const stroke = ctx.stroke, clearRect = ctx.clearRect;
  ctx.stroke = function (...args) {
    this.canvas.dataset.strokes = String(Number(this.canvas.dataset.strokes || 0) + 1);
    return stroke.apply(this, args);
  };
  ctx.clearRect = function (...args) {
    this.canvas.dataset.strokes = "0";
    return clearRect.apply(this, args);
  };
})();
"""
AXES_LEFT_TO_RIGHT = """groups => groups
  .map(g => [g.transform.baseVal.consolidate().matrix.e, g.querySelector(".label-name").textContent])
  .sort((a, b) => a[0] - b[0]).map(pair => pair[1])"""
LINES_DRAWN = """Math.max(0, ...Array.from(document.querySelectorAll('.pplot-root canvas'),
                                       c => Number(c.dataset.strokes || 0)))"""


def open_page(browser, url, script=None):
    """A new page with every request, page error and console error recorded; any request that
    would leave the machine is aborted (and recorded), so the test never waits on a network."""
    page = browser.new_page()
    seen = {"requests": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("pageerror", lambda error: seen["errors"].append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error"
            and seen["errors"].append(f"console error: {message.text}"))
    local = re.compile(r"^(file|data|blob):")
    page.route(lambda url: not local.match(url), lambda route: route.abort())
    if script:
        page.add_init_script(script)
    page.goto(url)
    return page, seen


def wait_until_stable(page, expression, timeout=20.0, settle=1.0):
    """Evaluate ``expression`` until it has kept one truthy value for ``settle`` seconds, and return
    that value; fail the test when that has not happened within ``timeout`` seconds."""
    deadline, last, since = time.monotonic() + timeout, object(), time.monotonic()
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value != last:
            last, since = value, time.monotonic()
        elif value and time.monotonic() - since >= settle:
            return value
        page.wait_for_timeout(200)
    pytest.fail(f"{expression!r} did not settle on a value within {timeout} s (last value: {last!r})")


# The parallel plot's axes, left to right, for the made-up runs below: every column that takes
# more than one value (HiPlot leaves out those with a single one: status, and the made-up runs'
# train and validation losses, equal in every run).
AXES = {
    "runs": ["run_id", "lr", "num_units", "optimizer", "final_train_acc", "final_val_acc", "test_acc"],
    "epochs": ["run_id", "epoch", "lr", "num_units", "optimizer", "train_loss", "train_acc", "val_loss",
               "val_acc"],
}


@pytest.mark.parametrize("view", ["runs", "epochs"])
def test_exported_hiplot_page_draws_one_line_per_datapoint_offline(browser, tmp_path, view):
    records = [make_run(i, *combo, epochs=2) for i, combo in enumerate(GRID[:7])]
    runs = analysis.load_runs(write_log(tmp_path / "runs", records))
    if view == "runs":
        experiment, expected_lines = analysis.runs_experiment(runs), len(runs)  # 7 runs
    else:
        experiment = analysis.epochs_experiment(analysis.epochs_frame(runs))
        expected_lines = 2 * len(runs)  # 7 runs x 2 epochs
    page_file = analysis.write_html(experiment, tmp_path / f"{view}.html")

    page, seen = open_page(browser, page_file.as_uri(), script=COUNT_STROKES)
    try:
        page.wait_for_selector(".pplot-root svg g.dimension", timeout=20_000)
        lines = wait_until_stable(page, LINES_DRAWN)
        axes = page.eval_on_selector_all(".pplot-root g.dimension", AXES_LEFT_TO_RIGHT)
        canvases = page.locator(".pplot-root canvas").count()
    finally:
        page.close()

    assert lines == expected_lines, f"{lines} lines drawn for {expected_lines} datapoints"
    assert canvases >= 1
    assert axes == AXES[view]
    assert seen["errors"] == []
    assert seen["requests"] == [page_file.as_uri()], "the page fetched more than itself"


# --- A lesson run in JupyterLab ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, token, path, method="GET"):
    request = urllib.request.Request(f"{base}{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab from this venv on 127.0.0.1, serving a clean copy of the lessons; always stopped.

    The copy has its outputs and execution counts cleared, so a finished run can be told from the
    committed outputs, and the repository's notebooks are never touched. Next to them: a small
    run log and a notebook that shows it with HiPlot. Jupyter's config, runtime and data folders
    are temporary: nothing of the user's set-up is read or written.
    """
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    root = tmp_path / "notebooks"  # JupyterLab serves tmp_path, as `make lab` serves the checkout
    root.mkdir()
    # A copy: JupyterLab serves no file through a link that leads outside its root.
    shutil.copytree(ROOT / "assets", tmp_path / "assets", ignore=shutil.ignore_patterns("*.py"))
    for source in (ROOT / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(source, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, root / source.name)
    write_log(root / "sweep", [make_run(i, *combo) for i, combo in enumerate(GRID)])
    inline = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
    inline.cells = [nbformat.v4.new_code_cell(
        "from course_lib import analysis\n"
        "analysis.runs_experiment(analysis.load_runs('sweep')).display()")]
    nbformat.write(inline, root / INLINE)
    # The students' set-up `make lab` uses (tools/lab_config: no nbgrader, no news pop-up); the
    # user's own config folder is an empty temporary one.
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_CONFIG_PATH=str(LAB_CONFIG), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), IPYTHONDIR=str(tmp_path / "ipython"))
    env.pop("MPLBACKEND", None)  # a non-inline backend (Agg in CI) would warn on every plt.show()
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
             "--LabApp.default_url=/lab/tree/notebooks",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180  # a busy 2-core machine
        while True:
            try:
                api(base, token, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.3)
        yield {"url": base, "token": token, "root": root, "log": log_path}
    finally:
        try:
            api(base, token, "/api/shutdown", method="POST")  # shuts its kernels down too
            server.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            server.kill()
            server.wait(timeout=15)


NOTEBOOK = "window.jupyterapp.shell.currentWidget"
KERNEL_IDLE = f"""(() => {{
  const w = {NOTEBOOK};
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!kernel && kernel.status === "idle";
}})()"""
# Done when every code cell has an execution count, or a cell failed (Run All stops there).
FINISHED = f"""(() => {{
  const cells = {NOTEBOOK}.content.model.toJSON().cells.filter(c => c.cell_type === "code");
  const failed = cells.some(c => c.outputs.some(o => o.output_type === "error"));
  return failed || (cells.every(c => c.execution_count !== null) && {KERNEL_IDLE});
}})()"""


def run_all_cells(page, lab, name) -> dict:
    """Open notebook ``name`` in JupyterLab, run every cell from the Run menu as a person would,
    wait until they have all finished (or one failed), and return the notebook as JupyterLab
    holds it (nbformat JSON)."""
    # A fresh start: no kernel left running by another test (JupyterLab would ask which kernel
    # to use) and no tabs restored from the last page's workspace (?reset).
    for session in api(lab["url"], lab["token"], "/api/sessions"):
        api(lab["url"], lab["token"], f"/api/sessions/{session['id']}", method="DELETE")
    try:
        page.goto(f"{lab['url']}/lab/tree/notebooks/{name}?reset&token={lab['token']}")
        page.wait_for_function(KERNEL_IDLE, timeout=45_000)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.wait_for_function(FINISHED, timeout=60_000, polling=250)
        return page.evaluate(f"{NOTEBOOK}.content.model.toJSON()")
    except Exception:
        page.screenshot(path=str(lab["root"].parent / f"{name}.png"))  # for whoever debugs it
        raise


def problems(notebook) -> list:
    """One line per error or stderr output of a code cell."""
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return [f"cell {i} ({''.join(cell['source'])[:60]!r}): {output.get('ename', 'stderr')}: "
            f"{output.get('evalue', ''.join(output.get('text', '')))[:300]}"
            for i, cell in enumerate(code) for output in cell["outputs"]
            if output["output_type"] == "error"
            or (output["output_type"] == "stream" and output["name"] == "stderr")]


def test_lesson_runs_without_errors_in_jupyterlab(browser, jupyterlab):
    assert (jupyterlab["root"] / LESSON).is_file(), f"notebooks/{LESSON} is missing"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        notebook = run_all_cells(page, jupyterlab, LESSON)
    finally:
        page.close()
    assert problems(notebook) == [], "\n".join(problems(notebook))
    # Every code cell ran once, in order, in the kernel JupyterLab started for this page.
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    assert errors == []


def test_hiplot_displays_inline_in_jupyterlab(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.add_init_script(COUNT_STROKES)
    try:
        notebook = run_all_cells(page, jupyterlab, INLINE)
        page.wait_for_selector(".jp-OutputArea .pplot-root svg g.dimension", timeout=20_000)
        lines = wait_until_stable(page, LINES_DRAWN)
    finally:
        page.close()
    assert problems(notebook) == [], "\n".join(problems(notebook))
    assert lines == len(GRID), f"{lines} lines drawn for {len(GRID)} runs"


def test_make_lab_serves_the_checkout_with_the_students_config():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "JUPYTER_CONFIG_PATH=tools/lab_config" in recipe
    assert "--ServerApp.root_dir=." in recipe and "/lab/tree/notebooks" in recipe
    assert "notebooks/\n" not in recipe  # serving notebooks/ itself hides ../assets/


# Scroll the notebook from top to bottom (JupyterLab draws only the cells in view), and collect
# every image that did not load: markdown figures and rendered outputs alike.
BROKEN_IMAGES_WHILE_SCROLLING = """async () => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
  const broken = new Set(), seen = new Set();
  for (let y = 0; ; y += panel.clientHeight / 2) {
    panel.scrollTop = y;
    await new Promise(r => setTimeout(r, 500));
    for (const img of panel.querySelectorAll('img')) {
      if (!img.complete) { await new Promise(r => { img.onload = img.onerror = r; setTimeout(r, 5000); }); }
      seen.add(img.getAttribute('src'));
      if (!(img.complete && img.naturalWidth > 0)) broken.add(img.getAttribute('src'));
    }
    if (y >= panel.scrollHeight) break;
  }
  return {seen: Array.from(seen), broken: Array.from(broken)};
}"""


@pytest.mark.long
def test_every_lesson_shows_its_figures_in_jupyterlab(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    failed = []
    page.on("response", lambda r: r.status >= 400 and "/files/" in r.url and failed.append(r.url))
    images = {}
    try:
        for name in LESSONS:
            page.goto(f"{jupyterlab['url']}/lab/tree/notebooks/{name}?reset&token="
                      f"{jupyterlab['token']}")
            page.wait_for_selector(".jp-NotebookPanel .jp-RenderedMarkdown", timeout=45_000)
            images[name] = page.evaluate(BROKEN_IMAGES_WHILE_SCROLLING)
    finally:
        page.close()
    broken = {name: found["broken"] for name, found in images.items() if found["broken"]}
    assert not broken and not failed, (broken, failed)
    assert len(images[LESSON]["seen"]) >= 4  # lesson 01's four figures were drawn, and loaded


def test_students_jupyterlab_has_no_nbgrader(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(f"{jupyterlab['url']}/lab/tree/notebooks/{LESSON}?reset&token="
                  f"{jupyterlab['token']}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=45_000)
        page.wait_for_timeout(1000)
        menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
        text = page.inner_text("body")
        plugins = page.evaluate("window.jupyterapp.listPlugins ? window.jupyterapp.listPlugins()"
                                ".filter(p => p.includes('nbgrader') && "
                                "window.jupyterapp.isPluginActivated(p)) : []")
    finally:
        page.close()
    assert "File" in menus and "Nbgrader" not in menus and "nbgrader" not in menus, menus
    assert "No nbgrader_config.py found" not in text and "Create Assignment" not in text
    assert plugins == [], plugins
    log = jupyterlab["log"].read_text()
    assert "nbgrader" not in log.lower(), log[-2000:]
