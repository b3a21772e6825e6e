"""Closed-loop runs: a policy in its environment, seeded, with perturbed observations."""

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_int
from .perturb import CLEAN, Perturbation
from .policy import Policy
from .tasks import Task, get_task


@dataclass(frozen=True)
class Episode:
    """One closed-loop run, step by step.

    Attributes:
        seed: The seed of the environment's reset (and, in its own stream, of the
            perturbation).
        states: The true observation before each step (T, observation_size).
        seen: What reached the policy at each step: the observation with its noise, where
            it arrived (T, observation_size); the previous one's values elsewhere.
        observed: Whether an observation reached the policy at each step (T,).
        timespans: The timespan the policy was given at each observed step, 0 elsewhere
            (T,): the time since the previous observation (1 for every step when none is
            dropped), or 1 where the perturbation withholds it.
        actions: The action applied at each step (T,) or (T, action_size).
        rewards: The reward of each step (T,).
        terminated: Whether the episode ended by failure (not by its time limit).
    """

    seed: int
    states: np.ndarray
    seen: np.ndarray
    observed: np.ndarray
    timespans: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool

    @property
    def total_reward(self) -> float:
        """The episode's return: the sum of its rewards."""
        return float(self.rewards.sum())

    def __len__(self) -> int:
        return len(self.rewards)


def rollout(
    policy: Policy,
    task: "str | Task",
    seed: int,
    perturbation: Perturbation = CLEAN,
    *,
    env: Any = None,
    max_steps: int | None = None,
) -> Episode:
    """Run ``policy`` for one episode of ``task``, from the environment's reset with
    ``seed``.

    The policy is reset first, then called with each observation that reaches it (see
    [`Perturbation`][ncps_mlx.policies.Perturbation]); the environment gets its last action
    at every step. The run is a function of the seed: the environment's reset, and the
    perturbation's noise and drops from ``numpy.random.default_rng([seed, 1])``.

    Args:
        policy: What acts: a [`ModelPolicy`][ncps_mlx.policies.ModelPolicy], an exported
            package's, an expert's, or any object with ``reset()`` and
            ``__call__(observation, timespan)``.
        task: The task, or its name.
        seed: The episode's seed (>= 0).
        perturbation: What the observations suffer. Default: none.
        env: An environment of the task to reuse (one is made otherwise).
        max_steps: End the episode after this many steps at most (default: the task's).

    Returns:
        The [`Episode`][ncps_mlx.policies.Episode].
    """
    task = get_task(task)
    check_int("rollout", "seed", seed, low=0)
    limit = task.max_steps if max_steps is None else check_int("rollout", "max_steps", max_steps)
    if env is None:  # an environment of our own, closed after the episode
        env = task.make_env()
        try:
            return rollout(policy, task, seed, perturbation, env=env, max_steps=limit)
        finally:
            env.close()
    rng = np.random.default_rng([seed, 1])
    scale = np.asarray(task.observation_scale, np.float32)
    observation, _ = env.reset(seed=seed)
    policy.reset()
    record: dict[str, list] = {
        k: [] for k in ("states", "seen", "observed", "timespans", "actions", "rewards")
    }
    gap, seen, action, terminated = 1, None, None, False
    for step in range(limit):
        arrives = step == 0 or perturbation.observed(rng, gap)
        if arrives:
            seen = perturbation.corrupt(rng, np.asarray(observation, np.float32), scale)
            action = policy(seen, perturbation.timespan(gap))
        record["states"].append(np.asarray(observation, np.float32))
        record["seen"].append(seen)
        record["observed"].append(arrives)
        record["timespans"].append(perturbation.timespan(gap) if arrives else 0.0)
        record["actions"].append(action)
        observation, reward, terminated, truncated, _ = env.step(action)
        record["rewards"].append(float(reward))
        gap = 1 if arrives else gap + 1
        if terminated or truncated:
            break
    return Episode(
        seed=seed,
        states=np.stack(record["states"]),
        seen=np.stack(record["seen"]).astype(np.float32),
        observed=np.asarray(record["observed"]),
        timespans=np.asarray(record["timespans"], np.float32),
        actions=np.asarray(record["actions"]),
        rewards=np.asarray(record["rewards"], np.float64),
        terminated=bool(terminated),
    )


def evaluate(
    policy: Policy,
    task: "str | Task",
    seeds: "range | list[int]",
    perturbation: Perturbation = CLEAN,
) -> np.ndarray:
    """The return of ``policy`` on one episode per seed (one environment reused).

    Returns:
        The returns, in the order of ``seeds`` (float64).
    """
    task = get_task(task)
    env = task.make_env()
    try:
        return np.array(
            [rollout(policy, task, s, perturbation, env=env).total_reward for s in seeds]
        )
    finally:
        env.close()
