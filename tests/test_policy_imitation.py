"""Imitation in ncps_mlx.policies: episodes as labelled, masked training sequences,
behaviour cloning, and DAgger's rounds."""

import copy
import dataclasses

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx.policies import (
    CLEAN,
    IRREGULAR,
    TASKS,
    ExpertPolicy,
    ModelPolicy,
    Perturbation,
    behaviour_cloning,
    dagger,
    demonstrations,
    expert_for,
    policy_model,
    rollout,
    to_sequences,
)

pytest.importorskip("gymnasium")  # the control extra

BOTH = Perturbation(noise=0.1, drop=0.5)
# The pendulum with episodes of 30 steps: sequences of 30, quick to train on.
SHORT = dataclasses.replace(TASKS["pendulum"], max_steps=30, train_steps=30)


def masked_loss(model, task, data) -> float:
    """The imitation loss of ``model`` on ``data``, computed here: the mean over real steps
    of the squared error, or of the cross-entropy."""
    y, _ = model(mx.array(data.x), timespans=mx.array(data.timespans))
    y = np.array(y, np.float64)
    if task.discrete:
        logits = y - y.max(axis=-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        per_step = -np.take_along_axis(log_p, data.y[..., None], axis=-1)[..., 0]
    else:
        per_step = ((y - data.y) ** 2).mean(axis=-1)
    return float(per_step[data.mask].mean())


# -- to_sequences -----------------------------------------------------------------------


@pytest.mark.parametrize("name, kind", [("pendulum", "cfc-ncp"), ("cartpole", "gru")])
def test_episodes_become_the_observed_steps_labelled_by_the_expert_on_the_true_state(name, kind):
    task, expert = TASKS[name], expert_for(name)
    # Shorter than the task's episodes, so that the padding shows.
    policy = ExpertPolicy(expert)
    episodes = [rollout(policy, task, s, p, max_steps=40) for p in (CLEAN, BOTH) for s in (0, 1)]
    model = policy_model(kind, task)
    data = to_sequences(model, task, episodes, expert)
    baseline = kind == "gru"
    assert data.x.shape == (4, task.train_steps, task.observation_size + baseline)
    assert data.mask.shape == data.timespans.shape == (4, task.train_steps)
    labels_shape = (4, task.train_steps) if task.discrete else (4, task.train_steps, 1)
    assert data.y.shape == labels_shape
    noisy_labels = 0
    for i, episode in enumerate(episodes):
        at = np.flatnonzero(episode.observed)
        k = len(at)
        assert data.mask[i].tolist() == [True] * k + [False] * (task.train_steps - k)
        features = data.x[i, :, : task.observation_size]
        np.testing.assert_array_equal(features[:k], task.encode(episode.seen[at]))
        np.testing.assert_array_equal(data.timespans[i, :k], episode.timespans[at])
        if baseline:  # the timespans as the last feature
            np.testing.assert_array_equal(data.x[i, :, -1], data.timespans[i])
        labels = [task.target(expert(state)) for state in episode.states[at]]
        np.testing.assert_array_equal(data.y[i, :k].reshape(k), labels)
        noisy_labels += sum(
            label != task.target(expert(seen))
            for label, seen in zip(labels, episode.seen[at], strict=True)
        )
        # Padding: no features, no labels, timespans of 1.
        assert not features[k:].any() and not data.y[i, k:].any()
        assert (data.timespans[i, k:] == 1).all()
    assert episodes[0].observed.all() and not episodes[2].observed.all()
    assert noisy_labels > 0  # the expert labels the true states, not what the policy saw


def test_to_sequences_needs_an_episode():
    with pytest.raises(ValueError, match=r"\[to_sequences\] no episodes"):
        to_sequences(policy_model("cfc-ncp", "pendulum"), "pendulum", [], expert_for("pendulum"))


# -- behaviour cloning and DAgger -------------------------------------------------------


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_behaviour_cloning_brings_the_model_closer_to_the_expert(name):
    task, expert = TASKS[name], expert_for(name)
    model = policy_model("cfc-ncp", task)
    data = to_sequences(model, task, demonstrations(expert, task, range(4)), expert)
    before = masked_loss(model, task, data)
    history = behaviour_cloning(model, task, data, epochs=40, batch_size=2, learning_rate=0.01)
    assert len(history.rows) == 40
    assert masked_loss(model, task, data) < 0.5 * before


def test_behaviour_cloning_refuses_a_model_of_another_task():
    model, expert = policy_model("cfc-ncp", "pendulum"), expert_for("pendulum")
    data = to_sequences(model, "pendulum", demonstrations(expert, SHORT, [0]), expert)
    with pytest.raises(ValueError, match=r"\[behaviour_cloning\] the model takes 3 inputs"):
        behaviour_cloning(model, "cartpole", data)


def test_dagger_adds_the_learners_episodes_labelled_and_records_their_returns():
    expert = expert_for(SHORT)
    demos = demonstrations(expert, SHORT, [0, 1])
    model = policy_model("cfc-ncp", SHORT, seed=1)
    start = copy.deepcopy(model)
    options = dict(epochs=3, batch_size=4, learning_rate=0.01, seed=7)
    result = dagger(
        model,
        SHORT,
        expert,
        demos,
        rounds=1,
        seeds_per_round=2,
        perturbations=(CLEAN, IRREGULAR),
        first_seed=50,
        round_epochs=2,
        **options,
    )
    assert result.sequences == 2 + 2 * 2  # the demos, and the learner's under each condition
    assert [len(h.rows) for h in result.histories] == [3, 2]
    assert all(np.isfinite(row["loss"]) for h in result.histories for row in h.rows)
    # Round 1's returns: the cloned learner on seeds 50 and 51, clean and irregular.
    behaviour_cloning(start, SHORT, to_sequences(start, SHORT, demos, expert), **options)
    learner = ModelPolicy(start, SHORT)
    returns = [
        rollout(learner, SHORT, s, p).total_reward for p in (CLEAN, IRREGULAR) for s in (50, 51)
    ]
    assert result.returns == [pytest.approx(np.mean(returns), rel=1e-5)]
    # And the last round trained the model further than the cloning.
    trained, cloned = dict(tree_flatten(model.parameters())), dict(tree_flatten(start.parameters()))
    assert any(not np.allclose(trained[k], cloned[k]) for k in trained)


def test_dagger_without_rounds_is_behaviour_cloning():
    expert = expert_for(SHORT)
    demos = demonstrations(expert, SHORT, [0, 1])
    result = dagger(policy_model("cfc-ncp", SHORT), SHORT, expert, demos, rounds=0, epochs=2)
    assert (result.sequences, result.returns, len(result.histories)) == (2, [], 1)
    with pytest.raises(ValueError, match=r"\[dagger\] 'rounds' must be an int >= 0"):
        dagger(policy_model("cfc-ncp", SHORT), SHORT, expert, demos, rounds=-1)
    with pytest.raises(ValueError, match=r"\[dagger\] 'seeds_per_round'"):
        dagger(policy_model("cfc-ncp", SHORT), SHORT, expert, demos, seeds_per_round=0)
    with pytest.raises(ValueError, match=r"\[dagger\] the model takes 4 inputs and gives 2"):
        dagger(policy_model("cfc-ncp", "cartpole"), SHORT, expert, demos)
