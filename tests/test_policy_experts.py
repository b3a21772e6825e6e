"""The experts of ncps_mlx.policies: the LQR gain against the Riccati equation it solves,
the experts' models against the Gymnasium environments they control, and their returns."""

import math
import warnings

import numpy as np
import pytest

from ncps_mlx.policies import (
    EXPERTS,
    TASKS,
    CartPoleExpert,
    ExpertPolicy,
    PendulumExpert,
    evaluate,
    expert_for,
    lqr_gain,
)
from ncps_mlx.policies.experts import _linearised

gymnasium = pytest.importorskip("gymnasium")  # the control extra


def closed_loop_cost(a, b, q, r, gain) -> np.ndarray:
    """``P``, the cost-to-go ``x'Px`` of ``u = -K x``: the solution of the Lyapunov
    equation ``P = Q + K'RK + (A-BK)'P(A-BK)``, by Kronecker products."""
    closed = a - b @ gain
    n = len(a)
    right = (q + gain.T @ r @ gain).reshape(-1)
    # vec(M'PM) = (M' kron M') vec(P) for row-major vec.
    return np.linalg.solve(np.eye(n * n) - np.kron(closed.T, closed.T), right).reshape(n, n)


def assert_lqr_optimal(a, b, q, r, gain):
    """``K`` stabilises ``(A, B)`` and its cost ``P`` solves the Riccati equation
    ``P = Q + A'P(A-BK)`` with ``K = (R + B'PB)^-1 B'PA``: the optimal gain."""
    assert max(abs(np.linalg.eigvals(a - b @ gain))) < 1  # stable
    p = closed_loop_cost(a, b, q, r, gain)
    np.testing.assert_allclose(p, q + a.T @ p @ (a - b @ gain), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gain, np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a), rtol=1e-6)


# -- the LQR ----------------------------------------------------------------------------


def test_the_scalar_lqr_gain_is_known_in_closed_form():
    # x' = x + u with cost x^2 + u^2: p^2 = p + 1, so p is the golden ratio and k = p/(1+p).
    golden = (1 + math.sqrt(5)) / 2
    gain = lqr_gain(np.eye(1), np.eye(1), np.eye(1), np.eye(1))
    np.testing.assert_allclose(gain, [[golden / (1 + golden)]], rtol=1e-10)


def test_the_lqr_gain_solves_the_riccati_equation_of_an_unstable_system():
    # A double integrator with an unstable drift, two inputs.
    a = np.array([[1.05, 0.1, 0.0], [0.0, 1.0, 0.1], [0.02, 0.0, 1.1]])
    b = np.array([[0.0, 0.1], [0.1, 0.0], [0.0, 0.05]])
    q, r = np.diag([1.0, 0.5, 2.0]), np.diag([0.1, 0.3])
    assert max(abs(np.linalg.eigvals(a))) > 1
    gain = lqr_gain(a, b, q, r)
    assert gain.shape == (2, 3)
    assert_lqr_optimal(a, b, q, r, gain)


def test_the_lqr_gain_refuses_a_system_it_cannot_stabilise():
    a, b = np.diag([2.0, 0.5]), np.array([[0.0], [1.0]])  # the unstable mode has no input
    with (
        warnings.catch_warnings(),
        pytest.raises(ArithmeticError, match=r"\[lqr_gain\] .* must be stabilisable"),
    ):
        warnings.simplefilter("error")  # the overflow of the diverging recursion is not shown
        lqr_gain(a, b, np.eye(2), np.eye(1))


# -- the experts' models against the environments ---------------------------------------


def env_of(name: str):
    env = TASKS[name].make_env()
    env.reset(seed=0)
    return env


def env_step(env, state, action) -> np.ndarray:
    """The environment's next state from ``state`` under ``action``."""
    env.unwrapped.state = np.array(state, np.float64)
    env.step(action)
    return np.array(env.unwrapped.state, np.float64)


@pytest.mark.parametrize(
    "state, torque", [((0.3, -1.0), 0.5), ((2.5, 3.0), -1.9), ((-1.0, 0.2), 1.0), ((0, 0), 2)]
)
def test_the_pendulum_experts_model_is_the_environments_step(state, torque):
    env = env_of("pendulum")
    expected = env_step(env, state, np.array([torque], np.float64))
    assert abs(expected[1]) < PendulumExpert.MAX_SPEED  # the model does not clip
    np.testing.assert_allclose(PendulumExpert()._step(np.array(state), torque), expected)


@pytest.mark.parametrize("state", [(0.1, -0.2, 0.05, 0.3), (-1.0, 0.5, -0.1, -0.4), (0, 0, 0, 0)])
def test_the_cartpole_experts_model_is_the_environments_step_for_both_pushes(state):
    env = env_of("cartpole")
    for action, force in ((0, -10.0), (1, 10.0)):
        expected = env_step(env, state, action)
        np.testing.assert_allclose(CartPoleExpert()._step(np.array(state), force), expected)


def environment_linearisation(env, size: int, push, eps: float = 1e-6):
    """``(A, B)`` of the environment's step at the upright rest, by central differences
    of ``env.step``; ``push(u)`` sets the action to a force or torque of ``u``."""
    a = np.zeros((size, size))
    for i in range(size):
        dx = np.eye(size)[i] * eps
        a[:, i] = (env_step(env, dx, push(0.0)) - env_step(env, -dx, push(0.0))) / (2 * eps)
    origin = np.zeros(size)
    b = (env_step(env, origin, push(eps)) - env_step(env, origin, push(-eps))) / (2 * eps)
    return a, b[:, None]


def pendulum_torque(u: float) -> np.ndarray:
    return np.array([u], np.float64)


def cartpole_push(env):
    """A push of ``u`` newtons: CartPole's actions are +-force_mag, so set force_mag."""

    def push(u: float) -> int:
        env.unwrapped.force_mag = abs(u)
        return int(u > 0)

    return push


@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_each_experts_linearisation_and_gain_hold_for_the_environment(name):
    env, expert = env_of(name), expert_for(name)
    size = {"pendulum": 2, "cartpole": 4}[name]
    push = pendulum_torque if name == "pendulum" else cartpole_push(env)
    a, b = environment_linearisation(env, size, push)
    ours = _linearised(expert._step, size)
    np.testing.assert_allclose(ours[0], a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours[1], b, rtol=1e-5, atol=1e-7)
    # The expert's gain balances the environment's own linear dynamics.
    assert max(abs(np.linalg.eigvals(a - b @ expert.gain))) < 1
    assert max(abs(np.linalg.eigvals(a))) > 1  # which fall over without it


def test_the_experts_gains_are_the_lqr_of_their_linearisations():
    pendulum, cartpole = PendulumExpert(), CartPoleExpert()
    a, b = _linearised(pendulum._step, 2)
    assert_lqr_optimal(a, b, np.diag([1.0, 0.1]), np.array([[0.001]]), pendulum.gain)
    a, b = _linearised(cartpole._step, 4)
    assert_lqr_optimal(a, b, np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[0.1]]), cartpole.gain)


# -- the experts in the loop ------------------------------------------------------------


def test_the_experts_are_the_tasks_and_act_in_their_action_spaces():
    assert EXPERTS.keys() == TASKS.keys()
    assert isinstance(expert_for("pendulum"), PendulumExpert)
    assert isinstance(expert_for(TASKS["cartpole"]), CartPoleExpert)
    torque = PendulumExpert()(np.array([-1.0, 0.0, 0.0], np.float32))  # hanging at rest
    assert torque.shape == (1,) and torque.dtype == np.float32 and torque[0] == 2.0
    for observation in np.random.default_rng(0).normal(size=(20, 3)):
        assert abs(PendulumExpert()(observation)[0]) <= 2.0
    assert CartPoleExpert()(np.array([0, 0, 0.1, 0], np.float32)) == 1  # leaning right
    assert CartPoleExpert()(np.array([0, 0, -0.1, 0], np.float32)) == 0


def test_the_pendulum_expert_swings_up_and_balances():
    returns = evaluate(ExpertPolicy(PendulumExpert()), "pendulum", range(5))
    assert returns.mean() > -250, returns


def test_the_cartpole_expert_balances_every_episode():
    returns = evaluate(ExpertPolicy(CartPoleExpert()), "cartpole", range(5))
    assert returns.tolist() == [500.0] * 5
