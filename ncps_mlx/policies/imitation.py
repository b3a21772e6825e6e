"""Imitation learning: behaviour cloning on an expert's episodes, and DAgger.

Episodes become sequences for [`fit`][ncps_mlx.training.fit.fit]: the observations that reached
the policy, with their timespans, each labelled with the expert's action for the true
state at that moment. DAgger (Ross, Gordon and Bagnell, 2011) then rolls the learner out,
lets the expert label the states the learner visits, and trains again on everything
gathered, so that the policy learns to recover from its own mistakes.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.optimizers as optim
import numpy as np

from .._checks import check_int
from ..datasets import SequenceData
from ..rnn import RNN
from ..training import History, fit
from .loop import Episode, rollout
from .perturb import CLEAN, Perturbation
from .policy import ExpertPolicy, ModelPolicy, check_model_fits, model_inputs
from .tasks import Task, get_task


def demonstrations(
    expert: Any,
    task: "str | Task",
    seeds: Sequence[int],
    perturbations: Sequence[Perturbation] = (CLEAN,),
) -> list[Episode]:
    """The expert's own episodes: one per seed under each perturbation, of at most the
    task's ``train_steps``."""
    task, policy = get_task(task), ExpertPolicy(expert)
    env = task.make_env()
    try:
        return [
            rollout(policy, task, s, p, env=env, max_steps=task.train_steps)
            for p in perturbations
            for s in seeds
        ]
    finally:
        env.close()


def to_sequences(
    model: RNN, task: "str | Task", episodes: Sequence[Episode], expert: Any
) -> SequenceData:
    """The episodes as training sequences for ``model``: the observed steps of each, padded
    with a mask to the task's ``train_steps`` (to the longest if one is longer), labelled
    with ``expert``'s action for the true state.

    Raises:
        ValueError: No episode is given.
    """
    task = get_task(task)
    if not episodes:
        raise ValueError("[to_sequences] no episodes were given")
    steps = max([task.train_steps] + [int(e.observed.sum()) for e in episodes])
    n, features = len(episodes), task.observation_size
    seen = np.zeros((n, steps, features), np.float32)
    timespans = np.ones((n, steps), np.float32)
    mask = np.zeros((n, steps), bool)
    labels = np.zeros(
        (n, steps) if task.discrete else (n, steps, 1), np.int32 if task.discrete else np.float32
    )
    for i, episode in enumerate(episodes):
        at = np.flatnonzero(episode.observed)
        seen[i, : len(at)] = task.encode(episode.seen[at])
        timespans[i, : len(at)] = episode.timespans[at]
        mask[i, : len(at)] = True
        targets = [task.target(expert(state)) for state in episode.states[at]]
        labels[i, : len(at)] = np.asarray(targets).reshape(labels[i, : len(at)].shape)
    return SequenceData(
        model_inputs(model, seen, timespans), labels, timespans=timespans, mask=mask
    )


def loss_for(task: "str | Task") -> str:
    """The loss of imitation: cross-entropy on the expert's choices, or the mean squared
    error of the scaled action."""
    return "cross_entropy" if get_task(task).discrete else "mse"


def behaviour_cloning(
    model: RNN,
    task: "str | Task",
    data: SequenceData,
    *,
    epochs: int = 30,
    batch_size: int = 8,
    learning_rate: float = 0.005,
    seed: int = 0,
    progress: bool = False,
) -> History:
    """Train ``model`` in place to imitate the labelled sequences of ``data`` (from
    [`to_sequences`][ncps_mlx.policies.to_sequences]) with [`fit`][ncps_mlx.training.fit.fit]:
    Adam, gradients clipped to norm 1.

    Returns:
        The training [`History`][ncps_mlx.training.History].
    """
    task = get_task(task)
    check_model_fits(model, task, "behaviour_cloning")
    return fit(
        model,
        data,
        loss=loss_for(task),
        optimizer=optim.Adam(learning_rate=learning_rate),
        epochs=epochs,
        batch_size=batch_size,
        clip_norm=1.0,
        seed=seed,
        progress=progress,
    )


@dataclass
class DaggerResult:
    """What [`dagger`][ncps_mlx.policies.dagger] did, round by round.

    Attributes:
        histories: The training history of each round (round 0: behaviour cloning).
        returns: The mean return of each round's learner rollouts (after rounds 1..).
        sequences: How many labelled episodes the last round trained on.
    """

    histories: list[History] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    sequences: int = 0


def dagger(
    model: RNN,
    task: "str | Task",
    expert: Any,
    demos: Sequence[Episode],
    *,
    rounds: int = 3,
    seeds_per_round: int = 8,
    perturbations: Sequence[Perturbation] = (CLEAN,),
    first_seed: int = 10_000,
    epochs: int = 30,
    round_epochs: int = 15,
    batch_size: int = 8,
    learning_rate: float = 0.005,
    seed: int = 0,
    progress: bool = False,
) -> DaggerResult:
    """Behaviour cloning on ``demos``, then ``rounds`` of DAgger.

    Each round rolls the learner out on ``seeds_per_round`` new seeds under each
    perturbation (seeds from ``first_seed`` up, so that they stay apart from evaluation
    seeds below it), has ``expert`` label the true states it visited, adds those
    episodes to the data and trains for ``round_epochs`` more epochs on all of it.

    Returns:
        A [`DaggerResult`][ncps_mlx.policies.DaggerResult]; ``model`` is trained in place.

    Raises:
        ValueError: The model's sizes do not fit the task, ``rounds`` is not an int
            >= 0, or ``seeds_per_round`` not an int >= 1.
    """
    task = get_task(task)
    check_model_fits(model, task, "dagger")
    check_int("dagger", "rounds", rounds, low=0)
    check_int("dagger", "seeds_per_round", seeds_per_round)
    episodes = list(demos)
    train = dict(batch_size=batch_size, learning_rate=learning_rate, progress=progress)
    result = DaggerResult()
    data = to_sequences(model, task, episodes, expert)
    result.histories.append(behaviour_cloning(model, task, data, epochs=epochs, seed=seed, **train))
    env = task.make_env()
    try:
        for round_ in range(1, rounds + 1):
            policy = ModelPolicy(model, task)
            start = first_seed + (round_ - 1) * seeds_per_round
            visited = [
                rollout(policy, task, s, p, env=env, max_steps=task.train_steps)
                for p in perturbations
                for s in range(start, start + seeds_per_round)
            ]
            result.returns.append(float(np.mean([e.total_reward for e in visited])))
            episodes += visited
            data = to_sequences(model, task, episodes, expert)
            result.histories.append(
                behaviour_cloning(
                    model, task, data, epochs=round_epochs, seed=seed + round_, **train
                )
            )
    finally:
        env.close()
    result.sequences = len(episodes)
    return result
