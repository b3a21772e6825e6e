"""The evaluation: policies trained by imitation on each task, and their returns over
seeded episodes, clean, under noise and under irregular sampling."""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..costs import parameter_count
from ..rnn import RNN
from .experts import expert_for
from .imitation import DaggerResult, dagger, demonstrations
from .loop import evaluate
from .models import LABELS, MODEL_KINDS, policy_model
from .perturb import CLEAN, CONDITIONS, IRREGULAR, Perturbation
from .policy import ExpertPolicy, ModelPolicy
from .tasks import get_task

Log = Callable[[str], None]


@dataclass(frozen=True)
class Imitation:
    """How each policy is trained: behaviour cloning on the expert's episodes, then DAgger.

    Attributes:
        demo_seeds: Expert episodes under each of `demo_perturbations`, from seed 1000 up
            (evaluation seeds start at 0, DAgger's at 10000).
        demo_perturbations: The conditions of the expert's episodes: clean and irregular,
            so that every model sees varied timespans while it learns.
        rounds: DAgger rounds after behaviour cloning.
        seeds_per_round: Learner episodes per round under each of `demo_perturbations`.
        epochs: Epochs of behaviour cloning.
        round_epochs: Epochs after each DAgger round.
        batch_size: Episodes per batch.
        learning_rate: Adam's learning rate.
    """

    demo_seeds: int = 16
    demo_perturbations: tuple[Perturbation, ...] = (CLEAN, IRREGULAR)
    rounds: int = 3
    seeds_per_round: int = 8
    epochs: int = 40
    round_epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 0.005


DEFAULT = Imitation()
"""The training of the evaluation table."""
QUICK = Imitation(demo_seeds=4, rounds=1, seeds_per_round=2, epochs=3, round_epochs=2)
"""A short training for smoke runs, not for results: seconds for the NCPs, about a minute
for a baseline on CartPole's 500-step episodes (MLX compiles their unrolled steps)."""


@dataclass
class TrainedPolicy:
    """A policy model trained by [`train_policy`][ncps_mlx.policies.train_policy]."""

    task: str
    kind: str
    model: RNN
    seconds: float
    dagger: DaggerResult

    @property
    def parameters(self) -> int:
        """The model's parameter count."""
        return parameter_count(self.model)


def train_policy(
    kind: str, task: str, *, seed: int = 0, settings: Imitation = DEFAULT, log: Log = print
) -> TrainedPolicy:
    """A policy model of ``kind`` trained on ``task`` by imitation of the task's expert:
    weights and batches from ``seed``."""
    task_ = get_task(task)
    expert = expert_for(task_)
    demos = demonstrations(
        expert, task_, range(1000, 1000 + settings.demo_seeds), settings.demo_perturbations
    )
    model = policy_model(kind, task_, seed=seed)
    log(
        f"{task_.name}: training the {LABELS[kind]} by behaviour cloning and "
        f"{settings.rounds} DAgger round{'' if settings.rounds == 1 else 's'} ..."
    )
    start = time.perf_counter()
    result = dagger(
        model,
        task_,
        expert,
        demos,
        rounds=settings.rounds,
        seeds_per_round=settings.seeds_per_round,
        perturbations=settings.demo_perturbations,
        epochs=settings.epochs,
        round_epochs=settings.round_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    count = parameter_count(model)
    log(f"{task_.name}: {LABELS[kind]} trained in {seconds:.1f} s ({count} parameters)")
    return TrainedPolicy(task_.name, kind, model, seconds, result)


@dataclass
class Row:
    """One policy's returns on one task, per condition."""

    task: str
    policy: str
    parameters: int | None
    returns: dict[str, list[float]]

    def summary(self, condition: str) -> tuple[float, float]:
        """Mean and standard deviation of the returns under ``condition``."""
        values = np.asarray(self.returns[condition])
        return float(values.mean()), float(values.std())


@dataclass
class Evaluation:
    """The evaluation table's rows, with the seeds and settings that reproduce them."""

    rows: list[Row] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    conditions: dict[str, Perturbation] = field(default_factory=dict)
    train_seed: int = 0
    settings: Imitation = DEFAULT

    def markdown(self) -> str:
        """The table: mean ± standard deviation of the return per condition."""
        names = list(self.conditions)
        head = "| task | policy | parameters | " + " | ".join(names) + " |"
        lines = [head, "|" + "---|" * (3 + len(names))]
        for row in self.rows:
            cells = [f"{m:.1f} ± {s:.1f}" for m, s in (row.summary(c) for c in names)]
            params = "" if row.parameters is None else str(row.parameters)
            lines.append(f"| {row.task} | {row.policy} | {params} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> str:
        """Every return, with the seeds, conditions and settings."""
        return json.dumps(
            {
                "seeds": self.seeds,
                "train_seed": self.train_seed,
                "conditions": {n: vars(p) for n, p in self.conditions.items()},
                "settings": {
                    k: ([vars(p) for p in v] if k == "demo_perturbations" else v)
                    for k, v in vars(self.settings).items()
                },
                "rows": [vars(row) for row in self.rows],
            },
            indent=1,
        )


def returns_by_condition(
    policy: Any, task: str, seeds: Sequence[int], conditions: dict[str, Perturbation]
) -> dict[str, list[float]]:
    """The returns of ``policy`` on each seed, under each condition."""
    return {name: evaluate(policy, task, seeds, p).tolist() for name, p in conditions.items()}


def run_evaluation(
    tasks: Sequence[str] = ("pendulum", "cartpole"),
    kinds: Sequence[str] = MODEL_KINDS,
    *,
    seeds: Sequence[int] = range(20),
    conditions: dict[str, Perturbation] = CONDITIONS,
    train_seed: int = 0,
    settings: Imitation = DEFAULT,
    log: Log = print,
    trained: Callable[[TrainedPolicy], None] = lambda policy: None,
) -> Evaluation:
    """Train each kind of policy on each task and evaluate it, with the expert's returns
    for scale.

    Args:
        tasks: Task names.
        kinds: Kinds of [`MODEL_KINDS`][ncps_mlx.policies.MODEL_KINDS].
        seeds: The evaluation episodes' seeds (below 1000: training uses seeds from 1000).
        conditions: The perturbations, by the names the table prints.
        train_seed: The seed of every model's weights and batches.
        settings: The training.
        log: Where progress lines go.
        trained: Called with each trained policy (to save or inspect it).

    Returns:
        The [`Evaluation`][ncps_mlx.policies.Evaluation].
    """
    result = Evaluation(
        seeds=list(seeds), conditions=dict(conditions), train_seed=train_seed, settings=settings
    )
    for task in tasks:
        expert = ExpertPolicy(expert_for(task))
        result.rows.append(
            Row(task, "expert", None, returns_by_condition(expert, task, seeds, conditions))
        )
        for kind in kinds:
            policy = train_policy(kind, task, seed=train_seed, settings=settings, log=log)
            trained(policy)
            log(f"{task}: evaluating it over {len(seeds)} seeds under {len(conditions)} conditions")
            returns = returns_by_condition(ModelPolicy(policy.model, task), task, seeds, conditions)
            result.rows.append(Row(task, LABELS[kind], policy.parameters, returns))
    return result
