"""Deployment in the loop: a policy exported to Core ML, checked against the MLX model it
came from, step by step on the same observations and over whole closed-loop episodes.

Off the Mac the exported package runs on its numpy evaluator
(`ncps_mlx.export.evaluator`), which runs the program saved
in the package and rounds every op to the package's precision; Core ML itself runs the
package only on a Mac (see [`PackageController`][ncps_mlx.export.PackageController]).
[`DeploymentCheck.runtime`][ncps_mlx.policies.DeploymentCheck] says which one ran.
"""

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_choice, check_int, check_number
from ..errors import see
from ..rnn import RNN
from .loop import Episode, rollout
from .perturb import CONDITIONS, Perturbation
from .policy import (
    ModelPolicy,
    PackagePolicy,
    StepperPolicy,
    check_model_fits,
    takes_timespan_feature,
)
from .tasks import Task, get_task

_OWNER = "check_deployment"
_KINDS = ("step", "stateful")  # the kinds a PackagePolicy runs: one step per prediction
_EXPORTABLE_KINDS = ("cfc-ncp", "ltc-ncp")  # of MODEL_KINDS: CfC and LTC cells

TOLERANCES = {"float32": 1e-4, "float16": 3e-2}
"""The export's documented error per precision (docs/deployment.md, tests/test_export.py):
the largest absolute error of the package's outputs over the largest magnitude of the
MLX model's. A continuous action counts as differing when the package's differs from the
MLX model's by more than this fraction of the action bound."""
AGREEMENT_Z = 2.0
"""How many standard errors of the difference of mean returns still count as noise."""


@dataclass(frozen=True)
class ConditionCheck:
    """The check of one condition (clean, noisy, irregular) over every seed.

    Attributes:
        mlx_returns: The returns of the MLX policy, one per seed.
        package_returns: The returns of the package's policy in its own closed loop, one
            per seed.
        max_output_difference: The largest absolute difference between the two raw
            outputs (logits, or the action over its bound) when both are fed the
            observations and timespans that reached the MLX policy.
        action_mismatch: The fraction of those steps whose decoded actions differ: another
            argmax for a discrete task, a difference of more than the tolerance times the
            action bound for a continuous one.
        steps: The steps compared: every call of the MLX policy, over every seed.
    """

    mlx_returns: list[float]
    package_returns: list[float]
    max_output_difference: float
    action_mismatch: float
    steps: int

    def returns_agree(self, z: float = AGREEMENT_Z) -> bool:
        """Whether the mean returns differ by at most ``z`` standard errors of their
        difference (see
        [`DeploymentCheck.returns_agree`][ncps_mlx.policies.DeploymentCheck.returns_agree]).

        Raises:
            ValueError: Fewer than two seeds and unequal returns: the spread of the
                returns, the noise, is then unknown.
        """
        difference = abs(self.return_difference)
        return difference == 0 or difference <= z * self.return_standard_error

    @property
    def return_difference(self) -> float:
        """The package's mean return minus the MLX policy's."""
        return float(np.mean(self.package_returns) - np.mean(self.mlx_returns))

    @property
    def return_standard_error(self) -> float:
        """The standard error of the difference of the two mean returns, from each side's
        spread across seeds (sample standard deviations)."""
        n = len(self.mlx_returns)
        if n < 2:
            raise ValueError(
                f"[DeploymentCheck] judging returns against their noise needs at least 2 seeds "
                f"(their spread is the noise) but the check ran {n}"
            )
        variances = [np.var(r, ddof=1) for r in (self.mlx_returns, self.package_returns)]
        return float(math.sqrt(sum(variances) / n))


@dataclass(frozen=True)
class DeploymentCheck:
    """What [`check_deployment`][ncps_mlx.policies.check_deployment] found: the exported
    package against the MLX policy, per condition.

    Attributes:
        path: The exported ``.mlpackage``.
        task: The task's name.
        precision: ``"float16"`` or ``"float32"``.
        kind: The package's kind: ``"step"`` or ``"stateful"``.
        runtime: What ran the package: ``"coreml"`` (Core ML, on a Mac) or
            ``"evaluator"`` (the package's numpy evaluator, anywhere).
        tolerance: The export's documented error at this precision
            ([`TOLERANCES`][ncps_mlx.policies.TOLERANCES]).
        seeds: The episodes' seeds.
        conditions: The [`ConditionCheck`][ncps_mlx.policies.ConditionCheck] of each
            condition, by name.
    """

    path: Path
    task: str
    precision: str
    kind: str
    runtime: str
    tolerance: float
    seeds: list[int]
    conditions: dict[str, ConditionCheck] = field(default_factory=dict)

    def returns_agree(self, condition: str | None = None, *, z: float = AGREEMENT_Z) -> bool:
        """Whether the package's returns equal the MLX policy's within noise, under
        ``condition`` or (``None``) under every condition.

        The noise is the spread of the returns across seeds: the two mean returns agree
        when they differ by at most ``z`` standard errors of their difference,
        ``sqrt(s_mlx² / n + s_package² / n)`` with the sample standard deviations ``s``
        of ``n`` seeds. Equal returns always agree. Both sides run the same seeds, so the
        two samples are not independent; treating them as such overstates the noise of
        the difference, which makes the judgement lenient: it tells a package that acts
        differently in the loop, not one whose returns moved by a small fraction of the
        episodes' spread.

        Raises:
            ValueError: An unknown ``condition``, or fewer than two seeds.
        """
        check_number("DeploymentCheck", "z", z, low=0.0)
        names = (
            [check_choice("DeploymentCheck", "condition", condition, self.conditions)]
            if condition is not None
            else list(self.conditions)
        )
        return all(self.conditions[name].returns_agree(z) for name in names)

    def markdown(self) -> str:
        """The table: condition | MLX return mean ± std | package return mean ± std |
        max abs output difference | share of actions differing."""
        lines = [
            "| condition | MLX return | package return | max abs Δoutput | actions differing |",
            "|---|---|---|---|---|",
        ]
        for name, check in self.conditions.items():
            lines.append(
                f"| {name} | {_mean_std(check.mlx_returns)} | {_mean_std(check.package_returns)} "
                f"| {check.max_output_difference:.1e} | {100 * check.action_mismatch:.1f}% |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable: the settings and each condition's figures."""
        return {
            "path": str(self.path),
            "task": self.task,
            "precision": self.precision,
            "kind": self.kind,
            "runtime": self.runtime,
            "tolerance": self.tolerance,
            "seeds": list(self.seeds),
            "conditions": {
                name: {
                    "mlx_returns": list(check.mlx_returns),
                    "package_returns": list(check.package_returns),
                    "max_output_difference": check.max_output_difference,
                    "action_mismatch": check.action_mismatch,
                    "steps": check.steps,
                }
                for name, check in self.conditions.items()
            },
        }


def _mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


class _Recording:
    """A stepper policy that keeps each raw output it computed in the episode."""

    def __init__(self, policy: StepperPolicy):
        self.policy = policy
        self.outputs: list[np.ndarray] = []

    def reset(self) -> None:
        self.policy.reset()
        self.outputs = []

    def __call__(self, observation: np.ndarray, timespan: float = 1.0) -> Any:
        output = np.asarray(self.policy.output(observation, timespan), np.float32)
        self.outputs.append(output)
        return self.policy.task.decode(output)


def _replay(policy: StepperPolicy, episode: Episode) -> np.ndarray:
    """The raw outputs of ``policy``, reset, fed the observations and timespans that
    reached the policy of ``episode`` (its observed steps): (calls, output_size)."""
    recording = _Recording(policy)
    recording.reset()
    seen = episode.seen[episode.observed]
    for observation, timespan in zip(seen, episode.timespans[episode.observed], strict=True):
        recording(observation, float(timespan))
    return np.stack(recording.outputs)


def _actions_differ(
    task: Task, ours: np.ndarray, theirs: np.ndarray, tolerance: float
) -> np.ndarray:
    """Per step (rows of the raw outputs), whether the decoded actions differ: another
    argmax, or continuous actions more than ``tolerance`` times the bound apart."""
    if task.discrete:
        return ours.argmax(axis=-1) != theirs.argmax(axis=-1)
    decoded = [np.stack([task.decode(row) for row in outputs]) for outputs in (ours, theirs)]
    gap = np.abs(decoded[0] - decoded[1]).reshape(len(ours), -1).max(axis=-1)
    return gap > tolerance * task.action_scale


def _check_exportable(model: RNN, owner: str = _OWNER) -> None:
    """Raise a ValueError unless [`to_coreml`][ncps_mlx.export.to_coreml] can export
    ``model``'s cell (a CfC or LTC, or a cell with a registered graph).

    Raises:
        ImportError: Without coremltools (``pip install 'ncps-mlx[export]'``), for a
            model that is not a baseline.
    """
    from ..baselines import BASELINES

    exportable = f"policy kinds {' and '.join(map(repr, _EXPORTABLE_KINDS))}"
    for name, baseline in BASELINES.items():
        if type(model.rnn_cell) is baseline.cell:
            raise ValueError(
                f"[{owner}] the {baseline.label} baseline ({name!r}) cannot be exported to Core "
                f"ML: to_coreml exports CfC and LTC cells, so of the policies only the "
                f"{exportable} can be deployed; the baselines "
                f"{', '.join(map(repr, BASELINES))} run in MLX only\n{see('export-arguments')}"
            )
    from ..export.coreml import require_coremltools

    require_coremltools()
    from ..export import graphs  # noqa: F401  (registers the package's cell graphs)
    from ..export.registry import CELL_GRAPHS

    if type(model.rnn_cell) not in CELL_GRAPHS:
        raise ValueError(
            f"[{owner}] a {type(model.rnn_cell).__name__} cannot be exported to Core ML: "
            f"to_coreml exports CfC and LTC cells (the {exportable}) and cells whose graph is "
            f"registered with ncps_mlx.export.register_graph\n{see('export-arguments')}"
        )


def _package_path(
    out: str | os.PathLike, model: RNN, task: Task, kind: str, precision: str
) -> Path:
    """Where the check writes the package: ``out`` itself when it ends in ``.mlpackage``,
    else ``out/<task>-<cfc|ltc>-<kind>-<precision>.mlpackage``."""
    out = Path(out)
    if out.suffix == ".mlpackage":
        return out
    family = type(model).__name__.lower()
    return out / f"{task.name}-{family}-{kind}-{precision}.mlpackage"


def check_deployment(
    model: RNN,
    task: "str | Task",
    out: str | os.PathLike,
    *,
    seeds: Iterable[int] = range(20),
    conditions: dict[str, Perturbation] = CONDITIONS,
    precision: str = "float16",
    kind: str = "step",
    runtime: Any = None,
    max_steps: int | None = None,
) -> DeploymentCheck:
    """Export a trained policy model to Core ML and check the package in the loop.

    The model is exported with
    ``to_coreml(model, path, kind=kind, precision=precision, timespans=True)`` (batch 1,
    one step per prediction, the elapsed time as an input, so irregular sampling reaches
    the package as it reaches the model). Then, under each condition and for each seed:

    - **actions**: the MLX [`ModelPolicy`][ncps_mlx.policies.ModelPolicy] runs an
      episode; a [`PackagePolicy`][ncps_mlx.policies.PackagePolicy], reset, is fed the very
      observations and timespans that reached it (``episode.seen`` at
      ``episode.observed``, ``episode.timespans``), and the raw outputs are compared step
      by step: the largest absolute difference, and the share of steps whose decoded
      action differs (another argmax; or for a continuous action, more than
      [`TOLERANCES`][ncps_mlx.policies.TOLERANCES]``[precision]`` times the action
      bound apart);
    - **returns**: the package's policy runs its own closed-loop episode of the seed.
      [`DeploymentCheck.returns_agree`][ncps_mlx.policies.DeploymentCheck.returns_agree]
      judges whether the returns are equal within noise: the difference of the mean
      returns against its standard error across seeds.

    Off the Mac the package runs on its numpy evaluator of the saved program, which
    rounds every op to the package's precision; Core ML runs it only on a Mac (the
    default ``runtime`` picks Core ML where it is available). So on Linux the figures say
    what the saved program computes, not what Core ML's kernels or the Neural Engine do.

    Args:
        model: A trained CfC or LTC policy model of ``task`` (the kinds ``"cfc-ncp"`` and
            ``"ltc-ncp"`` of [`policy_model`][ncps_mlx.policies.policy_model]).
        task: The task, or its name.
        out: The package's path (ending in ``.mlpackage``), or a folder (made if
            missing) to write ``<task>-<cfc|ltc>-<kind>-<precision>.mlpackage`` in.
        seeds: The episodes' seeds.
        conditions: The perturbations by name. Default: clean, noisy and irregular.
        precision: ``"float16"`` (the deployment default) or ``"float32"``.
        kind: ``"step"`` (the state passed in and out) or ``"stateful"`` (the state kept
            by Core ML; float16 only, and Core ML needs macOS 15).
        runtime: What runs the package, passed to
            [`PackageController`][ncps_mlx.export.PackageController]: ``None`` (Core ML on a
            Mac, else the evaluator), ``"evaluator"``, or a ``CoreMLRuntime``.
        max_steps: End every episode after this many steps (default: the task's).

    Returns:
        The [`DeploymentCheck`][ncps_mlx.policies.DeploymentCheck].

    Raises:
        ValueError: A model that cannot be exported (a baseline: GRU, LSTM, MLP), that
            does not fit the task, or a bad ``precision``, ``kind`` or ``seeds``; before
            anything is exported.
        ImportError: Without coremltools (``pip install 'ncps-mlx[export]'``) or gymnasium
            (``pip install 'ncps-mlx[control]'``).
    """
    from ..export import to_coreml

    task = get_task(task)
    check_choice(_OWNER, "precision", precision, tuple(TOLERANCES))
    check_choice(_OWNER, "kind", kind, _KINDS)
    seeds = [check_int(_OWNER, "seed", seed, low=0) for seed in seeds]
    if not seeds or not conditions:
        raise ValueError(f"[{_OWNER}] 'seeds' and 'conditions' must not be empty")
    _check_exportable(model)
    check_model_fits(model, task, _OWNER)
    path = _package_path(out, model, task, kind, precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_coreml(model, path, kind=kind, precision=precision, timespans=True)
    package = PackagePolicy(
        path, task, timespan_feature=takes_timespan_feature(model), runtime=runtime
    )
    result = DeploymentCheck(
        path=path,
        task=task.name,
        precision=precision,
        kind=kind,
        runtime=package.stepper.runtime_name,
        tolerance=TOLERANCES[precision],
        seeds=seeds,
    )
    ours = ModelPolicy(model, task)
    env = task.make_env()
    try:
        for name, perturbation in conditions.items():
            result.conditions[name] = _check_condition(
                ours, package, task, seeds, perturbation, env, max_steps, result.tolerance
            )
    finally:
        env.close()
    return result


def _check_condition(
    ours: ModelPolicy,
    package: PackagePolicy,
    task: Task,
    seeds: list[int],
    perturbation: Perturbation,
    env: Any,
    max_steps: int | None,
    tolerance: float,
) -> ConditionCheck:
    recording = _Recording(ours)
    mlx_returns, package_returns, differences, mismatches = [], [], [], []
    for seed in seeds:
        episode = rollout(recording, task, seed, perturbation, env=env, max_steps=max_steps)
        expected = np.stack(recording.outputs)
        produced = _replay(package, episode)
        differences.append(float(np.abs(produced - expected).max()))
        mismatches.append(_actions_differ(task, expected, produced, tolerance))
        mlx_returns.append(episode.total_reward)
        loop = rollout(package, task, seed, perturbation, env=env, max_steps=max_steps)
        package_returns.append(loop.total_reward)
    flags = np.concatenate(mismatches)
    return ConditionCheck(
        mlx_returns=mlx_returns,
        package_returns=package_returns,
        max_output_difference=max(differences),
        action_mismatch=float(flags.mean()),
        steps=len(flags),
    )
