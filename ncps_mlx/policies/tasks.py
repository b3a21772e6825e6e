"""The control tasks a policy is trained and evaluated on: Gymnasium environments with the
scales that turn their observations and actions into a model's inputs and outputs."""

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_choice
from ..errors import see


def require_gymnasium() -> Any:
    """Import gymnasium, or say how to install it.

    Returns:
        The `gymnasium` module.

    Raises:
        ImportError: gymnasium is not installed; the message says how to install it.
    """
    try:
        import gymnasium
    except ImportError as error:
        raise ImportError(
            "closed-loop runs need gymnasium: pip install 'ncps-mlx[control]'\n"
            + see("missing-extra")
        ) from error
    return gymnasium


@dataclass(frozen=True)
class Task:
    """A Gymnasium environment as a policy sees it.

    A policy's model reads the observation divided by `observation_scale` (so that each
    feature is of order one) and, for a continuous action, outputs the action divided by
    `action_scale`; for discrete actions it outputs one logit per action.

    Attributes:
        name: The short name (`pendulum`, `cartpole`).
        env_id: The Gymnasium id.
        observation_scale: What each observation feature is divided by.
        actions: The number of discrete actions, or `None` for a continuous action.
        action_scale: The largest continuous action (its bound), or `None`.
        step_seconds: The environment's time step in seconds: a policy's timespan of 1 is
            one step.
        max_steps: Steps of a full episode (the time limit).
        train_steps: Steps of the episodes imitation learning collects (demonstrations
            and DAgger's rollouts): shorter for a task whose behaviour repeats, since
            training time grows with the sequences' length.
    """

    name: str
    env_id: str
    observation_scale: tuple[float, ...]
    actions: int | None
    action_scale: float | None
    step_seconds: float
    max_steps: int
    train_steps: int

    @property
    def discrete(self) -> bool:
        """Whether the action is one of `actions` choices (else a continuous value)."""
        return self.actions is not None

    @property
    def observation_size(self) -> int:
        """Features of an observation."""
        return len(self.observation_scale)

    @property
    def output_size(self) -> int:
        """Outputs of the policy's model: a logit per action, or the one action."""
        return self.actions if self.discrete else 1

    def make_env(self, render_mode: str | None = None) -> Any:
        """A new environment of this task (needs the ``control`` extra)."""
        return require_gymnasium().make(self.env_id, render_mode=render_mode)

    def encode(self, observation: np.ndarray) -> np.ndarray:
        """Observations (..., observation_size) as model inputs: divided by the scale."""
        return (np.asarray(observation, np.float32) / self._scale).astype(np.float32)

    def decode(self, output: np.ndarray) -> Any:
        """A model output (output_size,) as an action for the environment: the index of
        the largest logit, or the output times the scale, clipped to the bound."""
        output = np.asarray(output, np.float32).reshape(self.output_size)
        if self.discrete:
            return int(np.argmax(output))
        return np.clip(output * self.action_scale, -self.action_scale, self.action_scale)

    def target(self, action: Any) -> Any:
        """An expert's action as a training target: the action index, or the action
        divided by the scale."""
        if self.discrete:
            return int(action)
        return float(np.asarray(action, np.float64).reshape(()) / self.action_scale)

    @property
    def _scale(self) -> np.ndarray:
        return np.asarray(self.observation_scale, np.float32)


TASKS = {
    # Swing-up from a random angle: [cos, sin, angular velocity (|.| <= 8)]; torque in [-2, 2].
    "pendulum": Task(
        name="pendulum",
        env_id="Pendulum-v1",
        observation_scale=(1.0, 1.0, 8.0),
        actions=None,
        action_scale=2.0,
        step_seconds=0.05,
        max_steps=200,
        train_steps=200,
    ),
    # Balance: [position (|.| < 2.4), velocity, angle (|.| < 0.21), angular velocity];
    # push left or right.
    "cartpole": Task(
        name="cartpole",
        env_id="CartPole-v1",
        observation_scale=(2.4, 2.0, 0.21, 2.0),
        actions=2,
        action_scale=None,
        step_seconds=0.02,
        max_steps=500,
        # Balancing looks the same after 200 steps as after 500.
        train_steps=200,
    ),
}
"""The tasks by name: one continuous and one discrete action, both without downloads."""


def get_task(task: "str | Task") -> Task:
    """A [`Task`][ncps_mlx.policies.Task] itself, or the one of [`TASKS`][ncps_mlx.policies.TASKS]
    named ``task``.

    Raises:
        ValueError: ``task`` names no task; the message lists them.
    """
    if isinstance(task, Task):
        return task
    return TASKS[check_choice("policies", "task", task, TASKS)]
