"""Sphinx settings of the course website (built by ``python site/build.py``, i.e. ``make site``).

Sphinx reads a source tree that site/build.py assembles in build/site-src/ (these pages, the
lessons, the figures, the assignments and benchmark notes) and writes build/site/. Everything the
pages load is in build/site/: MathJax comes from site/_static/mathjax/, the theme's fonts and
scripts from the theme's own package. Nothing is fetched from a network, at build time or later.
"""

import html
import os
import re
import shutil
from pathlib import Path

from docutils import nodes

project = "Linear Layer from Scratch"
author = "the course's authors"
copyright = "the course's authors, MIT licence"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx_copybutton"]
root_doc = "index"
exclude_patterns = ["**/.ipynb_checkpoints", "README.md", "assignments/*",
                    "benchmarks/*"]  # those three: included
suppress_warnings = ["myst.header"]  # a lesson's "###" under "#" is how notebooks are written

# --- Markdown and notebooks ------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$, $$...$$ and \begin{align} as math
myst_dmath_double_inline = True  # $$...$$ inside a paragraph or list item, as Jupyter shows it
myst_heading_anchors = 3
# build.py says whether the lessons run now, in full mode ("force"), or keep their committed
# fast-mode outputs ("off", the quick preview).
nb_execution_mode = os.environ.get("COURSE_SITE_EXECUTE", "off")
nb_execution_timeout = 1800  # one cell; the longest (lesson 08's sweep) takes a few minutes
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
html_css_files = ["course.css"]  # a wider content column, wrapped code, readable tables on a phone
html_js_files = ["course.js"]  # the visible sidebar toggles work (see the file)
templates_path = ["_templates"]  # the search button's accessible name (see the template)
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
copybutton_exclude = ".linenos, .gp, .go"  # copy the code, not prompts or line numbers

# --- The course's repository -----------------------------------------------------------------
# Set COURSE_REPO_URL (e.g. https://github.com/OWNER/REPO) when building a site to publish: every
# page then links the repository, and each lesson gets Colab and Binder buttons (on that branch,
# COURSE_REPO_BRANCH, default main). Unset, the site names no address it cannot vouch for.
REPO_URL = os.environ.get("COURSE_REPO_URL", "").strip().rstrip("/")
REPO_BRANCH = os.environ.get("COURSE_REPO_BRANCH", "").strip() or "main"


def repository_options(url: str, branch: str) -> dict:
    """sphinx-book-theme's options for the repository at ``url`` (none for an empty url)."""
    if not url:
        return {}
    options = {"repository_url": url, "repository_branch": branch, "path_to_docs": "",
               "use_repository_button": True}
    if url.startswith("https://github.com/"):  # what Colab and mybinder.org can open
        options["launch_buttons"] = {"colab_url": "https://colab.research.google.com",
                                     "binderhub_url": "https://mybinder.org",
                                     "notebook_interface": "jupyterlab"}
    return options


html_theme_options.update(repository_options(REPO_URL, REPO_BRANCH))
mathjax_path = "mathjax/tex-chtml-full.js"  # in _static/ (its fonts beside it): not a CDN


# --- Pages a lesson writes (HiPlot) ------------------------------------------------------------
# A lesson that writes a standalone page prints where ("one line per run: ../runs/lesson08/
# runs.html"). Such pages are copied next to the lesson's page and linked at its top, so the site
# shows the interactive view a student opens after the run.
PRINTED_PAGE = re.compile(r"(?<![\w/.])((?:\.\./|\./)?[\w./-]+\.html)\b")
PAGES_DIR = "_pages"  # build/site/_pages/<lesson>/<file>.html
REPO = Path(__file__).resolve().parent.parent
# HiPlot's standalone pages are third-party HTML: give them what every page here must have (a
# language, a text alternative for HiPlot's logo, pagination links dark enough to read), the same
# fixes course.css and course.js make on the lesson pages.
HIPLOT_A11Y = ('<style>.page-item:not(.active) .page-link{color:#0a3d91 !important}</style><script>'
               'new MutationObserver(function(){document.querySelectorAll("img:not([alt])").forEach('
               'function(i){i.alt="HiPlot logo"})}).observe(document.documentElement,'
               '{childList:true,subtree:true});</script>')


def copy_page(source: Path, target: Path) -> None:
    """Copy a page or run log a lesson wrote, without the build machine's paths (a run records
    its absolute ``out_dir``: the site shows it relative to the repository)."""
    text = source.read_text(encoding="utf-8").replace(str(REPO) + os.sep, "")
    if source.suffix == ".html":
        text = text.replace("<html>", '<html lang="en">', 1).replace("</head>", HIPLOT_A11Y + "</head>", 1)
    target.write_text(text, encoding="utf-8")


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
        copy_page(page, target / page.name)
        for sibling in page.parent.glob("*.jsonl"):  # the run log the page shows, for download
            copy_page(sibling, target / sibling.name)
        href = f"../{PAGES_DIR}/{source.stem}/{page.name}"
        links.append(f'<a class="lesson-page" href="{href}">{page.name}</a>')
    under_title(doctree, nodes.raw("", '<div class="admonition note"><p class="admonition-title">'
                                   'Interactive pages written by this lesson\'s run</p><p>' +
                                   " · ".join(links) + " (standalone HiPlot views: open them, drag "
                                   "along an axis to select runs)</p></div>", format="html"))


def under_title(doctree, node) -> None:
    """Insert ``node`` right under the page's title (at the top when it has none)."""
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        doctree.insert(0, node)
    else:
        title = next(iter(section.findall(nodes.title)))
        section.insert(section.index(title) + 1, node)


# --- Getting a lesson --------------------------------------------------------------------------
# Each lesson's page offers its notebook (the repository's file: the committed fast-mode outputs)
# next to the page, notebooks/<lesson>.ipynb, and says how to open it in JupyterLab.

def run_it_yourself(stem: str, repo_url: str) -> str:
    """HTML of the note under a lesson's title: download, then open in JupyterLab."""
    where = (f'the <a href="{html.escape(repo_url)}">course\'s repository</a>' if repo_url
             else "the course's repository")
    return (
        '<div class="admonition tip run-it-yourself"><p class="admonition-title">Run this lesson '
        f'yourself</p><p><a class="lesson-download" href="{stem}.ipynb" download>Download '
        f'{stem}.ipynb</a> (the notebook as committed, with fast-mode outputs). In a checkout of '
        f"{where}, run <code>make lab</code> (without make: <code>python -m jupyter lab</code> "
        f"from the repository's root) and open <code>notebooks/{stem}.ipynb</code>; a downloaded "
        "copy runs in any environment where <code>pip install -e .</code> installed the "
        "repository's <code>course_lib</code>. Set <code>COURSE_FAST=1</code> for the quick "
        "run CI checks.</p></div>")


def link_notebook_download(app, doctree):
    docname = app.env.docname
    if docname.startswith("notebooks/"):
        stem = Path(app.env.doc2path(docname)).stem
        under_title(doctree, nodes.raw("", run_it_yourself(stem, REPO_URL), format="html"))


def copy_lesson_notebooks(app, exception):
    if exception is None:
        for source in sorted((Path(app.srcdir) / "notebooks").glob("*.ipynb")):
            shutil.copyfile(source, Path(app.outdir) / "notebooks" / source.name)


# --- Alt text of the figures a lesson's code draws ----------------------------------------------
# An output figure has no alt text of its own (MyST-NB would use its file path). It gets the
# titles the cell gives its plots, else the section it belongs to.
PLOT_TITLE = re.compile(r"""(?:set_title|suptitle|title)\(\s*f?(["'])(.+?)\1""")


def figure_alt(code: str, section: str) -> str:
    """Alt text for a figure drawn by ``code`` in the section titled ``section``."""
    titles = list(dict.fromkeys(title for _, title in PLOT_TITLE.findall(code)
                                if "{" not in title))  # an f-string's: known only at run time
    if titles:
        return "Figure: " + "; ".join(titles)
    return f"Figure drawn by the code above, for the section \u201c{section}\u201d"


def describe_output_figures(app, doctree):
    if not app.env.docname.startswith("notebooks/"):
        return
    for image in doctree.findall(nodes.image):
        alt = image.get("alt", "")
        if alt and not re.search(r"\.(png|svg|jpe?g)\b|_images/|^\S+$", alt):
            continue  # a figure the lesson's text describes itself
        cell = image.parent
        while cell is not None and "cell" not in cell.get("classes", []):
            cell = cell.parent
        holder = image.parent
        while holder is not None and not isinstance(holder, nodes.section):
            holder = holder.parent
        title = next(iter(holder.findall(nodes.title))).astext() if holder is not None else ""
        code = "".join(block.astext() for block in cell.findall(nodes.literal_block)
                       if "output" not in block.get("classes", [])) if cell is not None else ""
        image["alt"] = figure_alt(code, title or app.env.titles[app.env.docname].astext())


# Fixed in the written lesson pages:
# - HiPlot's inline view is a whole HTML document with a favicon link, static/icon.png, that only
#   HiPlot's own server has; on these pages it would be a broken link.
# - MyST-NB's toggles of hidden cells have aria-label="Toggle hidden content" over the visible
#   text "Show code cell source": a screen reader's name and the visible one must agree (axe:
#   label-content-name-mismatch). Without the label, the name is the visible text.
PAGE_FIXES = [
    ('<link rel="icon" href="static/icon.png" />', ""),
    ('<summary aria-label="Toggle hidden content">', "<summary>"),
]


def fix_lesson_pages(app, exception):
    if exception is None:
        for page in Path(app.outdir).glob("notebooks/*.html"):
            text = fixed = page.read_text(encoding="utf-8")
            for old, new in PAGE_FIXES:
                fixed = fixed.replace(old, new)
            if fixed != text:
                page.write_text(fixed, encoding="utf-8")


def setup(app):
    app.connect("doctree-read", link_lesson_pages)
    app.connect("doctree-read", link_notebook_download)
    app.connect("doctree-read", describe_output_figures)
    app.connect("build-finished", fix_lesson_pages)
    app.connect("build-finished", copy_lesson_notebooks)
