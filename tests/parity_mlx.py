"""The ncps_mlx side of the parity tests, and the fixture format. No torch here.

:func:`run_mlx` computes what :func:`tests.reference.run_reference` computes (outputs,
final states, gradients of ``sum(y r_y) + sum(h r_h) (+ sum(c r_c))`` with respect to the
input, the given initial states and every trainable parameter), keyed the same way:
parameter gradients under the reference's ``state_dict`` key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

import ncps_mlx.wirings
from ncps_mlx import LTC, CfC
from ncps_mlx.interop import _ncps_key, load_ncps_state_dict
from ncps_mlx.rnn import RNN
from tests.parity_cases import INPUT_SIZE, Case, build_units

Arrays = dict[str, np.ndarray]
FIXTURES = Path(__file__).parent / "fixtures" / "parity"
# Tolerance of every comparison with the float64 reference. The mlx side computes in
# float32; its rounding used at most 0.73 of this (largest |diff| ~1e-5, on a parameter
# gradient of entries up to ~20) over 10 seeds of every case: tests/parity_report.py.
RTOL = 1e-5
ATOL = 1e-5
GROUPS = ("input", "r", "ref", "state_dict")


def build_model(case: Case) -> RNN:
    """The ncps_mlx model of ``case`` (its own random initial weights), in eval mode."""
    model = {"CfC": CfC, "LTC": LTC}[case.model](
        INPUT_SIZE, build_units(case, ncps_mlx.wirings), **case.kwargs
    )
    model.eval()
    return model


def _forward(case: Case, model: RNN, diff: dict[str, mx.array], ts: Any) -> dict[str, mx.array]:
    h0 = diff.get("h0")
    hx = (h0, diff["c0"]) if case.mixed_memory and h0 is not None else h0
    y, state = model(diff["x"], hx, ts)
    h, c = state if case.mixed_memory else (state, None)
    return {"y": y, "h": h} | ({"c": c} if c is not None else {})


def run_mlx(case: Case, model: RNN, inputs: Arrays, r: Arrays) -> Arrays:
    """Outputs, final states and gradients of the parity loss for ``model`` (float32)."""
    diff = {k: mx.array(v) for k, v in inputs.items() if k != "timespans"}
    ts = mx.array(inputs["timespans"]) if "timespans" in inputs else None
    weights = {k: mx.array(v) for k, v in r.items()}
    params = model.trainable_parameters()

    def loss_fn(params: dict, diff: dict) -> tuple[mx.array, dict]:
        model.update(params)
        out = _forward(case, model, diff, ts)
        return sum((out[k] * weights[k]).sum() for k in out), out

    try:
        (_, out), grads = mx.value_and_grad(loss_fn, argnums=(0, 1))(params, diff)
        mx.eval(out, grads)
    finally:
        model.update(params)  # drop the traced arrays the loss function put in
    results = dict(out)
    results.update({f"grad/{k}": v for k, v in grads[1].items()})
    for key, grad in tree_flatten(grads[0]):
        results[f"grad/param/{_ncps_key(model, key)}"] = grad
    return {k: np.array(v) for k, v in results.items()}


def max_abs_diffs(ours: Arrays, ref: Arrays) -> dict[str, float]:
    """Largest absolute difference per result key (both sides must have the same keys)."""
    return {k: float(np.max(np.abs(ours[k] - ref[k]), initial=0.0)) for k in ref}


def assert_parity(ours: Arrays, ref: Arrays) -> None:
    """Assert the same result keys (so the same trainable parameters) and values within
    ``RTOL``/``ATOL`` of the reference."""
    only_ours, only_ref = sorted(set(ours) - set(ref)), sorted(set(ref) - set(ours))
    assert not (only_ours or only_ref), (
        f"results differ (grad/param/* keys are the trainable parameters): only ncps_mlx "
        f"has {only_ours}, only the reference has {only_ref}"
    )
    for key in sorted(ref):
        assert ours[key].shape == ref[key].shape, f"{key}: {ours[key].shape} != {ref[key].shape}"
        np.testing.assert_allclose(ours[key], ref[key], rtol=RTOL, atol=ATOL, err_msg=key)


def mlx_results(case: Case, state_dict: Arrays, inputs: Arrays, r: Arrays) -> Arrays:
    """Build the ncps_mlx model, load the reference weights into it and run it."""
    model = load_ncps_state_dict(build_model(case), state_dict)
    return run_mlx(case, model, inputs, r)


def fixture_path(case_id: str) -> Path:
    return FIXTURES / f"{case_id}.npz"


def save_fixture(case: Case, **groups: Arrays) -> Path:
    """Write the fixture of ``case``: one entry per ``<group>/<key>`` plus the case's JSON."""
    flat = {f"{g}/{k}": v for g in GROUPS for k, v in groups[g].items()}
    path = fixture_path(case.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, case=np.array(case.to_json()), **flat)
    return path


def load_fixture(case_id: str) -> tuple[str, dict[str, Arrays]]:
    """The stored case JSON and the groups ``input``, ``r``, ``ref`` and ``state_dict``."""
    groups: dict[str, Arrays] = {g: {} for g in GROUPS}
    with np.load(fixture_path(case_id), allow_pickle=False) as archive:
        for name in archive.files:
            if name != "case":
                group, key = name.split("/", 1)
                groups[group][key] = archive[name]
        case_json = str(archive["case"])
    return case_json, groups
