"""The reference side of the parity tests: ncps 1.0.1 on PyTorch, in float64.

torch and ncps are imported inside the functions, so importing this module costs nothing
and works without them. The reference model is seeded and built in float32 (so its initial
weights are the ones a user gets), then converted with ``model.double()`` and run on the
float32 inputs cast to float64, so the reference adds no float32 rounding of its own.

Results use the keys of :mod:`tests.parity_mlx`: ``y``, ``h``, ``c`` (mixed memory),
``grad/x``, ``grad/h0``, ``grad/c0`` (when given) and ``grad/param/<state_dict key>`` for
every trainable parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from tests.parity_cases import INPUT_SIZE, Case, build_units, loss_weights, make_inputs

Arrays = dict[str, np.ndarray]


def build_reference(case: Case) -> Any:
    """The ncps model of ``case``, seeded with ``case.seed``, float32, in eval mode."""
    import torch
    from ncps import wirings
    from ncps.torch import LTC, CfC

    torch.manual_seed(case.seed)
    model = {"CfC": CfC, "LTC": LTC}[case.model](
        INPUT_SIZE, build_units(case, wirings), **case.kwargs
    )
    return model.eval()  # no dropout: the comparison is deterministic


def state_dict_numpy(model: Any) -> Arrays:
    """The model's state dict (masks included) as float32 numpy arrays."""
    return {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()}


@contextlib.contextmanager
def _default_float64() -> Iterator[None]:
    # ncps creates zero initial states with torch.zeros: make them float64 as well.
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _timespans_for_reference(case: Case, timespans: np.ndarray) -> np.ndarray:
    """The reference indexes timespans like the input: a scalar becomes a full array."""
    if timespans.ndim > 0:
        return timespans
    batch = case.batch or 1
    shape = (batch, case.steps) if case.batch_first else (case.steps, batch)
    return np.full(shape if case.batch is not None else (case.steps,), timespans)


def _call(case: Case, model: Any, x: Any, h0: Any, c0: Any, ts: Any) -> tuple[Any, Any, Any]:
    hx = (h0, c0) if case.mixed_memory and h0 is not None else h0
    y, state = model(x, hx, ts)
    h, c = state if case.mixed_memory else (state, None)
    return y, h, c


def _forward(case: Case, model: Any, t: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Run the reference, one sample at a time when the case has per-sample timespans."""
    import torch

    x, h0, c0, ts = (t.get(name) for name in ("x", "h0", "c0", "timespans"))
    if not case.per_sample:
        return _call(case, model, x, h0, c0, ts)
    axis = 0 if case.batch_first else 1
    pieces = []
    for b in range(case.batch):
        states = [s[b : b + 1] if s is not None else None for s in (h0, c0)]
        sample = (x.narrow(axis, b, 1), *states, ts.narrow(axis, b, 1))
        pieces.append(_call(case, model, *sample))
    y_axis = axis if model.return_sequences else 0
    y = torch.cat([p[0] for p in pieces], dim=y_axis)
    h = torch.cat([p[1] for p in pieces], dim=0)
    c = torch.cat([p[2] for p in pieces], dim=0) if case.mixed_memory else None
    return y, h, c


def run_reference(case: Case, model: Any, inputs: Arrays) -> tuple[Arrays, Arrays]:
    """Outputs, final states and gradients of the parity loss, in float64.

    Converts ``model`` to float64 in place. Returns ``(r, results)``: the loss weights
    (float32) and the results (float64).
    """
    import torch

    model.double()
    with _default_float64():
        tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in inputs.items()}
        if "timespans" in tensors:
            ts = _timespans_for_reference(case, inputs["timespans"])
            tensors["timespans"] = torch.tensor(ts, dtype=torch.float64)
        leaves = [v.requires_grad_() for k, v in tensors.items() if k != "timespans"]
        y, h, c = _forward(case, model, tensors)
        outputs = {"y": y, "h": h} | ({"c": c} if c is not None else {})
        r = loss_weights(case, {k: tuple(v.shape) for k, v in outputs.items()})
        loss = sum((v * torch.from_numpy(r[k]).double()).sum() for k, v in outputs.items())
        loss.backward()
    assert all(leaf.grad is not None for leaf in leaves)
    results = {k: v.detach().numpy() for k, v in outputs.items()}
    results.update({f"grad/{k}": v.grad.numpy() for k, v in tensors.items() if v.requires_grad})
    for name, param in model.named_parameters():
        if param.requires_grad:
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            results[f"grad/param/{name}"] = grad.numpy()
    return r, {k: np.array(v, dtype=np.float64) for k, v in results.items()}


def reference_case(case: Case) -> tuple[Arrays, Arrays, Arrays, Arrays]:
    """Build, seed and run the reference for ``case``.

    Returns:
        ``(state_dict, inputs, r, results)``: the initial float32 state dict, the float32
        inputs, the loss weights and the float64 results.
    """
    model = build_reference(case)
    state_dict = state_dict_numpy(model)
    inputs = make_inputs(case, model.state_size)
    r, results = run_reference(case, model, inputs)
    return state_dict, inputs, r, results


def reference_with_weights(case: Case, state_dict: Arrays, inputs: Arrays) -> tuple[Arrays, Arrays]:
    """Load ``state_dict`` (strictly: every key, no extra) into a fresh reference model and
    return ``(r, results)`` on ``inputs``."""
    import torch

    model = build_reference(case)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()})
    return run_reference(case, model, inputs)
