"""Latency in the loop: the reference policy computes what the ncps_mlx policy does (so the
timings compare one function), and loop_latency reports both, or says why the reference is
missing. No time is asserted beyond being measured."""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from ncps_mlx import LTC, CfC  # noqa: E402
from ncps_mlx.policies import IRREGULAR, ModelPolicy, policy_model, rollout  # noqa: E402
from ncps_mlx.policies.latency import (  # noqa: E402
    REFERENCE_THREADS,
    ReferencePolicy,
    loop_latency,
    reference_model,
)
from ncps_mlx.wirings import AutoNCP  # noqa: E402

STEPS = 50  # at least this many calls per side: one pendulum episode (200)


def _reference():
    pytest.importorskip("torch", reason="the reference needs torch (the interop extra)")
    pytest.importorskip("ncps.torch", reason="the reference needs ncps 1.0.1 (interop extra)")


def _outputs(policy, episode) -> np.ndarray:
    """The raw outputs of ``policy``, reset, on what reached the policy of ``episode``."""
    policy.reset()
    observed = episode.observed
    steps = zip(episode.seen[observed], episode.timespans[observed], strict=True)
    return np.stack([policy.output(x, float(dt)) for x, dt in steps])


@pytest.mark.parametrize("task", ["pendulum", "cartpole"])
@pytest.mark.parametrize("kind", ["cfc-ncp", "ltc-ncp"])
def test_the_reference_policy_computes_what_the_model_policy_does(kind, task):
    _reference()
    model = policy_model(kind, task, seed=1)
    ours = ModelPolicy(model, task)
    # Irregular sampling: timespans of 1 to 4 steps reach both.
    episode = rollout(ours, task, seed=3, perturbation=IRREGULAR, max_steps=120)
    assert set(episode.timespans[episode.observed]) > {1.0}

    expected = _outputs(ours, episode)
    produced = _outputs(ReferencePolicy(task, reference_model(model)), episode)

    np.testing.assert_allclose(produced, expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.05  # the outputs move: not a comparison of zeros


def test_the_reference_policy_acts_like_the_model_policy_in_the_loop():
    _reference()
    model = policy_model("cfc-ncp", "pendulum", seed=2)
    ours = rollout(ModelPolicy(model, "pendulum"), "pendulum", seed=5, max_steps=60)
    theirs = rollout(
        ReferencePolicy("pendulum", reference_model(model)), "pendulum", 5, max_steps=60
    )
    np.testing.assert_allclose(theirs.actions, ours.actions, rtol=0, atol=1e-4)


def test_loop_latency_times_both_sides():
    _reference()
    import torch

    threads = torch.get_num_threads()
    result = loop_latency(policy_model("ltc-ncp", "pendulum"), "pendulum", steps=STEPS)

    assert torch.get_num_threads() == threads  # restored after the timing
    assert result.reference_missing is None and result.reference is not None
    assert result.reference.name.startswith("ncps 1.0.1")
    assert result.reference.threads == f"{REFERENCE_THREADS} torch thread"
    for timing in (result.ncps_mlx, result.reference):
        assert timing.calls >= STEPS and timing.episodes >= 1
        assert 0 < timing.median_us <= timing.p90_us
        assert timing.rollouts_per_second > 0 and timing.steps_per_second > 0
    assert result.env_step_us > 0 and result.env_steps_per_second > 0
    assert result.speedup == result.reference.median_us / result.ncps_mlx.median_us
    assert result.model == "LTC over AutoNCP(19)" and result.task == "pendulum"

    table = result.markdown()
    assert "| ncps_mlx |" in table and "| ncps 1.0.1" in table and "Speed-up" in table
    data = json.loads(json.dumps(result.to_dict()))
    assert data["reference"]["calls"] == result.reference.calls


def test_without_torch_the_reference_is_none_and_the_report_says_why(monkeypatch):
    for name in ("torch", "ncps", "ncps.torch", "ncps.wirings"):
        monkeypatch.setitem(sys.modules, name, None)  # `import torch` now fails

    result = loop_latency(policy_model("cfc-ncp", "cartpole"), "cartpole", steps=STEPS)

    assert result.reference is None and result.speedup is None
    assert "pip install 'ncps-mlx[interop]'" in result.reference_missing
    assert result.ncps_mlx.calls >= STEPS and result.ncps_mlx.median_us > 0
    assert "Reference not measured: the reference needs torch" in result.markdown()
    assert result.to_dict()["reference"] is None


def test_a_baseline_has_no_reference_and_is_still_timed():
    _reference()
    result = loop_latency(policy_model("gru", "pendulum"), "pendulum", steps=STEPS)
    assert result.reference is None
    assert "CfC and LTC layers only" in result.reference_missing
    assert result.ncps_mlx.calls >= STEPS
    assert result.model.startswith("GRUBaselineCell of ")


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: CfC(3, AutoNCP(8, 1), strict_wiring=True), "strict_wiring"),
        (lambda: LTC(3, AutoNCP(8, 1), solver="rk4"), "solver='rk4'"),
    ],
)
def test_models_without_a_reference_equivalent_are_refused(build, match):
    _reference()
    with pytest.raises(ValueError, match=match):
        reference_model(build())


@pytest.mark.parametrize("arguments,match", [({"steps": 0}, "'steps'"), ({"seed": -1}, "'seed'")])
def test_bad_arguments_are_refused(arguments, match):
    with pytest.raises(ValueError, match=match):
        loop_latency(policy_model("cfc-ncp", "pendulum"), "pendulum", **arguments)


def test_a_model_of_another_task_is_refused():
    with pytest.raises(ValueError, match=r"\[loop_latency\].*cartpole needs 4 inputs"):
        loop_latency(policy_model("cfc-ncp", "pendulum"), "cartpole")
