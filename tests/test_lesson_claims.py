"""Every number in a lesson's prose is shown by the lesson itself (issue 11).

The rule, for every markdown cell of every ``notebooks/*.ipynb`` (lessons added later included):
a number written in the prose must also appear in one of the notebook's saved outputs (printed by
a cell, best with an f-string) or as a literal in one of its code cells (a setting such as
``lr = 0.05``, or a value a check cell asserts). Otherwise the prose states something no cell
shows, and it goes stale the day an output changes.

What counts as "the same number": formatting is ignored (``1,000`` = ``1000``, ``6.5`` =
``6.5000``), the prose may round an output to fewer decimals (``83%`` and ``82.8%`` match an
output of ``82.83%``) but not claim more than it shows (``82.80%`` does not match ``82.8%``), and
a percentage matches a fraction (``29%`` = ``0.29``) and the other way round.

Not checked: small whole numbers 0-10 (counts, list items, section and lesson numbers), years,
the constants in ``ALLOWED`` below (each with its reason), and anything inside inline code,
fenced code blocks, link targets, LaTeX sub- and superscripts (indices, not claims).
"""

import json
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

# Numbers a lesson may state without printing them: facts of the data format, not results.
ALLOWED = {
    Decimal("784"): "pixels of one 28x28 MNIST image",
    Decimal("28"): "MNIST images are 28 pixels on a side",
    Decimal("255"): "the largest 8-bit pixel value",
    Decimal("5000"): "the number of digits in mnist-5k: the dataset's definition, in its name",
    Decimal("0.1307"): "full MNIST's usual pixel mean (torchvision's tutorials), quoted",
    Decimal("0.3081"): "full MNIST's usual pixel std, quoted beside 0.1307",
}

# A number: digits with optional thousands commas and decimals, an optional exponent, an optional
# percent sign; not glued to a word or an identifier before it (fc1, x_2, float32).
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:[eE]([-+]?\d+))?(\s?%)?")
PROSE_DROP = [
    re.compile(r"^#+ Lesson \d+", re.M),  # a lesson's own number in its title: the reading order
    re.compile(r"```.*?```", re.S),  # fenced code blocks: commands, not claims
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # link and image targets (the link text stays)
    re.compile(r"<[^>\n]*>"),  # HTML tags
    re.compile(r"[_^]\{[^{}]*\}|[_^]\d+"),  # LaTeX sub/superscripts: indices and powers
    re.compile(r"\\[a-zA-Z]+"),  # LaTeX command names
]


def _value(whole: str, frac: str | None, exp: str | None) -> tuple:
    """(absolute value, decimals written) of a number's digits, decimals and exponent."""
    value = Decimal(whole.replace(",", "") + (frac or ""))
    if exp:
        value = value.scaleb(int(exp))
    return value, len(frac) - 1 if frac else 0


def prose_numbers(markdown: str) -> list:
    """``(token, value, decimals, is_percent, context)`` for each number the prose states."""
    text = markdown
    for pattern in PROSE_DROP:
        text = pattern.sub(" ", text)
    found = []
    for m in NUMBER.finditer(text):
        value, decimals = _value(*m.groups()[:3])
        pct = bool(m.group(4))
        small = not pct and decimals == 0 and value <= 10
        year = not pct and decimals == 0 and 1900 <= value <= 2100 and "," not in m.group(1)
        if small or year or (value in ALLOWED and not pct):
            continue
        context = " ".join(text[max(0, m.start() - 40):m.end() + 20].split())
        found.append((m.group(0).strip(), value, decimals, pct, context))
    return found


def _rounded(value: Decimal, decimals: int) -> set:
    quantum = Decimal(1).scaleb(-decimals)
    return {value.quantize(quantum, rounding=r) for r in (ROUND_HALF_UP, ROUND_HALF_EVEN)}


def shown(value: Decimal, decimals: int, pct: bool, evidence: list) -> bool:
    """Does some number in ``evidence`` equal ``value`` at the prose's precision?"""
    for shown_value, shown_decimals in evidence:
        candidates = [(shown_value, shown_decimals), (shown_value * 100, shown_decimals - 2)]
        if not pct:
            candidates.append((shown_value / 100, shown_decimals + 2))
        for c, c_decimals in candidates:
            if c_decimals >= decimals and abs(c) < Decimal("1e12") and value in _rounded(c, decimals):
                return True
    return False


def _output_text(output) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    parts = [data[k] for k in ("text/plain", "text/markdown") if k in data]
    return "\n".join("".join(p) if isinstance(p, list) else str(p) for p in parts)


def evidence(nb: dict) -> list:
    """Every number the notebook shows: in its outputs and as literals in its code."""
    texts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        texts.append("".join(cell["source"]))
        texts += [_output_text(o) for o in cell.get("outputs", [])]
    blob = "\n".join(texts)
    # In code and outputs a number may follow a letter or sign (x=0.5, -1.23, 1e-3): scan freely.
    values = []
    for m in re.finditer(r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:[eE]([-+]?\d+))?", blob):
        value, decimals = _value(*m.groups())
        values.append((value, 99 if m.group(3) else decimals))  # 1e-3: as precise as needed
    return values


def unshown_numbers(nb: dict) -> list:
    """``(cell index, token, context)`` for each prose number that no output or code shows."""
    values = evidence(nb)
    missing = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for token, value, decimals, pct, context in prose_numbers("".join(cell["source"])):
            if not shown(value, decimals, pct, values):
                missing.append((i, token, context))
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_number_in_the_prose_is_shown_by_the_lesson(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    missing = unshown_numbers(nb)
    assert not missing, (
        f"{path.name}: numbers in the prose that no output or code cell of the lesson shows "
        "(print them from a cell with an f-string, or, for a fixed constant, add it to ALLOWED in "
        "tests/test_lesson_claims.py with its reason):\n"
        + "\n".join(f"  cell {i}: {token!r} in \"...{context}...\"" for i, token, context in missing))


# -- the rule itself, on made-up notebooks ------------------------------------------------------


def _nb(markdown: str, output: str = "", code: str = "") -> dict:
    return {"cells": [
        {"cell_type": "code", "source": code,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": output}]},
        {"cell_type": "markdown", "source": markdown},
    ]}


@pytest.mark.parametrize("markdown, output, code", [
    ("It ends at 29% training accuracy.", "train accuracy 0.2904", ""),
    ("It ends at 29% training accuracy.", "train accuracy 29.04%", ""),
    ("accuracy 0.29", "accuracy 29.0%", ""),
    ("It trains on 3,600 images.", "3600 training images", ""),
    ("It trains on 3600 images.", "3,600 training images", ""),
    ("We expect $y = 6.5$.", "tensor(6.5000)", ""),
    ("about 12.6 ms", "total: 12.640ms", ""),
    ("about 83%", "accuracy 82.8%", ""),
    ("a learning rate of 0.05", "", "LR = 0.05"),
    ("three of the 784 pixels, in 2026, for 8 runs; see `lr=0.123`", "", ""),
    ("$w_{12}$ and $x^{37}$ and $2^{15}$", "", ""),
])
def test_formatting_variants_and_exemptions_pass(markdown, output, code):
    assert unshown_numbers(_nb(markdown, output, code)) == []


@pytest.mark.parametrize("markdown, output", [
    ("It ends at 29% training accuracy.", "train accuracy 0.35"),
    ("accuracy 82.9%", "accuracy 82.8%"),
    ("accuracy 82.80%", "accuracy 82.8%"),  # more decimals than the output shows: not shown
    ("It trains on 4,000 images.", "3600 training images"),
    ("a ratio of 1.18", "ratio 1.27"),
])
def test_a_number_no_output_shows_fails_with_its_cell(markdown, output):
    missing = unshown_numbers(_nb(markdown, output))
    assert len(missing) == 1
    cell, token, context = missing[0]
    assert cell == 1 and token in markdown and token in context
