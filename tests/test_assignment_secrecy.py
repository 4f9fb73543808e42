"""No assignment's answer is printed elsewhere in the course: the code of every solution (the lines
between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in ``assignments/source``) must not appear
in the lessons (their code, text and outputs, where ``inspect.getsource`` prints library code), in
``course_lib`` or in the site's sources.

Lines are compared normalised (comments and spaces dropped); lines too short or too common to
give an answer away (``model.train()``, ``return grads``) are left out. A solution leaks when
three of its lines appear in a row somewhere else, or when most of its lines appear anywhere.
"""

import re
from pathlib import Path

import nbformat
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "assignments" / "source").glob("*/*.ipynb"))
MIN_CHARS = 16  # normalised; shorter lines (`model.eval()`, `returngrads`) say nothing
WINDOW = 3  # this many solution lines in a row, found in a row elsewhere, is a leak
MOST = 0.5  # more than this share of a solution's lines found anywhere is a leak


def normalise(line: str) -> str:
    """A line without its comment (outside strings, roughly), quotes unified, and no spaces."""
    line = re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""
    return re.sub(r"\s+", "", line).replace("'", '"')


def meaningful(lines) -> list:
    out = []
    for line in lines:
        n = normalise(line)
        if len(n) >= MIN_CHARS and not n.startswith(('"""', "def", "class", "@")):
            out.append(n)
    return out


def solution_blocks(path: Path) -> list:
    """``(cell id, [normalised lines])`` for every solution region of a source notebook."""
    blocks = []
    for cell in nbformat.read(path, as_version=4).cells:
        if not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, flags=re.S):
            blocks.append((cell.id, meaningful(block.splitlines())))
    return blocks


def public_texts() -> dict:
    """Every public text of the course: lesson cells and their outputs, the library, the site."""
    texts = {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            texts[f"{path.name} cell {i}"] = cell.source
            for j, out in enumerate(cell.get("outputs", [])):
                text = out.get("text") or out.get("data", {}).get("text/plain", "")
                texts[f"{path.name} cell {i} output {j}"] = "".join(text)
    for root, pattern in (("course_lib", "**/*.py"), ("site", "*.md"), ("site", "*.py")):
        for path in sorted((REPO / root).glob(pattern)):
            texts[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    return texts


@pytest.fixture(scope="module")
def public() -> dict:
    return {where: meaningful(text.splitlines()) for where, text in public_texts().items()}


def leaks(lines: list, public: dict) -> list:
    """Where ``lines`` (one solution) show up in ``public``: runs of WINDOW, or most lines."""
    found = []
    windows = {tuple(lines[i:i + WINDOW]) for i in range(len(lines) - WINDOW + 1)}
    everywhere = set()
    for where, text in public.items():
        everywhere.update(set(lines) & set(text))
        if any(tuple(text[i:i + WINDOW]) in windows for i in range(len(text) - WINDOW + 1)):
            found.append(f"{WINDOW} lines in a row in {where}")
    if lines and len(everywhere) > MOST * len(lines):
        found.append(f"{len(everywhere)} of its {len(lines)} lines: {sorted(everywhere)}")
    return found


def test_every_assignment_has_solution_code_to_protect():
    assert len(SOURCES) == 5
    for path in SOURCES:
        assert sum(len(lines) for _, lines in solution_blocks(path)) >= 5, path.name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_solution_is_printed_in_the_lessons_the_library_or_the_site(path, public):
    problems = {cell: found for cell, lines in solution_blocks(path) if (found := leaks(lines, public))}
    assert not problems, f"{path.name}: solution code appears in public material: {problems}"


def test_the_check_finds_a_solution_copied_into_public_material():
    """The detector itself: a copied block is found, with or without spaces and comments changed."""
    lines = meaningful(["grad_input = grad_output @ weight  # (B, out) @ (out, in)",
                        "grad_weight = grad_output.t() @ input",
                        "grad_bias = grad_output.sum(0) if bias is not None else None"])
    copied = meaningful(["print('x')", "grad_input=grad_output@weight", "grad_weight = grad_output.t()  @ input",
                         "grad_bias = grad_output.sum(0) if bias is not None else None  # the bias"])
    assert leaks(lines, {"lesson": copied})[0] == "3 lines in a row in lesson"
    assert leaks(lines, {"lesson": copied[:2], "library": copied[2:]}) == [f"3 of its 3 lines: {sorted(lines)}"]
    assert leaks(lines, {"lesson": copied[:1], "library": copied[2:]}) == [f"2 of its 3 lines: {sorted(copied[:1] + copied[2:])}"]
    assert leaks(lines, {"lesson": copied[1:2]}) == []  # one line of three: not a leak


def test_source_notebooks_are_committed_without_outputs():
    """Outputs of the sources would differ between CPUs (and print what a solution computes)."""
    for path in SOURCES:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), path.name


def _library_answers():
    """(assignment, what the library offers in the asked signature, the assignment's check): the
    library's nearest code, which the lessons print, must not pass the assignment's own check."""
    import course_lib.functions as functions
    import course_lib.manual as manual
    import course_lib.train as train
    from course_lib.checks import assignments as checks
    from course_lib.checks import check_function

    def swish(x, beta):
        return x * torch.sigmoid(beta * x)

    return [
        ("01 forward", lambda: checks.check_linear_out_in_forward(functions.Linear_Layer)),
        ("01 backward", lambda: checks.check_linear_out_in_backward(functions.Linear_Layer)),
        ("03", lambda: check_function(functions.LearnedSiLU, swish, shapes=((4, 5), (5,)))),
        ("04 top-k accuracy", lambda: checks.check_top_k_accuracy(lambda model, batches, k: train.evaluate(model, batches)[1])),
        ("04 train_epoch", lambda: checks.check_train_epoch_accumulate(
            lambda model, batches, optimizer, accumulate: train.train_epoch(model, batches, optimizer)[0])),
        ("05 loss backward", lambda: checks.check_sigmoid_cross_entropy_backward(manual.cross_entropy_backward)),
    ]


@pytest.mark.parametrize("case", range(6), ids=["01 forward", "01 backward", "03", "04 top-k accuracy",
                                                "04 train_epoch", "05 loss backward"])
def test_the_librarys_code_does_not_answer_an_assignment(case):
    name, run = _library_answers()[case]
    report = run()
    assert not report.passed, f"{name}: course_lib's own code passes the assignment's check"
