"""Policies: what acts in the loop, one observation at a time, its memory carried along."""

from typing import Any, Protocol

import numpy as np

from ..baselines import with_timespan_feature
from ..controller import Controller
from ..rnn import RNN
from .tasks import Task, get_task


class Policy(Protocol):
    """Anything that acts in a closed loop: called with each observation that arrives and
    the time elapsed since the previous one, returning the action to take until the next.
    """

    def reset(self) -> None:
        """Forget the episode so far (before each new one)."""

    def __call__(self, observation: np.ndarray, timespan: float) -> Any:
        """The action for ``observation``, ``timespan`` steps after the previous one."""


def takes_timespan_feature(model: RNN) -> bool:
    """Whether the model's cell ignores timespans, so that they must reach it as one more
    input feature (the baselines; see `Cell.uses_timespans`)."""
    return not model.rnn_cell.uses_timespans


def model_inputs(model: RNN, encoded: np.ndarray, timespans: np.ndarray) -> np.ndarray:
    """The inputs of ``model`` for encoded observations (..., F) arriving after
    ``timespans`` (...): the observations, and the timespans too for a cell that ignores
    them."""
    return _inputs(encoded, timespans, takes_timespan_feature(model))


def _inputs(encoded: np.ndarray, timespans: Any, timespan_feature: bool) -> np.ndarray:
    encoded = np.asarray(encoded, np.float32)
    return with_timespan_feature(encoded, timespans) if timespan_feature else encoded


def check_model_fits(model: RNN, task: Task, owner: str) -> None:
    """Raise a ValueError unless ``model`` reads ``task``'s observations and outputs its
    actions."""
    inputs = task.observation_size + takes_timespan_feature(model)
    if model.input_size != inputs or model.output_size != task.output_size:
        raise ValueError(
            f"[{owner}] the model takes {model.input_size} inputs and gives "
            f"{model.output_size} outputs, but {task.name} needs {inputs} inputs (the "
            f"observation{' and the timespan' if inputs > task.observation_size else ''}) "
            f"and {task.output_size} outputs ({_outputs_meaning(task)})"
        )


def _outputs_meaning(task: Task) -> str:
    return "a logit per action" if task.discrete else "the action"


class StepperPolicy:
    """A model run one step per call (``stepper(x, timespan=...)`` with ``reset()``) acting
    on a task.

    Each observation is divided by the task's scale (with the timespan appended for a
    cell that ignores timespans), the stepper advances its state by one step of the elapsed
    time, and its output becomes the action: the largest logit's index, or the output
    times the task's action bound.
    """

    def __init__(self, stepper: Any, task: Task, timespan_feature: bool):
        self.task = task
        self.stepper = stepper
        self.timespan_feature = timespan_feature

    def reset(self) -> None:
        """Start from the zero state."""
        self.stepper.reset()

    def __call__(self, observation: np.ndarray, timespan: float = 1.0) -> Any:
        """The action for an observation ``timespan`` steps after the previous one."""
        return self.task.decode(self.output(observation, timespan))

    def output(self, observation: np.ndarray, timespan: float = 1.0) -> np.ndarray:
        """The model's raw output (logits, or the scaled action) for an observation."""
        x = _inputs(self.task.encode(observation), timespan, self.timespan_feature)
        return self.stepper(x, timespan=timespan)


class ModelPolicy(StepperPolicy):
    """An ncps_mlx model acting on a task through a [`Controller`][ncps_mlx.Controller]
    (see [`StepperPolicy`][ncps_mlx.policies.StepperPolicy] for the encoding).

    Args:
        model (RNN): A trained ncps_mlx model: ``task.observation_size`` inputs (one more
            for a cell that ignores timespans) and ``task.output_size`` outputs.
        task (str | Task): The task it acts on.

    Raises:
        ValueError: The model's sizes do not fit the task.
    """

    def __init__(self, model: RNN, task: "str | Task"):
        task = get_task(task)
        check_model_fits(model, task, "ModelPolicy")
        self.model = model
        super().__init__(Controller(model), task, takes_timespan_feature(model))


class PackagePolicy(StepperPolicy):
    """An exported Core ML step or stateful package acting on a task, through
    [`PackageController`][ncps_mlx.export.PackageController]: Core ML on a Mac, the
    package's own evaluator elsewhere (see there).

    Args:
        path (str | Path): The ``.mlpackage`` exported from a policy's model with
            [`to_coreml`][ncps_mlx.export.to_coreml] (``kind="step"`` or ``"stateful"``).
        task (str | Task): The task it acts on.
        timespan_feature (bool): Whether the exported model takes the timespan as its last
            input feature (a baseline's cell). Default: ``False``.
        **options: Passed on to ``PackageController`` (``runtime``, ``compute_units``).
    """

    def __init__(
        self, path: Any, task: "str | Task", *, timespan_feature: bool = False, **options: Any
    ):
        from ..export import PackageController

        task = get_task(task)
        stepper = PackageController(path, **options)
        inputs = task.observation_size + bool(timespan_feature)
        if (stepper.info.input_size, stepper.info.output_size) != (inputs, task.output_size):
            raise ValueError(
                f"[PackagePolicy] the package takes {stepper.info.input_size} inputs and gives "
                f"{stepper.info.output_size} outputs, but {task.name} needs {inputs} inputs and "
                f"{task.output_size} outputs ({_outputs_meaning(task)})"
            )
        super().__init__(stepper, task, timespan_feature)


class ExpertPolicy:
    """A memoryless expert (observation -> action) as a [`Policy`][ncps_mlx.policies.Policy]."""

    def __init__(self, expert: Any):
        self.expert = expert

    def reset(self) -> None:
        """Nothing to forget."""

    def __call__(self, observation: np.ndarray, timespan: float = 1.0) -> Any:
        """The expert's action for the observation; the timespan is not needed."""
        return self.expert(observation)
