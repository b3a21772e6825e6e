"""Parity of ncps_mlx with the reference ncps 1.0.1 (PyTorch) on the cases of
tests/parity_cases.py: outputs, final states and gradients (input, initial states, every
parameter) within rtol = atol = 1e-5 of a float64 reference.

The stored-fixture tests need no torch. The live tests recompute the reference (with
another seed, so new weights and inputs) and skip without torch and ncps. Regenerate the
fixtures with ``python tests/fixtures/make_parity_fixtures.py``.
"""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import kernels
from ncps_mlx.interop import to_ncps_state_dict
from tests.parity_cases import CASES, CASES_BY_ID, Case, make_inputs
from tests.parity_mlx import (
    FIXTURES,
    assert_parity,
    build_model,
    load_fixture,
    mlx_results,
    run_mlx,
)

REGENERATE = "rerun `python tests/fixtures/make_parity_fixtures.py`"
by_id = pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])


def _reference():
    """The torch-side helpers, or a skip when the reference is not installed."""
    pytest.importorskip("torch", reason="live reference needs torch (pip install .[interop])")
    pytest.importorskip("ncps", reason="live reference needs ncps==1.0.1")
    from tests import reference

    return reference


@by_id
def test_matches_stored_reference(case: Case) -> None:
    case_json, groups = load_fixture(case.id)
    assert case_json == case.to_json(), f"fixture of {case.id} is stale: {REGENERATE}"
    ours = mlx_results(case, groups["state_dict"], groups["input"], groups["r"])
    assert_parity(ours, groups["ref"])


@by_id
def test_graph_path_matches_stored_reference(case: Case) -> None:
    """Every case as MLX operations only (the GPU's path; the CPU takes the fused kernels
    where they apply)."""
    case_json, groups = load_fixture(case.id)
    with kernels.disabled():
        ours = mlx_results(case, groups["state_dict"], groups["input"], groups["r"])
    assert_parity(ours, groups["ref"])


def test_fixtures_match_case_list() -> None:
    on_disk = {path.stem for path in FIXTURES.glob("*.npz")}
    assert not set(CASES_BY_ID) - on_disk, f"missing fixtures: {REGENERATE}"
    assert not on_disk - set(CASES_BY_ID), f"fixtures of removed cases: {REGENERATE}"


@pytest.mark.parametrize(
    ("case_id", "key"),
    [("cfc-default-l1-tanh", "rnn_cell.ff2.bias"), ("ltc-autoncp", "rnn_cell.sigma")],
)
def test_parity_check_detects_a_small_weight_change(case_id: str, key: str) -> None:
    # Guards the comparison itself: a 1e-3 change of one weight must not pass.
    case = CASES_BY_ID[case_id]
    _, groups = load_fixture(case_id)
    state_dict = dict(groups["state_dict"])
    state_dict[key] = state_dict[key] + np.float32(1e-3)
    ours = mlx_results(case, state_dict, groups["input"], groups["r"])
    with pytest.raises(AssertionError):
        assert_parity(ours, groups["ref"])


@by_id
def test_matches_live_reference(case: Case) -> None:
    reference = _reference()
    case = dataclasses.replace(case, seed=case.seed + 1)  # not just the fixture again
    state_dict, inputs, r, ref = reference.reference_case(case)
    assert_parity(mlx_results(case, state_dict, inputs, r), ref)


@by_id
def test_exported_weights_reproduce_in_reference(case: Case) -> None:
    # The other direction: our own initial weights, exported with to_ncps_state_dict and
    # loaded strictly (every key, nothing extra) into a fresh ncps model.
    reference = _reference()
    mx.random.seed(case.seed)
    model = build_model(case)
    inputs = make_inputs(case, model.state_size)
    r, ref = reference.reference_with_weights(case, to_ncps_state_dict(model), inputs)
    assert_parity(run_mlx(case, model, inputs, r), ref)
