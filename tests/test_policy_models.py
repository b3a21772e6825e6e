"""The policy models of ncps_mlx.policies: each kind's sizes on each task, baselines as
large as the CfC-NCP, and weights that follow the seed."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx.costs import parameter_count
from ncps_mlx.policies import LABELS, MODEL_KINDS, TASKS, ModelPolicy, policy_model
from ncps_mlx.policies.policy import takes_timespan_feature


def weights(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_each_kind_of_model_fits_each_task(name):
    task = TASKS[name]
    for kind in MODEL_KINDS:
        model = policy_model(kind, task)
        baseline = kind not in ("cfc-ncp", "ltc-ncp")
        assert takes_timespan_feature(model) == baseline, kind
        assert model.input_size == task.observation_size + baseline, kind
        assert model.output_size == task.output_size, kind
        ModelPolicy(model, task)  # fits
    assert set(LABELS) == set(MODEL_KINDS)


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_the_baselines_are_as_large_as_the_cfc_ncp(name):
    ncp = parameter_count(policy_model("cfc-ncp", name))
    for kind in ("gru", "lstm", "mlp"):
        count = parameter_count(policy_model(kind, name))
        assert abs(count - ncp) <= 0.1 * ncp, (kind, count, ncp)


@pytest.mark.parametrize("kind", ["cfc-ncp", "ltc-ncp", "gru"])
def test_a_models_weights_are_a_function_of_its_seed(kind):
    first = weights(policy_model(kind, "cartpole", seed=5))
    mx.random.seed(123)  # the global key before does not matter
    again = weights(policy_model(kind, "cartpole", seed=5))
    other = weights(policy_model(kind, "cartpole", seed=6))
    assert first.keys() == again.keys() == other.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_an_unknown_kind_of_model_lists_the_kinds():
    with pytest.raises(ValueError, match=r"\[policy_model\] unknown kind 'rnn'; choose one of"):
        policy_model("rnn", "pendulum")
    with pytest.raises(ValueError, match=r"\[policy_model\] 'seed' must be an int >= 0"):
        policy_model("gru", "pendulum", seed=-1)
