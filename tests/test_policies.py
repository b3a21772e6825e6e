"""The closed loop of ncps_mlx.policies: the tasks' encodings, the perturbations, the
rollout (seeded, irregular, held actions) and the policies against the model run by
hand. The experts, the models and imitation have their own files."""

import importlib.util
import re
import sys

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import Controller
from ncps_mlx.errors import see
from ncps_mlx.policies import (
    CLEAN,
    CONDITIONS,
    IRREGULAR,
    NOISY,
    TASKS,
    WITHHELD,
    ExpertPolicy,
    ModelPolicy,
    Perturbation,
    Task,
    evaluate,
    expert_for,
    get_task,
    policy_model,
    rollout,
)
from ncps_mlx.policies.policy import takes_timespan_feature

needs_gymnasium = pytest.mark.skipif(
    importlib.util.find_spec("gymnasium") is None,
    reason="closed loops need the control extra: pip install 'ncps-mlx[control]'",
)
# Noise and drops together: every part of the perturbation at once.
BOTH = Perturbation(noise=0.1, drop=0.5, max_gap=4)


class Recorder:
    """A policy that records its calls and returns a new action at each: the call's
    number (as a torque of a hundredth per call for the pendulum, else alternating)."""

    def __init__(self, discrete: bool = False):
        self.discrete = discrete
        self.calls: list[tuple[np.ndarray, float]] = []
        self.actions: list = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def __call__(self, observation: np.ndarray, timespan: float):
        self.calls.append((observation.copy(), timespan))
        n = len(self.calls)
        action = n % 2 if self.discrete else np.array([0.01 * n], np.float32)
        self.actions.append(action)
        return action


# -- tasks ------------------------------------------------------------------------------


def test_the_tasks_sizes_follow_their_observations_and_actions():
    pendulum, cartpole = TASKS["pendulum"], TASKS["cartpole"]
    assert (pendulum.observation_size, pendulum.output_size, pendulum.discrete) == (3, 1, False)
    assert (cartpole.observation_size, cartpole.output_size, cartpole.discrete) == (4, 2, True)


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_encode_divides_each_feature_by_its_scale_in_float32(name):
    task = TASKS[name]
    observations = np.random.default_rng(0).normal(size=(5, task.observation_size))
    encoded = task.encode(observations)
    assert encoded.dtype == np.float32 and encoded.shape == observations.shape
    np.testing.assert_allclose(encoded * task.observation_scale, observations, rtol=1e-6)


def test_a_continuous_target_decodes_to_the_action_and_decoding_clips_at_the_bound():
    task = TASKS["pendulum"]
    for action in (-2.0, -0.7, 0.0, 1.3, 2.0):
        target = task.target(np.array([action], np.float32))
        assert isinstance(target, float) and abs(target) <= 1
        decoded = task.decode(np.array([target]))
        assert decoded.shape == (1,)
        np.testing.assert_allclose(decoded, [action], rtol=1e-6)
    assert task.decode(np.array([1.7])).tolist() == [2.0]  # 3.4 clipped to the bound
    assert task.decode(np.array([-5.0])).tolist() == [-2.0]


def test_a_discrete_output_decodes_to_its_largest_logit_and_a_target_is_the_index():
    task = TASKS["cartpole"]
    assert task.decode(np.array([0.1, 0.3])) == 1
    assert task.decode(np.array([2.0, -1.0])) == 0
    for action in (0, 1):
        target = task.target(np.int64(action))
        assert type(target) is int and target == action
        assert task.decode(np.eye(2)[target]) == action
    with pytest.raises(ValueError):  # three outputs for two actions
        task.decode(np.zeros(3))


def test_get_task_takes_a_name_or_a_task_and_lists_the_tasks_for_an_unknown_name():
    assert get_task("cartpole") is TASKS["cartpole"]
    assert get_task(TASKS["pendulum"]) is TASKS["pendulum"]
    with pytest.raises(ValueError, match="unknown task 'Pendulum-v1'") as error:
        get_task("Pendulum-v1")
    assert "'pendulum'" in str(error.value) and "'cartpole'" in str(error.value)


def test_without_gymnasium_the_tasks_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium fails
    with pytest.raises(ImportError, match=r"pip install 'ncps-mlx\[control\]'") as error:
        TASKS["pendulum"].make_env()
    *_, pointer = str(error.value).splitlines()
    assert re.fullmatch(re.escape(see("")[:-1]) + r"[a-z-]+\.", pointer)  # into the guide
    with pytest.raises(ImportError, match="gymnasium"):
        rollout(ExpertPolicy(lambda observation: 0), "cartpole", 0)


# -- perturbations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, name",
    [
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"drop": 1.0}, "drop"),
        ({"drop": -0.1}, "drop"),
        ({"max_gap": 0}, "max_gap"),
        ({"max_gap": 2.0}, "max_gap"),
        ({"timespans": 0}, "timespans"),
    ],
)
def test_a_perturbation_refuses_what_it_cannot_do(arguments, name):
    with pytest.raises(ValueError, match=rf"\[Perturbation\] '{name}' must be"):
        Perturbation(**arguments)


def test_the_perturbations_are_named_as_the_tables_print_them():
    assert [p.name for p in (CLEAN, NOISY, IRREGULAR)] == ["clean", "noise 0.1", "irregular 0.5"]
    assert Perturbation(noise=0.2, drop=0.25).name == "noise 0.2, irregular 0.25"
    assert WITHHELD.name == "irregular 0.5, timespans withheld"
    assert CONDITIONS == {
        "clean": CLEAN,
        "noise": NOISY,
        "irregular": IRREGULAR,
        "no timespans": WITHHELD,
    }


@pytest.mark.parametrize("max_gap", [1, 2, 4])
def test_observations_never_stay_away_max_gap_steps(max_gap):
    perturbation, rng = Perturbation(drop=0.9, max_gap=max_gap), np.random.default_rng(0)
    gap, longest = 1, 1
    for _ in range(5000):
        if perturbation.observed(rng, gap):
            longest, gap = max(longest, gap), 1
        else:
            gap += 1
    assert longest == max_gap  # reached (drops are frequent) and never passed


def test_observations_drop_at_the_rate_asked():
    rng = np.random.default_rng(0)
    for drop in (0.1, 0.5):
        dropped = np.mean([not Perturbation(drop=drop).observed(rng, 1) for _ in range(20_000)])
        assert abs(dropped - drop) < 0.02  # 6 standard errors at most
    state = rng.bit_generator.state
    assert all(CLEAN.observed(rng, 1) for _ in range(100))
    assert rng.bit_generator.state == state  # no drops, no draws


def test_the_noise_has_the_asked_fraction_of_each_features_scale():
    scale = np.array([1.0, 2.0, 8.0], np.float32)
    zeros = np.zeros((20_000, 3), np.float32)
    noisy = Perturbation(noise=0.1).corrupt(np.random.default_rng(0), zeros, scale)
    assert noisy.dtype == np.float32  # what the policy gets is what the episode records
    np.testing.assert_allclose(noisy.std(axis=0), 0.1 * scale, rtol=0.03)
    assert (np.abs(noisy.mean(axis=0)) < 0.03 * scale).all()
    assert CLEAN.corrupt(np.random.default_rng(0), zeros, scale) is zeros


# -- rollout ----------------------------------------------------------------------------


def assert_same_episode(a, b):
    for name in ("states", "seen", "observed", "timespans", "actions", "rewards"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.terminated == b.terminated


@needs_gymnasium
def test_a_rollout_is_a_function_of_its_seed():
    expert = ExpertPolicy(expert_for("pendulum"))
    first, again = (rollout(expert, "pendulum", 3, BOTH, max_steps=40) for _ in range(2))
    assert_same_episode(first, again)
    other = rollout(expert, "pendulum", 4, BOTH, max_steps=40)
    assert not np.array_equal(first.states[0], other.states[0])  # another reset
    assert not np.array_equal(first.observed, other.observed)  # other drops


@needs_gymnasium
def test_an_irregular_rollout_gives_the_policy_the_noisy_observations_and_their_gaps():
    policy = Recorder()
    episode = rollout(policy, "pendulum", 0, BOTH, max_steps=60)
    at = np.flatnonzero(episode.observed)
    assert len(episode) == 60 and policy.resets == 1
    assert at[0] == 0 and 0 < len(at) < 60  # the first arrives, some are dropped
    # Called exactly at the observed steps, with what the episode records as seen.
    assert len(policy.calls) == len(at)
    for (observation, timespan), step in zip(policy.calls, at, strict=True):
        assert observation.dtype == np.float32
        np.testing.assert_array_equal(observation, episode.seen[step])
        assert timespan == episode.timespans[step]
    # The noise: seen is not the state, but close to it.
    offset = episode.seen[at] - episode.states[at]
    assert (offset != 0).all() and (np.abs(offset) < 0.6 * np.array([1, 1, 8])).all()
    # Each timespan is the gap to the previous observation (the first one's is 1).
    np.testing.assert_array_equal(episode.timespans[at], np.diff(at, prepend=-1))
    assert (episode.timespans[~episode.observed] == 0).all()
    assert episode.timespans[at].max() <= BOTH.max_gap
    # They add up to the time until the last observation; unobserved steps may follow.
    assert episode.timespans.sum() == at[-1] + 1
    assert len(episode) - (at[-1] + 1) < BOTH.max_gap
    # Between observations the last action is held and the last observation kept.
    calls_so_far = np.cumsum(episode.observed) - 1
    np.testing.assert_array_equal(episode.actions, np.stack(policy.actions)[calls_so_far])
    np.testing.assert_array_equal(episode.seen, episode.seen[at][calls_so_far])


@needs_gymnasium
def test_withheld_timespans_drop_the_same_observations_but_tell_the_policy_1():
    told, withheld = Recorder(), Recorder()
    episode = rollout(told, "pendulum", 0, IRREGULAR, max_steps=60)
    blind = rollout(withheld, "pendulum", 0, WITHHELD, max_steps=60)
    np.testing.assert_array_equal(blind.observed, episode.observed)
    assert (episode.timespans[episode.observed] > 1).any()
    assert [timespan for _, timespan in withheld.calls] == [1.0] * int(blind.observed.sum())
    np.testing.assert_array_equal(blind.timespans, blind.observed.astype(np.float32))


@needs_gymnasium
def test_a_clean_rollout_observes_every_step_exactly():
    policy = Recorder(discrete=True)
    episode = rollout(policy, "cartpole", 1, max_steps=8)
    assert episode.observed.all() and (episode.timespans == 1).all()
    np.testing.assert_array_equal(episode.seen, episode.states)
    assert episode.actions.tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert episode.states.shape == (8, 4) and episode.actions.shape == (8,)


@needs_gymnasium
def test_an_episode_ends_when_the_task_fails_or_at_max_steps():
    always_left = ExpertPolicy(lambda observation: 0)
    fallen = rollout(always_left, "cartpole", 0)
    assert fallen.terminated and len(fallen) < 100
    assert fallen.total_reward == len(fallen)  # a reward of 1 per step
    balanced = rollout(ExpertPolicy(expert_for("cartpole")), "cartpole", 0, max_steps=50)
    assert not balanced.terminated and len(balanced) == 50
    pendulum = rollout(ExpertPolicy(expert_for("pendulum")), "pendulum", 0, max_steps=7)
    assert len(pendulum) == 7 and pendulum.actions.shape == (7, 1)


@needs_gymnasium
def test_evaluate_gives_one_return_per_seed_in_their_order():
    expert = ExpertPolicy(expert_for("pendulum"))
    returns = evaluate(expert, "pendulum", [3, 1, 2], NOISY)
    expected = [rollout(expert, "pendulum", seed, NOISY).total_reward for seed in (3, 1, 2)]
    assert returns.dtype == np.float64
    np.testing.assert_array_equal(returns, expected)
    assert len(set(expected)) == 3


@needs_gymnasium
def test_a_rollout_closes_the_environment_it_made(monkeypatch):
    made = []

    def make_env(self, render_mode=None):
        env = original(self, render_mode)
        env.close = lambda: made.append("closed")
        made.append("made")
        return env

    original = Task.make_env
    monkeypatch.setattr(Task, "make_env", make_env)
    rollout(Recorder(discrete=True), "cartpole", 0, max_steps=3)
    assert made == ["made", "closed"]

    def failing(observation, timespan):
        raise RuntimeError("the policy failed")

    failing.reset = lambda: None
    with pytest.raises(RuntimeError, match="the policy failed"):
        rollout(failing, "cartpole", 0)
    assert made == ["made", "closed"] * 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"seed": -1}, r"\[rollout\] 'seed' must be an int >= 0"),
        ({"seed": 1.5}, r"\[rollout\] 'seed'"),
        ({"seed": 0, "max_steps": 0}, r"\[rollout\] 'max_steps' must be an int >= 1"),
        ({"seed": 0, "max_steps": True}, r"\[rollout\] 'max_steps'"),
    ],
)
def test_a_rollout_refuses_a_bad_seed_or_length(arguments, message):
    with pytest.raises(ValueError, match=message):
        rollout(Recorder(), "pendulum", **arguments)


# -- policies ---------------------------------------------------------------------------


def irregular_inputs(task, steps: int = 12, seed: int = 0):
    """Observations of the task's scale and the gaps they arrive after."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(steps, task.observation_size)) * task.observation_scale
    return observations.astype(np.float32), rng.integers(1, 5, steps).astype(np.float32)


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_a_model_policy_is_the_model_stepped_by_hand_on_encoded_observations(name):
    task = TASKS[name]
    model = policy_model("cfc-ncp", task, seed=2)
    observations, gaps = irregular_inputs(task)
    policy = ModelPolicy(model, name)
    policy.reset()
    outputs = np.stack(
        [policy.output(o, float(g)) for o, g in zip(observations, gaps, strict=True)]
    )
    controller = Controller(model)
    by_hand = [
        controller(task.encode(o), timespan=float(g))
        for o, g in zip(observations, gaps, strict=True)
    ]
    np.testing.assert_array_equal(outputs, np.stack(by_hand))
    # The model's own call on the sequence, timespans and all.
    y, _ = model(mx.array(task.encode(observations))[None], timespans=mx.array(gaps)[None])
    np.testing.assert_allclose(outputs, np.array(y[0]), rtol=1e-4, atol=1e-5)
    # After a reset, the same calls give the same actions: decoded outputs.
    policy.reset()
    actions = [policy(o, float(g)) for o, g in zip(observations, gaps, strict=True)]
    assert actions == [task.decode(output) for output in outputs]
    assert len({str(a) for a in actions}) > 1  # the inputs move the outputs


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_a_baseline_policy_gets_the_timespan_as_its_last_input_feature(name):
    task = TASKS[name]
    model = policy_model("gru", task, seed=2)
    assert takes_timespan_feature(model) and model.input_size == task.observation_size + 1
    observations, gaps = irregular_inputs(task)
    policy = ModelPolicy(model, task)
    outputs = np.stack(
        [policy.output(o, float(g)) for o, g in zip(observations, gaps, strict=True)]
    )
    x = np.concatenate([task.encode(observations), gaps[:, None]], axis=1)
    y, _ = model(mx.array(x)[None])
    np.testing.assert_allclose(outputs, np.array(y[0]), rtol=1e-5, atol=1e-6)
    policy.reset()
    first = policy.output(observations[0], 1.0)
    policy.reset()
    assert not np.allclose(first, policy.output(observations[0], 3.0))


def test_a_model_policy_names_the_sizes_that_do_not_fit():
    with pytest.raises(
        ValueError,
        match=r"\[ModelPolicy\] the model takes 3 inputs and gives 1 outputs, but cartpole "
        r"needs 4 inputs \(the observation\) and 2 outputs \(a logit per action\)",
    ):
        ModelPolicy(policy_model("cfc-ncp", "pendulum"), "cartpole")
    with pytest.raises(
        ValueError,
        match=r"takes 5 inputs and gives 2 outputs, but pendulum needs 4 inputs \(the "
        r"observation and the timespan\) and 1 outputs \(the action\)",
    ):
        ModelPolicy(policy_model("gru", "cartpole"), "pendulum")
    with pytest.raises(ValueError, match="unknown task"):
        ModelPolicy(policy_model("gru", "cartpole"), "acrobot")


def test_an_expert_policy_asks_the_expert_and_ignores_the_timespan():
    seen = []
    policy = ExpertPolicy(lambda observation: seen.append(observation) or len(seen))
    policy.reset()
    observation = np.ones(3, np.float32)
    assert policy(observation, 3.0) == 1 and policy(observation) == 2
    assert all(o is observation for o in seen)
