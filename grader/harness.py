"""The student's side of the autograder: runs inside the sandbox, never in the grader's process.

    python harness.py PROGRAM REQUEST_FD RESPONSE_FD

A standalone script (the sandbox mounts this one file; it imports nothing of the grader).
``PROGRAM`` (written by ``grader/sandbox.py``) holds the cells to run, the course_lib objects to
withhold, whether autograd is off, a file descriptor per cell for its output (the grader opened the files: the sandbox
cannot see them) and the most processes the student may start. The harness runs the cells one by
one in the current folder, then answers the grader's requests: call one of the student's
functions, or run a student's autograd Function's forward or backward through a stand-in ``ctx``.
Requests and answers are pickled frames on two pipes, with every plain tensor packed as a tuple of
builtins (``pack``): its dtype's name, its shape and its bytes.

Nothing here is trusted: the student's code runs in this process and may change anything in it.
The grader loads what comes back with ``loads_plain``: an unpickler that refuses every class and
function (so only numbers, strings, bytes, lists, tuples and dicts can come back), then rebuilds
each packed tensor after checking its dtype, shape and size; it checks every value itself.
``torch.load(weights_only=True)``, which did this before, cost about 5 ms per reply.
"""

import builtins
import collections
import importlib
import io
import math
import os
import pickle
import resource
import struct
import sys
import traceback
import types

import torch

KEEP_HANDLES = 512  # forward calls whose ctx a later backward may still ask for


TENSOR = "\x00tensor"  # the first item of a packed tensor: (TENSOR, dtype, shape, requires_grad, bytes)
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex128, torch.complex64,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}
NAMES = {d: name for name, d in DTYPES.items()}
MAX_DEPTH = 64  # nesting of lists, tuples and dicts in one message


def pack(value, depth: int = 0):
    """``value`` with every tensor of a dtype in ``DTYPES`` packed as a tuple of builtins (a sparse
    one made dense first); lists, tuples and dicts packed item by item; the rest left as it is."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    if isinstance(value, torch.Tensor) and value.dtype in NAMES and value.device.type == "cpu":
        t = value.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        flat = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
        return (TENSOR, NAMES[t.dtype], tuple(t.shape), bool(value.requires_grad),
                flat.view(torch.uint8).numpy().tobytes())
    if isinstance(value, list):
        return [pack(v, depth + 1) for v in value]
    if type(value) is tuple:
        return tuple(pack(v, depth + 1) for v in value)
    if type(value) is dict:
        return {k: pack(v, depth + 1) for k, v in value.items()}
    return value


def unpack(value, depth: int = 0):
    """The inverse of ``pack``; a packed tensor is rebuilt only after its dtype, shape and size
    are checked (``ValueError`` otherwise)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    if type(value) is tuple and len(value) == 5 and value[0] == TENSOR:
        _, name, shape, requires_grad, data = value
        dtype = DTYPES.get(name) if isinstance(name, str) else None
        if dtype is None or type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape) \
                or type(data) is not bytes or type(requires_grad) is not bool:
            raise ValueError("a malformed tensor")
        numel = math.prod(shape)
        if len(data) != numel * dtype.itemsize:
            raise ValueError(f"a tensor of shape {shape} and {len(data)} bytes")
        if numel == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            if dtype == torch.bool and bool((raw > 1).any()):
                raise ValueError("a bool tensor holding values other than 0 and 1")
            tensor = raw.view(dtype).reshape(shape)
        return tensor.requires_grad_() if requires_grad and (dtype.is_floating_point or dtype.is_complex) else tensor
    if isinstance(value, list):
        return [unpack(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(unpack(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: unpack(v, depth + 1) for k, v in value.items()}
    return value


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # every class and function: nothing can be called
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def loads_plain(data: bytes):
    """A message from an untrusted sender: plain values only, packed tensors rebuilt and checked."""
    return unpack(_PlainUnpickler(io.BytesIO(data)).load())


def dumps(message) -> bytes:
    return pickle.dumps(pack(message), protocol=pickle.HIGHEST_PROTOCOL)


def send(fd: int, message) -> None:
    data = dumps(message)
    view = memoryview(struct.pack(">Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def receive(fd: int):
    def exactly(n):
        chunks = []
        while n:
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack(">Q", exactly(8))
    return unpack(pickle.loads(exactly(size)))  # written by the grader: its classes are trusted


class Withheld:
    """Stands in for a course_lib solution while the assignment that asks for it is graded."""

    def __init__(self, name: str, assignment: str):
        self._message = (f"{name} is course_lib's solution, withheld while {assignment} is graded: "
                         "use your own implementation")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(self._message)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise NotImplementedError(self._message)


def withhold(names, assignment: str) -> None:
    """Replace each ``module.attr`` in ``names`` wherever a course_lib module holds it, and make
    the original itself raise (a student could reach it without a module: through
    ``torch.autograd.Function.__subclasses__()``, ``gc.get_objects()``, a bound method...)."""
    importlib.import_module("course_lib.checks")  # the modules that import the solutions
    for qualified in names:
        module, attr = qualified.rsplit(".", 1)
        try:
            original = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):  # not in this course_lib: nothing to withhold
            continue
        stub = Withheld(qualified, assignment)
        for name, mod in list(sys.modules.items()):
            if name == "course_lib" or name.startswith("course_lib."):
                for key, value in list(vars(mod).items()):
                    if value is original:
                        setattr(mod, key, stub)
        disable(original, stub._message)


def disable(original, message: str) -> None:
    """Give every function of ``original`` (a function, or a class's methods) a body that raises."""
    scope = {}
    exec(f"def withheld(*args, **kwargs):\n    raise NotImplementedError({message!r})\n", scope)
    members = vars(original).values() if isinstance(original, type) else [original]
    for member in members:
        function = getattr(member, "__func__", member)  # staticmethod, classmethod
        if isinstance(function, types.FunctionType) and not function.__code__.co_freevars:
            function.__code__ = scope["withheld"].__code__


def disable_autograd(assignment: str) -> None:
    """Make every entry to autograd's engine raise, for an assignment that asks for gradients by
    hand: ``Tensor.backward``, ``torch.autograd.grad/backward``, ``torch.autograd.functional``,
    ``torch.func``'s transforms, and the engine object itself."""
    text = f"autograd is off while {assignment} is graded: compute the gradients by hand"

    def refusal():  # a new function each time: torch.compile's tables refuse one object under two names
        def refuse(*args, **kwargs):
            raise RuntimeError(text)
        return refuse

    class Engine:
        def __getattr__(self, name):
            raise RuntimeError(text)

    import torch.autograd.functional
    import torch.autograd.graph
    import torch.autograd.variable
    import torch.func
    torch.Tensor.backward = refusal()
    torch.autograd.grad, torch.autograd.backward = refusal(), refusal()
    for name in ("vjp", "jvp", "jacobian", "hessian", "vhp", "hvp"):
        setattr(torch.autograd.functional, name, refusal())
    for name in ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "linearize"):
        setattr(torch.func, name, refusal())
    torch.autograd.variable.Variable._execution_engine = Engine()
    torch.autograd.graph._engine_run_backward = refusal()
    torch._C._ImperativeEngine = refusal()


def redirect_output(fd: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the last cell's output went past the size limit
        pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def error_of(e: BaseException) -> dict:
    return {"ename": type(e).__name__, "evalue": str(e)[:4000],
            "traceback": "".join(traceback.format_exception(e))[-8000:]}


def run_cells(program: dict, namespace: dict, out: int) -> None:
    setup = None  # the namespace after the setup cells: what the student's cells found there
    for (index, kind, source), output in zip(program["cells"], program["outputs"]):
        if kind == "answer" and setup is None:
            setup = dict(namespace)
        send(out, {"event": "start", "cell": index})
        redirect_output(output)
        error = None
        try:
            exec(compile(source, f"<cell {index}>", "exec"), namespace)
        except BaseException as e:  # noqa: BLE001 (a notebook shows every error and goes on)
            error = error_of(e)
        send(out, {"event": "end", "cell": index, "error": error})
    setup = dict(namespace) if setup is None else setup
    # new names, and setup names the student bound to something else (the grader reports those)
    defined = {name: kind_of(value) for name, value in namespace.items()
               if not name.startswith("_") and (name not in setup or setup[name] is not value)}
    send(out, {"event": "ready", "names": defined})


def kind_of(value) -> str:
    if isinstance(value, type) and issubclass(value, torch.autograd.Function):
        return "function_class"
    return "callable" if callable(value) else "value"


def to_wire(value, depth: int = 0):
    """``value`` as plain values ``loads_plain`` accepts: tensors, numbers, strings, lists, tuples,
    dicts."""
    if depth > 20:
        return None
    if isinstance(value, torch.Tensor):  # a plain tensor; a new parameter keeps requires_grad
        return value.detach().requires_grad_(value.requires_grad and value.is_leaf)  # send copies it
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [to_wire(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: to_wire(v, depth + 1) for k, v in value.items() if isinstance(k, (str, int))}
    if isinstance(value, torch.nn.Module):
        return {"__module__": f"{type(value).__module__}.{type(value).__qualname__}",
                "state_dict": {k: v.detach() for k, v in value.state_dict().items()}}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return to_wire(value.item(), depth + 1)
        except Exception:  # noqa: BLE001
            pass
    return {"__object__": type(value).__name__}


def snapshot(args) -> list:
    """A copy of each tensor argument and of each tensor in a dict argument, taken before the
    call: what ``state_after`` compares with to leave out what the call did not change."""
    snaps = []
    for arg in args:
        if isinstance(arg, torch.Tensor):
            snaps.append(arg.detach().clone())
        elif isinstance(arg, dict):
            snaps.append({k: (v, v.detach().clone()) for k, v in arg.items() if isinstance(v, torch.Tensor)})
        else:
            snaps.append(None)
    return snaps


def _unchanged(value, snap) -> bool:
    """``value`` holds what ``snap`` held: the same dtype, shape and values (a NaN counts as changed)."""
    return (isinstance(value, torch.Tensor) and value.dtype == snap.dtype and value.shape == snap.shape
            and torch.equal(value.detach(), snap))


def state_after(args, snaps=None) -> list:
    """For each argument, what the grader needs to mirror the call's effects on its own copy:
    a tensor's value now (``None`` when unchanged); a dict's entries now, less the tensors that are
    the same objects with the same values as before the call (named in ``unchanged``: the grader
    keeps its own); a module's state_dict now. Sending less is safe: the grader keeps its own copy
    of whatever is not sent."""
    after = []
    for arg, snap in zip(args, snaps or [None] * len(args)):
        if isinstance(arg, torch.Tensor):
            after.append(None if snap is not None and _unchanged(arg, snap) else arg.detach())
        elif isinstance(arg, dict):
            keys = [k for k in arg if isinstance(k, (str, int))]
            kept = [k for k in keys if snap and k in snap and snap[k][0] is arg[k] and _unchanged(arg[k], snap[k][1])]
            after.append({"entries": {k: to_wire(arg[k]) for k in keys if k not in kept}, "unchanged": kept})
        elif isinstance(arg, torch.nn.Module):
            after.append({"state_dict": {k: v.detach() for k, v in arg.state_dict().items()}})
        else:
            after.append(None)
    return after


def serve(namespace: dict, inp: int, out: int) -> None:
    from course_lib.checks.autograd import run_backward, run_forward

    handles = collections.OrderedDict()
    while True:
        try:
            request = receive(inp)
        except EOFError:  # the grader is done: end at once (tearing down torch costs 0.6 s of CPU)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):  # past the output limit, or closed by the student
                    pass
            os._exit(0)
        try:
            op = request["op"]
            if op == "call":
                args = request["args"]
                before = [dict(arg) if isinstance(arg, dict) else None for arg in args]
                snaps = snapshot(args)
                value = namespace[request["name"]](*args, **request["kwargs"])
                answer = {"value": to_wire(value), "args": state_after(args, snaps),
                          "same": [[k for k, v in arg.items() if k in old and old[k] is v]
                                   if isinstance(arg, dict) else None for arg, old in zip(args, before)]}
            elif op == "forward":
                fn = namespace[request["name"]]
                ctx, output = run_forward(fn, request["inputs"], request["needs"])
                handles[request["handle"]] = (fn, ctx, len(request["inputs"]))
                while len(handles) > KEEP_HANDLES:
                    handles.popitem(last=False)
                answer = {"value": to_wire(output)}
            elif op == "backward":
                fn, ctx, n_inputs = handles[request["handle"]]
                answer = {"value": to_wire(run_backward(fn, ctx, request["grads"][0], n_inputs))}
            else:
                raise ValueError(f"unknown request {op!r}")
            send(out, {"event": "result", **answer})
        except BaseException as e:  # noqa: BLE001 (report it to the grader, serve the next request)
            send(out, {"event": "raised", **error_of(e)})


def main() -> None:
    path, inp, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    program = torch.load(path, weights_only=True)
    if program["processes"]:  # counted in the sandbox's own user namespace; no capability lifts it
        resource.setrlimit(resource.RLIMIT_NPROC, (program["processes"], program["processes"]))
    withhold(program["withheld"], program["assignment"])
    if not program.get("autograd", True):
        disable_autograd(program["assignment"])
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    run_cells(program, namespace, out)
    redirect_output(program["outputs"][-1])  # what the student's functions print when called
    serve(namespace, inp, out)


if __name__ == "__main__":
    main()
