"""Deployment in the loop: a policy exported to Core ML follows the MLX policy step by
step on the same observations, and in its own closed loop.

The packages run on the numpy evaluator (Core ML only runs on macOS). Untrained policies
and short episodes keep it fast: what is checked is the comparison, not a good policy.
"""

import json

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("coremltools")

from ncps_mlx.policies import CONDITIONS, get_task, policy_model  # noqa: E402
from ncps_mlx.policies.deploy import (  # noqa: E402
    TOLERANCES,
    ConditionCheck,
    DeploymentCheck,
    _actions_differ,
    check_deployment,
)

SEEDS = range(2)
STEPS = 40
# pendulum: a continuous action from a CfC; cartpole: two logits from an LTC.
POLICIES = {"pendulum": "cfc-ncp", "cartpole": "ltc-ncp"}
FP32_ATOL = 1e-5


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """check_deployment of each task's policy in each precision, once for the module."""
    out = tmp_path_factory.mktemp("deploy")
    return {
        (task, precision): check_deployment(
            policy_model(kind, task, seed=0),
            task,
            out,
            seeds=SEEDS,
            precision=precision,
            max_steps=STEPS,
        )
        for task, kind in POLICIES.items()
        for precision in ("float32", "float16")
    }


@pytest.mark.parametrize("task", list(POLICIES))
def test_a_float32_package_acts_as_the_mlx_policy(checks, task):
    check = checks[task, "float32"]

    assert (check.precision, check.kind, check.runtime) == ("float32", "step", "evaluator")
    assert check.path.is_dir() and check.path.suffix == ".mlpackage"
    assert list(check.conditions) == list(CONDITIONS)
    for condition in check.conditions.values():
        assert condition.max_output_difference < FP32_ATOL
        assert condition.action_mismatch == 0
        np.testing.assert_allclose(condition.package_returns, condition.mlx_returns, rtol=1e-4)
    assert check.returns_agree()


@pytest.mark.parametrize("task", list(POLICIES))
def test_a_float16_package_stays_within_the_exports_tolerance(checks, task):
    check = checks[task, "float16"]

    assert check.tolerance == TOLERANCES["float16"] == 3e-2
    for condition in check.conditions.values():
        # The outputs of these policies are below 1 in magnitude: the documented error,
        # relative to the largest output, bounds the absolute one.
        assert 0 < condition.max_output_difference < check.tolerance
        if not get_task(task).discrete:  # clipping cannot widen a gap within tolerance
            assert condition.action_mismatch == 0
        assert condition.steps >= len(SEEDS)
    assert check.returns_agree()


def test_irregular_sampling_compares_only_the_observations_that_arrived(checks):
    check = checks["pendulum", "float32"]
    clean, irregular = check.conditions["clean"], check.conditions["irregular"]

    assert clean.steps == len(SEEDS) * STEPS
    assert len(SEEDS) <= irregular.steps < clean.steps


def test_the_markdown_table_has_a_row_per_condition(checks):
    check = checks["cartpole", "float16"]
    lines = check.markdown().splitlines()

    assert lines[0] == (
        "| condition | MLX return | package return | max abs Δoutput | actions differing |"
    )
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {c}" for c in CONDITIONS]
    assert all("±" in line and line.endswith("% |") for line in lines[2:])


def test_to_dict_holds_every_return_as_json(checks):
    check = checks["pendulum", "float16"]
    data = json.loads(json.dumps(check.to_dict()))

    assert data["seeds"] == list(SEEDS) and data["runtime"] == "evaluator"
    assert data["path"] == str(check.path)
    for name, condition in data["conditions"].items():
        assert condition["mlx_returns"] == check.conditions[name].mlx_returns
        assert len(condition["package_returns"]) == len(SEEDS)


def test_out_ending_in_mlpackage_is_the_packages_path(tmp_path):
    path = tmp_path / "policy.mlpackage"
    check = check_deployment(
        policy_model("cfc-ncp", "pendulum"),
        "pendulum",
        path,
        seeds=[0],
        conditions={"clean": CONDITIONS["clean"]},
        precision="float32",
        max_steps=3,
    )
    assert check.path == path and path.is_dir()


@pytest.mark.parametrize("kind", ["gru", "lstm", "mlp"])
def test_a_baseline_is_refused_before_anything_is_written(tmp_path, kind):
    with pytest.raises(ValueError, match=r"'cfc-ncp' and 'ltc-ncp'") as error:
        check_deployment(policy_model(kind, "pendulum"), "pendulum", tmp_path)
    assert "cannot be exported to Core ML" in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "arguments,match",
    [
        ({"precision": "float64"}, "unknown precision 'float64'"),
        ({"kind": "sequence"}, "unknown kind 'sequence'"),
        ({"seeds": []}, "'seeds'"),
        ({"seeds": [0, -1]}, "'seed' must be an int >= 0"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, arguments, match):
    with pytest.raises(ValueError, match=match):
        check_deployment(policy_model("cfc-ncp", "pendulum"), "pendulum", tmp_path, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_model_of_another_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cartpole needs 4 inputs"):
        check_deployment(policy_model("cfc-ncp", "pendulum"), "cartpole", tmp_path)


def _condition(mlx, package):
    return ConditionCheck(list(mlx), list(package), 0.0, 0.0, 1)


def test_returns_agree_within_two_standard_errors_of_their_difference():
    mlx = [-100.0, -120.0, -140.0, -160.0]  # sample std 25.8 on each side, 4 seeds:
    # the standard error of the difference is sqrt(2 * 25.8**2 / 4) = 18.3
    assert _condition(mlx, mlx).returns_agree()
    assert _condition(mlx, [r + 30 for r in mlx]).returns_agree()  # 30 < 2 * 18.3
    assert not _condition(mlx, [r + 50 for r in mlx]).returns_agree()  # 50 > 2 * 18.3
    assert _condition(mlx, [r + 50 for r in mlx]).returns_agree(z=3.0)  # 50 < 3 * 18.3
    assert _condition([500.0] * 3, [500.0] * 3).returns_agree()  # no spread, equal


def test_returns_agree_needs_two_seeds_to_know_the_noise():
    assert _condition([-100.0], [-100.0]).returns_agree()
    with pytest.raises(ValueError, match="at least 2 seeds"):
        _condition([-100.0], [-90.0]).returns_agree()


def test_returns_agree_judges_every_condition_or_the_one_named():
    same, shifted = _condition([1.0, 2.0], [1.0, 2.0]), _condition([1.0, 2.0], [50.0, 51.0])
    check = DeploymentCheck(
        "p.mlpackage", "pendulum", "float16", "step", "evaluator", 3e-2, [0, 1],
        {"clean": same, "noise": shifted},
    )  # fmt: skip
    assert check.returns_agree("clean") and not check.returns_agree("noise")
    assert not check.returns_agree()
    with pytest.raises(ValueError, match="unknown condition 'windy'"):
        check.returns_agree("windy")


def test_actions_differ_by_argmax_or_by_the_tolerance_of_the_bound():
    cartpole, pendulum = get_task("cartpole"), get_task("pendulum")
    logits = np.array([[0.1, 0.2], [0.5, -0.5]], np.float32)
    flipped = np.array([[0.3, 0.2], [0.5, -0.4]], np.float32)
    assert _actions_differ(cartpole, logits, flipped, 3e-2).tolist() == [True, False]

    action = np.array([[0.50], [0.50], [1.5]], np.float32)  # times the bound 2
    # 0.02 and 0.1 apart after scaling (the tolerance: 0.06); the last two clip to 2
    other = np.array([[0.51], [0.55], [1.9]], np.float32)
    assert _actions_differ(pendulum, action, other, 3e-2).tolist() == [False, True, False]
