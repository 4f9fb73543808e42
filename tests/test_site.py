"""The course website (site/, built by ``make site`` into build/site/).

The first tests need no build and run in ``make test``. The rest check the built site and open
every page in Debian's Chromium: they run with ``COURSE_SITE=1``, which ``make site-test`` sets
(.ci/run runs it after ``make site``); elsewhere they skip, saying so, so that ``make test``
neither waits for a site build nor reads a stale one.
"""

import functools
import html.parser
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import sys
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import course_lib

ROOT = Path(__file__).resolve().parents[1]
SITE_OUT = ROOT / "build" / "site"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


site_build = load(ROOT / "site" / "build.py", "site_build")
site_conf = load(ROOT / "site" / "conf.py", "site_conf")
lesson_layout = load(ROOT / "tools" / "lesson_layout.py", "lesson_layout")

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MATHJAX = ROOT / "site" / "_static" / site_conf.mathjax_path


# --- Without a build -------------------------------------------------------------------------

def test_the_site_builds_every_lesson_in_reading_order():
    assert site_build.lessons() == LESSONS and len(LESSONS) >= 7
    index = (ROOT / "site" / "index.md").read_text()
    assert ":glob:" in index and "\nnotebooks/*\n" in index  # the toctree takes every lesson


def test_mathjax_and_its_fonts_are_bundled_not_fetched():
    assert site_conf.mathjax_path.startswith("mathjax/") and MATHJAX.is_file()
    assert re.search(r'VERSION="3\.\d+\.\d+"', MATHJAX.read_text()[:400_000])
    fonts = MATHJAX.parent / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("MathJax_*.woff"))) >= 20  # CHTML loads them from beside itself


def test_no_setting_points_outside_the_site():
    # COURSE_REPO_URL, when a publisher sets it, is the one address the pages may name.
    repository = site_conf.repository_options(site_conf.REPO_URL, site_conf.REPO_BRANCH)
    settings = {n: getattr(site_conf, n) for n in dir(site_conf)
                if not n.startswith("_") and n != "REPO_URL"}
    settings["html_theme_options"] = {k: v for k, v in site_conf.html_theme_options.items()
                                      if k not in repository}
    urls = [f"{name} = {value!r}" for name, value in settings.items()
            if re.search(r"https?://", repr(value))]
    assert urls == []
    assert site_conf.nb_ipywidgets_js == {}  # myst-nb's default loads require.js from a CDN


def test_api_page_documents_every_module(tmp_path):
    page = site_build.api_page()
    for name in public_modules():
        assert f".. automodule:: {name}\n" in page


def test_the_kernels_run_in_full_mode_offline_on_an_empty_data_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "environ", dict(os.environ, COURSE_FAST="1", MPLBACKEND="Agg"))
    monkeypatch.setattr(site_build, "BUILD", tmp_path)
    (tmp_path / "site-data").mkdir()
    (tmp_path / "site-data" / "MNIST").mkdir()  # left by an earlier build: emptied
    site_build.kernel_environment(preview=False)
    assert "COURSE_FAST" not in os.environ and "MPLBACKEND" not in os.environ
    assert os.environ["COURSE_SITE_EXECUTE"] == "force"
    assert os.environ["COURSE_DATA_DIR"] == str(tmp_path / "site-data")
    assert list((tmp_path / "site-data").iterdir()) == []
    assert os.environ["https_proxy"] == os.environ["HTTP_PROXY"] == "http://127.0.0.1:9"
    profile = Path(os.environ["IPYTHONDIR"]) / "profile_default"
    assert profile.parent.parent == tmp_path  # not the user's IPython profile
    assert 'log_level = "ERROR"' in (profile / "ipython_kernel_config.py").read_text()
    first = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0])
    assert first == Path(sys.prefix) / "share" / "jupyter"  # this Python's kernel, not a namesake


def test_pages_a_lesson_prints_are_found(tmp_path):
    from docutils import nodes

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "runs.html").write_text("<html></html>")
    (tmp_path / "notebooks").mkdir()
    doctree = nodes.document(None, None)
    doctree += nodes.literal_block("", "one line per run:     ../runs/runs.html\n"
                                   "gone: ../runs/missing.html", classes=["output", "stream"])
    doctree += nodes.literal_block("", "../runs/runs.html (in code, not printed)", classes=[])
    found = site_conf.lesson_pages(doctree, tmp_path / "notebooks")
    assert found == [tmp_path / "runs" / "runs.html"]


def test_each_build_plants_a_new_canary_in_its_environment(monkeypatch, tmp_path):
    assert site_build.BUILD / "site" not in site_build.CANARY_FILE.parents  # not published
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(site_build, "CANARY_FILE", tmp_path / "canary.txt")
    first = site_build.plant_canary()
    assert os.environ[site_build.CANARY_NAME] == first
    assert (tmp_path / "canary.txt").read_text().strip() == first
    second = site_build.plant_canary()
    assert second != first and len(second) > 20


def test_repository_links_and_launch_buttons_only_with_a_configured_repository():
    assert site_conf.repository_options("", "main") == {}
    github = site_conf.repository_options("https://github.com/someone/course", "dev")
    assert github["repository_url"] == "https://github.com/someone/course"
    assert github["repository_branch"] == "dev" and github["use_repository_button"] is True
    assert set(github["launch_buttons"]) >= {"colab_url", "binderhub_url"}
    other = site_conf.repository_options("https://git.example.org/course", "main")
    assert other["use_repository_button"] is True and "launch_buttons" not in other


def test_each_lesson_page_says_how_to_get_and_run_its_notebook():
    note = site_conf.run_it_yourself("07_mnist_training", "")
    assert 'href="07_mnist_training.ipynb" download' in note
    assert "make lab" in note and "notebooks/07_mnist_training.ipynb" in note
    assert "http" not in note  # no repository configured: no address made up
    linked = site_conf.run_it_yourself("07_mnist_training", "https://github.com/someone/course")
    assert '<a href="https://github.com/someone/course">' in linked


def test_the_index_takes_its_setup_commands_from_the_readme():
    index = (ROOT / "site" / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    includes = re.findall(r"```\{include\} README\.md\n:start-after: (.+)\n:end-before: (.+)\n",
                          index)
    assert len(includes) >= 2, "site/index.md should include its setup from README.md"
    for start, end in includes:
        assert readme.count(start) == 1 and readme.count(end) == 1, (start, end)
        part = readme.split(start, 1)[1].split(end, 1)[0]
        assert part.strip()
    included = "".join(readme.split(start, 1)[1].split(end, 1)[0] for start, end in includes)
    assert 'python -m pip install -e ".[dev,site]"' in included and "Python 3.11" in included
    assert "pip install" not in index and "Python 3." not in index  # nothing said twice


def test_an_output_figure_is_described_by_its_plot_titles_or_its_section():
    code = 'ax.set_title("Loss per epoch")\nfig.suptitle(f"run {i}")\nplt.title(\'Accuracy\')'
    assert site_conf.figure_alt(code, "Training") == "Figure: Loss per epoch; Accuracy"
    alt = site_conf.figure_alt("plt.plot(x)", "Training")
    assert "Training" in alt and ".png" not in alt


def public_modules() -> list:
    names = [m.name for m in pkgutil.walk_packages(course_lib.__path__, "course_lib.")]
    return ["course_lib"] + sorted(n for n in names if not n.rsplit(".", 1)[-1].startswith("_"))


def public_names(module_name: str) -> list:
    """Functions and classes a module defines (or lists in __all__) without a leading _."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return sorted(n for n in module.__all__ if getattr(module, n, None) is not None
                      and (inspect.isclass(getattr(module, n)) or callable(getattr(module, n)))
                      and getattr(getattr(module, n), "__module__", None) == module_name)
    return sorted(n for n, obj in vars(module).items() if not n.startswith("_")
                  and (inspect.isclass(obj) or inspect.isfunction(obj))
                  and obj.__module__ == module_name)


# --- The built site --------------------------------------------------------------------------

built = pytest.mark.skipif(os.environ.get("COURSE_SITE") != "1",
                           reason="checks of the built site: `make site`, then `make site-test`")


@built
def test_the_site_is_built():
    assert (SITE_OUT / "index.html").is_file(), "build/site/index.html is missing: run `make site`"


class Page(html.parser.HTMLParser):
    """The ids, links and image sources of one HTML page."""

    def __init__(self, path: Path):
        super().__init__()
        self.ids, self.links, self.images = set(), [], []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.images.append(attrs["href"])


@functools.cache
def parsed(path: Path) -> Page:
    return Page(path)


def site_pages() -> list:
    """Every page of the built site: not the themes' template fragments in _static/, and not the
    lessons' own HiPlot pages (tested apart)."""
    return sorted(p for p in SITE_OUT.rglob("*.html")
                  if not {"_static", site_conf.PAGES_DIR} & set(p.relative_to(SITE_OUT).parts))


def lesson_links(index: Page) -> list:
    return [link for link in index.links if link.startswith("notebooks/")]


@built
def test_every_lesson_has_a_page_listed_in_reading_order():
    index = parsed(SITE_OUT / "index.html")
    listed = list(dict.fromkeys(link.split("#")[0] for link in lesson_links(index)))
    expected = [f"notebooks/{path.stem}.html" for path in LESSONS]
    assert listed == expected, "a lesson is missing from the site, or out of order: run `make site`"
    for link in expected:
        text = (SITE_OUT / link).read_text(encoding="utf-8")
        assert re.search(r"<h1>Lesson \d+ · ", text), f"{link} has no 'Lesson N · Title' heading"


@built
def test_lesson_pages_show_a_full_run_not_the_fast_mode_placeholders():
    mnist = next(SITE_OUT.glob("notebooks/07_*.html")).read_text(encoding="utf-8")
    assert "fast mode: False" in mnist and "fast mode: True" not in mnist
    accuracy = [float(x) for x in re.findall(r"test accuracy (\d+\.\d+)%", mnist)]
    assert accuracy and min(accuracy) > 90, accuracy  # a model that learned
    hiplot = next(SITE_OUT.glob("notebooks/08_*.html")).read_text(encoding="utf-8")
    assert "fast mode: False" in hiplot


@built
@pytest.mark.parametrize("module_name", public_modules())
def test_api_reference_has_every_public_name(module_name):
    ids = parsed(SITE_OUT / "api.html").ids
    missing = [n for n in public_names(module_name) if f"{module_name}.{n}" not in ids]
    assert f"module-{module_name}" in ids
    assert not missing, f"not in the API reference: {missing}"


@built
def test_every_internal_link_and_file_resolves():
    broken = []
    for path in site_pages():
        page = parsed(path)
        for href in page.links + page.images:
            url = urllib.parse.urlsplit(href)
            if url.scheme or url.netloc:
                continue  # an external link: a reader may follow it; nothing loads it
            target = (path.parent / urllib.parse.unquote(url.path)).resolve() if url.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or SITE_OUT.resolve() not in target.parents:
                broken.append(f"{path.relative_to(SITE_OUT)}: {href} (no such file)")
            elif (url.fragment and target.suffix == ".html"
                  and url.fragment not in parsed(target).ids):
                broken.append(f"{path.relative_to(SITE_OUT)}: {href} (no such anchor)")
    assert not broken, "\n".join(broken)


# Values too common to mean a leak; any other value of 8 characters or more that is not a plain
# word is the builder's (paths, hosts, tokens, proxies).
COMMON_VALUES = {"/bin/bash", "/bin/sh", "/bin/zsh", "/usr/bin", "/usr/local/bin", "C.UTF-8",
                 "en_US.UTF-8", "xterm-256color"}


def environment_values() -> dict:
    """{value: name} of this environment worth looking for in the pages, with the canary the
    build planted in its own environment (site/build.py) and HOME followed by a slash."""
    values = {value: name for name, value in os.environ.items() if len(value) >= 8
              and value not in COMMON_VALUES and not re.fullmatch(r"[A-Za-z]+|[\d.]+", value)}
    if len(os.environ.get("HOME", "")) > 1:
        values[os.environ["HOME"].rstrip("/") + "/"] = "HOME"
    assert site_build.CANARY_FILE.is_file(), "no canary: build the site with `make site`"
    values[site_build.CANARY_FILE.read_text().strip()] = site_build.CANARY_NAME
    return values


@built
def test_no_page_publishes_the_builders_environment():
    values = environment_values()
    assert "PATH" in values.values() and site_build.CANARY_NAME in values.values()
    leaks = []
    for path in sorted(p for p in SITE_OUT.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, fonts, objects.inv
        leaks += [f"{path.relative_to(SITE_OUT)}: the value of ${name}"
                  for value, name in values.items() if value in text]
    assert not leaks, "pages publish the environment of the build:\n" + "\n".join(leaks)


def solution_names(notebook: Path) -> list:
    """Functions and classes the lesson's solution cells define."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return [name for i in lesson_layout.solution_cells(nb) for name in
            re.findall(r"^(?:def|class) (\w+)", nb.cells[i].source, re.MULTILINE)]


DETAILS = re.compile(r"<details\b([^>]*)>.*?</details>", re.DOTALL)


@built
@pytest.mark.parametrize("notebook", LESSONS, ids=[p.stem for p in LESSONS])
def test_the_solutions_sit_behind_a_closed_toggle(notebook):
    names = solution_names(notebook)
    if not names:
        pytest.skip(f"{notebook.name} has no solution cell")
    text = (SITE_OUT / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
    toggles = DETAILS.findall(text)
    assert toggles and not [t for t in toggles if re.search(r"\bopen\b", t)], "an open toggle"
    hidden = DETAILS.sub("", text)  # what a reader sees before opening any toggle
    for name in names:  # Pygments marks a definition's name: nf (function) or nc (class)
        definition = re.compile(rf'class="n[fc]">{name}</span>')
        assert definition.search(text), f"{name}'s definition is not on the page"
        assert not definition.search(hidden), f"{name}'s definition is in plain view"


@built
@pytest.mark.parametrize("notebook", LESSONS, ids=[p.stem for p in LESSONS])
def test_each_lesson_page_offers_its_notebook(notebook):
    copy = SITE_OUT / "notebooks" / notebook.name
    assert copy.read_bytes() == notebook.read_bytes()  # the committed notebook
    links = parsed(SITE_OUT / "notebooks" / f"{notebook.stem}.html").links
    assert notebook.name in links


# --- The built site in a browser -------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    """build/site served on 127.0.0.1, as `python -m http.server -d build/site` serves it."""
    handler = functools.partial(QuietHandler, directory=str(SITE_OUT))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    test_browser = pytest.importorskip("test_browser")
    if test_browser.CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (sudo apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=test_browser.CHROMIUM,
                                              args=test_browser.CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, base, url, script=None):
    """A page with its errors, failed loads and outside requests recorded; an outside request is
    aborted, so nothing waits on a network."""
    page = browser.new_page()
    seen = {"outside": [], "errors": [], "failed": []}
    page.on("pageerror", lambda error: seen["errors"].append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error"
            and seen["errors"].append(f"console error: {message.text}"))
    page.on("response", lambda response: response.status >= 400
            and seen["failed"].append(f"{response.status} {response.url}"))
    page.on("requestfailed", lambda request: request.url.startswith(base)
            and seen["failed"].append(f"failed {request.url}"))

    def outside(route):
        seen["outside"].append(route.request.url)
        route.abort()

    page.route(lambda u: not (u.startswith(base) or u.startswith(("data:", "blob:"))), outside)
    if script:
        page.add_init_script(script)
    page.set_default_timeout(120_000)  # a 3 MB lesson page on a busy 2-core machine
    page.goto(url, wait_until="load")  # "load" waits for every image and script
    return page, seen


# What a reader sees, less code, program output and typeset math: no TeX may be left in it.
VISIBLE_PROSE = """() => {
  const body = document.querySelector('main') || document.body;
  const copy = body.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-container, .output, .cell_output')
      .forEach(e => e.remove());
  return copy.textContent;
}"""
MATH_STATE = """async () => {
  if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  const math = Array.from(document.querySelectorAll('.math'));
  return {math: math.length,
          typeset: math.filter(e => e.querySelector('mjx-container')).length,
          errors: document.querySelectorAll('mjx-merror').length};
}"""
BROKEN_IMAGES = """() => Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.getAttribute('src'))"""
LEFTOVER_TEX = re.compile(r"\$\$|\\frac|\\begin\{|\\\(|\\\[|(?<![\w$])\$[^$\s][^$\n]*\$")


@built
@pytest.mark.browser
@pytest.mark.slow
def test_every_page_loads_offline_with_its_math_typeset_and_its_images(browser, server):
    problems, typeset_total = [], 0
    for path in site_pages():
        name = path.relative_to(SITE_OUT).as_posix()
        page, seen = open_page(browser, server, server + name)
        try:
            math = page.evaluate(MATH_STATE)
            prose = page.evaluate(VISIBLE_PROSE)
            broken = page.evaluate(BROKEN_IMAGES)
        finally:
            page.close()
        typeset_total += math["typeset"]
        leftover = sorted(set(LEFTOVER_TEX.findall(prose)))
        for kind, found in [("requests outside build/site", seen["outside"]),
                            ("errors", seen["errors"]), ("failed loads", seen["failed"]),
                            ("images that did not load", broken), ("TeX left as text", leftover)]:
            if found:
                problems.append(f"{name}: {kind}: {found[:5]}")
        if math["typeset"] != math["math"] or math["errors"]:
            problems.append(f"{name}: {math['typeset']} of {math['math']} formulas typeset, "
                            f"{math['errors']} MathJax errors")
    assert not problems, "\n".join(problems)
    assert typeset_total > 50  # the lessons' formulas were there, and were typeset


@built
@pytest.mark.browser
@pytest.mark.slow
def test_lesson_08_links_its_hiplot_pages_and_they_draw_one_line_per_run(browser, server):
    import test_browser

    from course_lib import analysis

    lesson = next(SITE_OUT.glob("notebooks/08_*.html"))
    pages = [(lesson.parent / link).resolve() for link in parsed(lesson).links
             if f"/{site_conf.PAGES_DIR}/" in link]
    assert {p.name for p in pages} >= {"runs.html"}, "lesson 08 links no HiPlot page of its runs"
    runs = analysis.load_runs(pages[0].parent)
    expected = {"runs.html": len(runs), "epochs.html": len(analysis.epochs_frame(runs))}
    assert len(runs) >= 8
    for path in pages:
        url = server + path.relative_to(SITE_OUT.resolve()).as_posix()
        page, seen = open_page(browser, server, url, script=test_browser.COUNT_STROKES)
        try:
            page.wait_for_selector(".pplot-root svg g.dimension", timeout=30_000)
            lines = test_browser.wait_until_stable(page, test_browser.LINES_DRAWN)
        finally:
            page.close()
        assert lines == expected.get(path.name, lines) and lines > 0, (path.name, lines)
        assert seen["outside"] == [] and seen["errors"] == [] and seen["failed"] == []


def lesson_pages() -> list:
    return [SITE_OUT / "notebooks" / f"{path.stem}.html" for path in LESSONS]


# The sidebar's lesson links a reader can see (inside the viewport, not hidden) and click; on a
# phone the theme moves the sidebar's content into a dialog, the drawer.
VISIBLE_LESSON_LINKS = """() => Array.from(document.querySelectorAll(
    '#pst-primary-sidebar a, #pst-primary-sidebar-modal a'))
  .filter(a => /Lesson \\d+/.test(a.textContent) && a.checkVisibility({visibilityProperty: true}))
  .filter(a => { const r = a.getBoundingClientRect();
                 return r.width > 0 && r.right > 0 && r.left < window.innerWidth; }).length"""


@built
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width", [390, 1280])
def test_the_sidebar_toggle_opens_the_lesson_list(browser, server, width):
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        page.goto(server + "notebooks/" + LESSONS[2].stem + ".html", wait_until="load")
        toggle = page.locator(".primary-toggle:visible")
        assert toggle.count() == 1, "no visible sidebar toggle"
        before = page.evaluate(VISIBLE_LESSON_LINKS)
        toggle.click()
        page.wait_for_timeout(600)  # the drawer's transition
        after = page.evaluate(VISIBLE_LESSON_LINKS)
    finally:
        page.close()
    if width < 992:  # a phone: hidden lesson list, then a drawer with every lesson
        assert before == 0 and after >= len(LESSONS), (before, after)
    else:  # a desktop: the list is shown beside the page, and the toggle hides it
        assert before >= len(LESSONS) and after == 0, (before, after)


# Blocks of the page's column that do not fit it: cut off (their content is wider and they do not
# scroll), or sticking out past the column's right edge. A wide output table or formula scrolls
# inside its own box (course.css): it counts only when it cannot be scrolled.
OVERFLOWING = """() => {
  const column = document.querySelector('article.bd-article');
  const edge = column.getBoundingClientRect().right + 1;
  const blocks = column.querySelectorAll('pre, table, img, iframe, div.cell_output > div, ' +
                                         'mjx-container[display="true"], .hiplot');
  return Array.from(blocks).filter(e => e.checkVisibility()).filter(e => {
    const style = getComputedStyle(e);
    const scrolls = ['auto', 'scroll'].includes(style.overflowX);
    const wider = e.scrollWidth > e.clientWidth + 1;
    const canScroll = scrolls && (e.matches('table, mjx-container') || !wider);
    return e.getBoundingClientRect().right > edge || (wider && !canScroll);
  }).map(e => e.tagName.toLowerCase() + ': ' + e.textContent.trim().slice(0, 60));
}"""


@built
@pytest.mark.browser
@pytest.mark.slow
def test_no_code_or_output_is_cut_off_at_desktop_width(browser, server):
    problems = {}
    for path in lesson_pages():
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(server + path.relative_to(SITE_OUT).as_posix(), wait_until="load")
            page.evaluate(MATH_STATE)  # the formulas are typeset: their final width
            column = page.evaluate("document.querySelector('article.bd-article').clientWidth")
            found = page.evaluate(OVERFLOWING)
        finally:
            page.close()
        assert column >= 740, f"{path.name}: the content column is {column} px wide"
        if found:
            problems[path.name] = found
    assert not problems, json.dumps(problems, indent=1)


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
RUN_AXE = """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
  .filter(v => ['critical', 'serious'].includes(v.impact))
  .map(v => `${v.impact} ${v.id}: ${v.nodes.length} (${v.nodes[0].target.join(' ')})`)"""


@built
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 390])
def test_no_page_has_a_critical_or_serious_accessibility_violation(browser, server, width):
    assert AXE.is_file(), "axe-core is not installed: run `npm ci` in the repository's root"
    axe_version = json.loads((AXE.parent / "package.json").read_text())["version"]
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["axe-core"]
    assert axe_version == pinned, f"axe-core {axe_version} installed, {pinned} pinned: npm ci"
    pages = site_pages() + sorted(SITE_OUT.glob(f"{site_conf.PAGES_DIR}/*/*.html"))
    problems = []
    for path in pages:
        page = browser.new_page(viewport={"width": width, "height": 900})
        try:
            page.goto(server + path.relative_to(SITE_OUT).as_posix(), wait_until="load")
            page.evaluate(MATH_STATE)
            page.add_script_tag(path=str(AXE))
            found = page.evaluate(RUN_AXE)
        finally:
            page.close()
        problems += [f"{path.relative_to(SITE_OUT)}: {line}" for line in found]
    assert not problems, "\n".join(problems)


@built
def test_every_figure_has_a_meaningful_alt_text():
    bad = []
    for path in lesson_pages():
        # Markup inside <script> is code (HiPlot's bundle builds its own <img>): the browser test
        # above checks what such code draws, with axe's image-alt rule.
        markup = re.sub(r"<script\b.*?</script>", "", path.read_text(encoding="utf-8"), flags=re.S)
        for tag in re.findall(r"<img\b[^>]*>", markup):
            alt = re.search(r'\balt="([^"]*)"', tag)
            text = alt.group(1) if alt else ""
            if len(text) < 8 or re.search(r"\.(png|svg|jpe?g)\b|_images/", text):
                bad.append(f"{path.relative_to(SITE_OUT)}: {tag[:160]}")
    assert not bad, "images without a meaningful alt text:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", public_modules())
def test_every_module_docstring_is_valid_restructuredtext(name):
    """The API page renders each module's docstring: an indented table without ``::`` came out
    as a broken block quote (and a docutils error in the build log)."""
    import io

    import docutils.core

    doc = importlib.import_module(name).__doc__ or ""
    errors = io.StringIO()
    docutils.core.publish_doctree(inspect.cleandoc(doc), settings_overrides={
        "warning_stream": errors, "report_level": 2, "halt_level": 5})
    assert errors.getvalue() == "", f"{name}'s docstring: {errors.getvalue()}"
