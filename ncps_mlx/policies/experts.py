"""Experts written for the tasks, whose demonstrations the policies imitate.

Both are model-based controllers that read the true state from the observation and
need no training: an LQR (a linear-quadratic regulator, from the discrete Riccati
equation of the linearised dynamics) balances each system, and for the pendulum an
energy-shaping law first swings it up.
"""

import math

import numpy as np

from .tasks import Task, get_task


def lqr_gain(a: np.ndarray, b: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The gain ``K`` of the discrete-time LQR ``u = -K x`` for ``x' = A x + B u``, with
    cost ``sum x'Qx + u'Ru``, from the Riccati recursion iterated to its fixed point.

    Raises:
        ArithmeticError: The recursion does not converge (the system is not stabilisable).
    """
    p = q.copy()
    # A diverging P overflows; it is stopped below, without a warning.
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(10_000):
            gain = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
            following = q + a.T @ p @ (a - b @ gain)
            if not np.isfinite(following).all():
                break
            if np.allclose(following, p, rtol=1e-12, atol=1e-12):
                return gain
            p = following
    raise ArithmeticError(
        "[lqr_gain] the Riccati recursion diverged or did not settle in 10000 iterations; "
        "(A, B) must be stabilisable: every unstable mode of A reachable through B"
    )


def _linearised(step, state_size: int, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of ``step(x, u)`` at the origin, by central differences."""
    a = np.zeros((state_size, state_size))
    for i in range(state_size):
        dx = np.zeros(state_size)
        dx[i] = eps
        a[:, i] = (step(dx, 0.0) - step(-dx, 0.0)) / (2 * eps)
    b = ((step(np.zeros(state_size), eps) - step(np.zeros(state_size), -eps)) / (2 * eps))[:, None]
    return a, b


class PendulumExpert:
    """Swing-up by energy shaping, then balance by LQR, for ``Pendulum-v1``.

    Far from upright the torque pumps energy towards that of the upright pendulum at rest
    (`u = -gain * (E - E_top) * angular velocity`, saturated); within `capture_angle`
    of upright, with little energy to spare, the LQR of the linearised dynamics balances it.
    """

    # Pendulum-v1's constants: gravity, mass, length, time step, torque and speed limits.
    G, M, L, DT, MAX_TORQUE, MAX_SPEED = 10.0, 1.0, 1.0, 0.05, 2.0, 8.0

    def __init__(self, energy_gain: float = 1.0, capture_angle: float = 0.6):
        self.energy_gain = energy_gain
        self.capture_angle = capture_angle
        a, b = _linearised(self._step, 2)
        self.gain = lqr_gain(a, b, np.diag([1.0, 0.1]), np.array([[0.001]]))

    def _step(self, x: np.ndarray, u: float) -> np.ndarray:
        """One environment step of ``[angle, speed]`` (upright = 0), without clipping."""
        speed = (
            x[1]
            + (3 * self.G / (2 * self.L) * math.sin(x[0]) + 3 / (self.M * self.L**2) * u) * self.DT
        )
        return np.array([x[0] + speed * self.DT, speed])

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        """The torque (1,) for an observation ``[cos, sin, angular velocity]``."""
        cos, sin, speed = (float(v) for v in observation)
        angle = math.atan2(sin, cos)
        # The energy relative to the upright pendulum at rest (rod of inertia m l^2 / 3).
        energy = self.M * self.L**2 / 6 * speed**2 + self.M * self.G * self.L / 2 * (cos - 1)
        if abs(angle) < self.capture_angle and abs(energy) < 2.0:
            torque = -(self.gain @ np.array([angle, speed])).item()
        else:
            torque = -self.energy_gain * energy * speed
            # A pendulum at rest at the bottom has no speed to pump with: push it.
            if abs(speed) < 1e-3 and energy < 0:
                torque = self.MAX_TORQUE
        return np.array([np.clip(torque, -self.MAX_TORQUE, self.MAX_TORQUE)], np.float32)


class CartPoleExpert:
    """Balance by LQR for ``CartPole-v1``: push right when the LQR's force is positive."""

    # CartPole-v1's constants.
    GRAVITY, CART, POLE, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02

    def __init__(self):
        a, b = _linearised(self._step, 4)
        self.gain = lqr_gain(a, b, np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[0.1]]))

    def _step(self, x: np.ndarray, force: float) -> np.ndarray:
        """One Euler step of ``[position, velocity, angle, angular velocity]``, as the
        environment integrates it."""
        position, velocity, angle, spin = x
        total = self.CART + self.POLE
        moment = self.POLE * self.HALF_LENGTH
        temp = (force + moment * spin**2 * math.sin(angle)) / total
        spin_acc = (self.GRAVITY * math.sin(angle) - math.cos(angle) * temp) / (
            self.HALF_LENGTH * (4 / 3 - self.POLE * math.cos(angle) ** 2 / total)
        )
        acc = temp - moment * spin_acc * math.cos(angle) / total
        return np.array(
            [
                position + self.TAU * velocity,
                velocity + self.TAU * acc,
                angle + self.TAU * spin,
                spin + self.TAU * spin_acc,
            ]
        )

    def __call__(self, observation: np.ndarray) -> int:
        """The action for an observation: 1 (push right) or 0 (push left)."""
        force = -(self.gain @ np.asarray(observation, np.float64)).item()
        return int(force > 0)


EXPERTS = {"pendulum": PendulumExpert, "cartpole": CartPoleExpert}
"""The expert of each task of [`TASKS`][ncps_mlx.policies.TASKS], by task name."""


def expert_for(task: "str | Task"):
    """A new expert for ``task`` (a name or a [`Task`][ncps_mlx.policies.Task])."""
    return EXPERTS[get_task(task).name]()
