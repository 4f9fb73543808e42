"""The student's objects as the grader's test code sees them: proxies that call into the sandbox.

A call sends its arguments to the sandbox and brings back plain values (loaded here with
``harness.loads_plain``: no class or function can come back), mirroring in-place changes to tensors, dicts and modules that
were passed in; a Function's forward and backward run there through a stand-in ``ctx``.
"""

import torch


def _rebuild_neural_net(state_dict: dict):
    from course_lib.models import NeuralNet
    model = NeuralNet(int(state_dict["fc1.weight"].shape[1]))
    model.load_state_dict(state_dict)
    return model


# Modules a student's function may hand back, rebuilt here from their state_dict.
REBUILD = {"course_lib.models.NeuralNet": _rebuild_neural_net}


def from_wire(value):
    """A value from the sandbox as the test code expects it: a module rebuilt, an object it
    cannot bring back as a stand-in of the same type name (so a check can say "returned X")."""
    if isinstance(value, dict) and "__module__" in value and "state_dict" in value:
        rebuild = REBUILD.get(value["__module__"])
        if rebuild is None:
            raise TypeError(f"returned a {value['__module__'].rsplit('.', 1)[-1]}: the grader can "
                            f"only take back {', '.join(REBUILD)}")
        return rebuild(value["state_dict"])
    if isinstance(value, dict) and set(value) == {"__object__"}:
        return type(str(value["__object__"]), (), {})()
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_wire(v) for v in value)
    if isinstance(value, dict):
        return {k: from_wire(v) for k, v in value.items()}
    return value


@torch.no_grad()
def mirror(args, after, same) -> None:
    """Apply to the grader's arguments what the student's function did to its copies: tensors
    changed in place, dict entries changed in place or replaced, modules' new state. What the
    sandbox says it left unchanged (a tensor sent back as ``None``, a dict key listed in
    ``unchanged``) keeps the grader's own value."""
    for arg, state, kept in zip(args, after, same):
        if isinstance(arg, torch.Tensor) and isinstance(state, torch.Tensor) and state.shape == arg.shape:
            arg.copy_(state)
        elif isinstance(arg, dict) and isinstance(state, dict) and isinstance(state.get("entries"), dict):
            unchanged = state.get("unchanged") if isinstance(state.get("unchanged"), list) else []
            for key in [k for k in arg if k not in state["entries"] and k not in unchanged]:
                del arg[key]
            for key, value in state["entries"].items():
                old = arg.get(key)
                if key in (kept or ()) and isinstance(old, torch.Tensor) and isinstance(value, torch.Tensor) \
                        and value.shape == old.shape:
                    old.copy_(value)
                else:
                    arg[key] = from_wire(value)
        elif isinstance(arg, torch.nn.Module) and isinstance(state, dict) and "state_dict" in state:
            arg.load_state_dict(state["state_dict"])


def callable_proxy(code, name: str):
    """The student's function ``name``: runs in the sandbox on copies of the arguments."""

    def proxy(*args, **kwargs):
        reply = code.call({"op": "call", "name": name, "args": args, "kwargs": kwargs}, f"{name}(...)")
        mirror(args, reply.get("args", []), reply.get("same", []))
        return from_wire(reply.get("value"))

    proxy.__name__ = proxy.__qualname__ = name
    return proxy


def function_proxy(code, name: str):
    """The student's autograd Function class ``name``: forward and backward run in the sandbox
    (backward through a stand-in ctx, returning its raw gradients); autograd, gradcheck and the
    checks work on it here as on the original."""

    def forward(ctx, *inputs):
        handle = code.sandbox.new_handle()
        sent = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in inputs)
        reply = code.call({"op": "forward", "name": name, "inputs": sent, "handle": handle,
                           "needs": tuple(ctx.needs_input_grad)}, f"{name}.forward")
        ctx.sandbox_handle = handle
        return from_wire(reply.get("value"))

    def backward(ctx, *grad_outputs):
        reply = code.call({"op": "backward", "handle": ctx.sandbox_handle, "grads": grad_outputs},
                          f"{name}.backward")
        value = reply.get("value")
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                   "backward": staticmethod(backward)})
