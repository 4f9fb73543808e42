"""Checks of the cells a student writes in lesson 5 ("Your turn"): the softmax cross-entropy
backward atom by atom, and a scalar autograd engine of their own.

    check_cross_entropy_atoms  each local gradient (mean, pick, log, softmax, log-sum-exp) against
                               autograd on that operation alone, then their products against
                               the fused ``(softmax - onehot) / B``
    check_scalar_engine        a ``Scalar`` type with ``+``, ``*``, ``relu``, ``tanh`` and a
                               topological ``backward``, against torch on expressions
"""

import torch
import torch.nn.functional as F

from .report import Report, compare, random_float64
from .student import _close, attempt, finish

ATOMS = ("mean", "pick", "log", "softmax", "logsumexp")


def _atom_cases(seed: int) -> dict:
    """For each atom: (its forward, its inputs, the index of the input it differentiates)."""
    z, = random_float64((4, 5), seed=seed)
    labels = torch.tensor([1, 0, 4, 1])
    p = torch.softmax(z, dim=1)
    big = z * 1000  # logits of a few thousand: exp overflows unless the row max is taken out
    return {
        "mean": (lambda picked: -picked.mean(), (z[:, 0],)),
        "pick": (lambda logp: logp[torch.arange(4), labels], (torch.log_softmax(z, 1),)),
        "log": (torch.log, (p,)),
        "softmax": (lambda zz: torch.softmax(zz, dim=1), (z,)),
        "logsumexp": (lambda zz: torch.logsumexp(zz, dim=1), (z,)),
        "logsumexp, logits of +-1000s": (lambda zz: torch.logsumexp(zz, dim=1), (big,)),
    }, z, labels


def _call_atom(fn, atom: str, grad, inputs, labels):
    """The student's backward of one atom: ``fn(grad, input)`` (``pick`` also gets the labels;
    ``softmax`` gets its output ``p``, ``log`` its input ``p``)."""
    if atom == "pick":
        return fn(grad, inputs[0], labels)
    if atom == "softmax":
        return fn(grad, torch.softmax(inputs[0], dim=1))
    return fn(grad, inputs[0])


def _atom_hint(atom: str, got, expected, grad, x) -> str:
    """The usual mistake behind a wrong local gradient of the right shape."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return {"pick": "dL/dlogp has logp's shape (B, C): each sample's gradient goes to its "
                        "label's column, zeros elsewhere.",
                "mean": "one gradient per sample: shape (B,)."}.get(atom, "")
    if not torch.isfinite(got).all():
        return "exp overflowed: take each row's maximum out before exp, as the forward does."
    if _close(got, -expected):
        return "The sign is flipped."
    B = x.shape[0]
    hints = {
        "mean": lambda: [(expected * B, f"It is {B} times too large: the mean divides by B = {B}.")],
        "log": lambda: [(grad * x, "d log(p)/dp is 1/p, not p.")],
        "softmax": lambda: [(grad * x * (1 - x), "It is only the diagonal of softmax's Jacobian: "
                             "every p_j also depends on every z_k through the sum in the denominator.")],
        "logsumexp": lambda: [(grad.unsqueeze(1).expand_as(x), "The derivative of log(sum exp) is "
                               "not 1 for every logit."),
                              (grad.unsqueeze(1) * x.exp(), "The log's derivative 1/sum(exp) is missing.")],
    }
    for wrong, words in hints.get(atom.split(",")[0], list)():
        if _close(got, wrong):
            return words
    return ""


def check_cross_entropy_atoms(atoms: dict, seed: int = 0) -> Report:
    """Check the five local backwards of ``L = -mean_i log softmax(z)_{i, y_i}``, then chain them.

    ``atoms`` maps each name of ``ATOMS`` to a backward: ``mean(grad, picked)`` for
    ``-picked.mean()``; ``pick(grad, logp, labels)`` for ``logp[i, labels[i]]``; ``log(grad, p)``;
    ``softmax(grad, p)`` given the softmax's output ``p``; ``logsumexp(grad, z)`` over dim 1.
    Two chains must give the fused ``(softmax(z) - onehot(y)) / B``: mean, pick, log, softmax; and
    ``L = -mean(z_y - logsumexp(z))`` through mean, pick and log-sum-exp.
    """
    report = Report("check_cross_entropy_atoms")
    cases, z, labels = _atom_cases(seed)
    g = torch.Generator().manual_seed(seed + 1)
    for case, (forward, inputs) in cases.items():
        atom = case.split(",")[0]
        leaf = inputs[0].clone().requires_grad_()
        out = forward(leaf)
        grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
        out.backward(grad)
        ok, got = attempt(report, f"{atom} backward", _call_atom, atoms.get(atom), case, grad, inputs, labels)
        if ok and not compare(f"{case} backward", got, leaf.grad, report):
            x = torch.softmax(z, 1) if atom in ("log", "softmax") else inputs[0]
            hint = _atom_hint(case, got, leaf.grad, grad, x)
            if hint:
                report.lines[-1].detail = report.lines[-1].detail.rstrip(".") + ". " + hint
    if not report.passed:
        return finish(report)
    leaf = z.clone().requires_grad_()
    F.cross_entropy(leaf, labels).backward()  # the fused gradient (softmax - onehot) / B
    one = torch.tensor(1.0, dtype=torch.float64)
    p = torch.softmax(z, 1)
    logp = torch.log_softmax(z, 1)
    d_picked = atoms["mean"](one, logp[torch.arange(4), labels])
    chain = atoms["softmax"](atoms["log"](atoms["pick"](d_picked, logp, labels), p), p)
    compare("product: mean, pick, log, softmax", chain, leaf.grad, report)
    d_picked = atoms["mean"](one, z[torch.arange(4), labels] - torch.logsumexp(z, 1))
    chain = atoms["pick"](d_picked, z, labels) + atoms["logsumexp"](-d_picked, z)
    compare("product: mean, pick, log-sum-exp", chain, leaf.grad, report)
    return report


# ---------------------------------------------------------------------------------------------
# A scalar autograd engine
# ---------------------------------------------------------------------------------------------

def _diamond(e, a):
    """``relu(e + a) * e``: ``e`` reaches the output along two paths."""
    return (e + a).relu() * e


def _expressions():
    """(name, leaf values, expression): each expression works on the engine's values and torch's."""
    return [
        ("a + b", (2.0, -3.0), lambda a, b: a + b),
        ("a * b", (2.0, -3.0), lambda a, b: a * b),
        ("relu(a), a < 0", (-1.5,), lambda a: a.relu()),
        ("relu(a), a > 0", (0.5,), lambda a: a.relu()),
        ("tanh(a)", (0.7,), lambda a: a.tanh()),
        ("a * a + a (a used three times)", (1.5,), lambda a: a * a + a),
        ("a neuron: tanh(w1 x1 + w2 x2 + b)", (0.5, -1.0, 2.0, 3.0, 0.2),
         lambda w1, w2, x1, x2, b: (w1 * x1 + w2 * x2 + b).tanh()),
        ("a diamond: e = a b; relu(e + a) * e", (1.5, 2.0), lambda a, b: _diamond(a * b, a)),
    ]


def _one_expression(report: Report, cls, name: str, values, expression) -> None:
    """Add the lines of one expression: its value, then each leaf's gradient."""
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    ref = expression(*leaves)
    ref.backward()

    def run():
        mine = [cls(v) for v in values]
        out = expression(*mine)
        out.backward()
        return out, mine

    ok, got = attempt(report, name, run)
    if not ok:
        return
    out, mine = got
    value = torch.tensor(float(out.data), dtype=torch.float64)
    compare(f"{name}: value", value, ref.detach(), report)
    grads = torch.tensor([float(m.grad) for m in mine], dtype=torch.float64)
    compare(f"{name}: gradients of the leaves", grads, torch.stack([t.grad for t in leaves]), report)


def check_scalar_engine(cls) -> Report:
    """Check a scalar autograd type ``cls(data)`` with ``.data``, ``.grad``, ``+``, ``*``,
    ``.relu()``, ``.tanh()`` and ``.backward()`` against torch in float64, expression by expression.

    When single operations pass but a value used twice fails, the report says gradients must
    accumulate; when both pass but a deeper graph fails, that backward must go in topological order.
    """
    report = Report(f"check_scalar_engine({getattr(cls, '__name__', 'cls')})")
    for name, values, expression in _expressions():
        _one_expression(report, cls, name, values, expression)
    failed = {line.name.removesuffix(": value").removesuffix(": gradients of the leaves")
              for line in report.lines if not line.passed}
    names = [n for n, *_ in _expressions()]
    single, reuse, neuron = set(names[:5]), names[5], names[6]
    if failed and not failed & single:
        if neuron in failed or reuse not in failed:
            words = ("each operation is right alone, but a deeper graph goes wrong: does backward "
                     "visit a value only after every value computed from it (a topological order)?")
        else:
            words = ("each operation is right alone, but a value used several times gets only one "
                     "of its gradients: add them up (+=), never overwrite")
        report.add("diagnosis", False, words)
    return finish(report)


# ---------------------------------------------------------------------------------------------
# Your turn (lesson 5, section 4): the whole backward pass of the MNIST network
# ---------------------------------------------------------------------------------------------


def check_mlp_backward(fn, seed: int = 0) -> Report:
    """Check ``fn(params, cache, grad_logits) -> {name: gradient}`` for the 784-128-64-10 ReLU
    network: the six parameter gradients by name, each against autograd's (``check_mlp_gradients``).

    ``params`` are a ``ManualMLP``'s weights (``(n_in, n_out)``) and biases, ``cache`` its forward's
    ``x, z1, h1, z2, h2``, ``grad_logits`` the mean cross-entropy's ``dL/dlogits``; ``fn`` gets
    copies of each, so the reference is computed from the check's own tensors.
    """
    from ..manual import PARAMETERS, ManualMLP, cross_entropy_backward
    from .backprop import check_mlp_gradients

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream untouched
        torch.manual_seed(seed)
        mlp = ManualMLP(dtype=torch.float64)
    images = torch.randn(6, 784, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 10, (6,), generator=g)
    grad_logits = cross_entropy_backward(mlp.forward(images), labels)
    params, cache = mlp.params, {n: t for n, t in mlp.cache.items() if n != "logits"}  # the check's own
    report = Report("check_mlp_backward")
    ok, got = attempt(report, "my_mlp_backward", fn, {n: p.clone() for n, p in params.items()},
                      {n: t.clone() for n, t in cache.items()}, grad_logits.clone())
    if not ok:
        return finish(report)
    if not isinstance(got, dict):
        report.add("gradients", False, f"returned {type(got).__name__}, expected a dict keyed by "
                                       f"{', '.join(PARAMETERS)}")
        return report
    checked = check_mlp_gradients({n: got.get(n) for n in PARAMETERS}, params, images, labels)
    report.lines = checked.lines
    # The usual mistake, recognised: a ReLU's mask left out (the gradient then flows through
    # units that were off in the forward pass).
    G, p, c = grad_logits, params, cache
    dz2 = (G @ p["weight3"].T) * (c["z2"] > 0)
    unmasked = {"weight2": c["h1"].T @ (G @ p["weight3"].T),
                "weight1": c["x"].T @ (dz2 @ p["weight2"].T)}
    for line in report.lines:
        name = line.name.removeprefix("dL/d")
        if not line.passed and name in unmasked and _close(got.get(name), unmasked[name]):
            k = name[-1]
            line.detail = line.detail.rstrip(".") + (f". It is the gradient without ReLU {k}'s mask: dL/dz{k} = dL/dh{k} * [z{k} > 0], "
                            f"zero wherever z{k} was <= 0 in the forward pass")
    return report

