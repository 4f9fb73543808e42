"""Sphinx settings of the course website (built by ``python site/build.py``, i.e. ``make site``).

Sphinx reads a source tree that site/build.py assembles in build/site-src/ (these pages, the
lessons, the figures, the assignments and benchmark notes) and writes build/site/. Everything the
pages load is in build/site/: MathJax comes from site/_static/mathjax/, the theme's fonts and
scripts from the theme's own package. Nothing is fetched from a network, at build time or later.
"""

import os
import re
import shutil
from pathlib import Path

from docutils import nodes

project = "Linear Layer from Scratch"
author = "the course's authors"
copyright = "the course's authors, MIT licence"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
root_doc = "index"
exclude_patterns = ["**/.ipynb_checkpoints", "assignments/*", "benchmarks/*"]  # those two: included
suppress_warnings = ["myst.header"]  # a lesson's "###" under "#" is how notebooks are written

# --- Markdown and notebooks ------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$, $$...$$ and \begin{align} as math
myst_dmath_double_inline = True  # $$...$$ inside a paragraph or list item, as Jupyter shows it
myst_heading_anchors = 3
# build.py says whether the lessons run now, in full mode ("force"), or keep their committed
# fast-mode outputs ("off", the quick preview).
nb_execution_mode = os.environ.get("COURSE_SITE_EXECUTE", "off")
nb_execution_timeout = 1800  # one cell; the longest (lesson 06's sweep) takes a few minutes
nb_execution_raise_on_error = True  # a failing lesson fails the build (no published traceback)
nb_execution_show_tb = True
nb_merge_streams = True
nb_ipywidgets_js = {}  # the default loads require.js and the widget manager from a CDN

# --- API reference ---------------------------------------------------------------------------
autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # not torch.autograd.Function's own long docstrings
napoleon_google_docstring = True

# --- HTML ------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "Linear Layer from Scratch"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # else every browser asks the server for /favicon.ico
html_copy_source = False  # no _sources/ copies of every page
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "auto"}  # light or dark as the reader's system prefers
mathjax_path = "mathjax/tex-chtml-full.js"  # in _static/ (its fonts beside it): not a CDN


# --- Pages a lesson writes (HiPlot) ------------------------------------------------------------
# A lesson that writes a standalone page prints where ("one line per run: ../runs/lesson06/
# runs.html"). Such pages are copied next to the lesson's page and linked at its top, so the site
# shows the interactive view a student opens after the run.
PRINTED_PAGE = re.compile(r"(?<![\w/.])((?:\.\./|\./)?[\w./-]+\.html)\b")
PAGES_DIR = "_pages"  # build/site/_pages/<lesson>/<file>.html


def lesson_pages(doctree, notebook_dir: Path) -> list:
    """Existing HTML files named in ``doctree``'s printed outputs (relative to the lesson)."""
    found = []
    for block in doctree.findall(nodes.literal_block):
        if "output" not in block.get("classes", []):
            continue
        for name in PRINTED_PAGE.findall(block.astext()):
            path = Path(os.path.realpath(notebook_dir / name))
            if path.is_file() and path not in found:
                found.append(path)
    return found


def link_lesson_pages(app, doctree):
    docname = app.env.docname
    if not docname.startswith("notebooks/"):
        return
    source = Path(app.env.doc2path(docname))
    pages = lesson_pages(doctree, source.parent)
    if not pages:
        return
    target = Path(app.outdir) / PAGES_DIR / source.stem
    target.mkdir(parents=True, exist_ok=True)
    links = []
    for page in pages:
        shutil.copyfile(page, target / page.name)
        for sibling in page.parent.glob("*.jsonl"):  # the run log the page shows, for download
            shutil.copyfile(sibling, target / sibling.name)
        href = f"../{PAGES_DIR}/{source.stem}/{page.name}"
        links.append(f'<a class="lesson-page" href="{href}">{page.name}</a>')
    note = nodes.raw("", '<div class="admonition note"><p class="admonition-title">Interactive '
                     'pages written by this lesson\'s run</p><p>' + " · ".join(links) +
                     " (standalone HiPlot views: open them, drag along an axis to select runs)"
                     "</p></div>", format="html")
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        doctree.insert(0, note)
    else:  # right under the lesson's title
        title = next(iter(section.findall(nodes.title)))
        section.insert(section.index(title) + 1, note)


# HiPlot's inline view is a whole HTML document with a favicon link, static/icon.png, that only
# HiPlot's own server has; on these pages it would be a broken link.
HIPLOT_FAVICON = '<link rel="icon" href="static/icon.png" />'


def drop_hiplot_favicon(app, exception):
    if exception is None:
        for page in Path(app.outdir).glob("notebooks/*.html"):
            text = page.read_text(encoding="utf-8")
            if HIPLOT_FAVICON in text:
                page.write_text(text.replace(HIPLOT_FAVICON, ""), encoding="utf-8")


def setup(app):
    app.connect("doctree-read", link_lesson_pages)
    app.connect("build-finished", drop_hiplot_favicon)
