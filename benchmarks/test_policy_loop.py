"""Per-step latency of a neural circuit policy inside its closed loop (Pendulum-v1): the
CfC-NCP and the LTC-NCP of ``ncps_mlx.policies``, as the ncps_mlx ``ModelPolicy`` and as
the same weights in the reference ``ncps==1.0.1`` model (``ReferencePolicy``).

Each timed round is one policy call (encoding, the step, decoding) on the observation the
environment just returned; the environment's step, and the reset that starts each new
episode, run untimed between rounds (pytest-benchmark's ``setup``). The reference runs
with ``REFERENCE_THREADS`` (1) torch thread, as ``loop_latency`` does. The policies are
untrained: the work of a step does not depend on the weights. Smoke mode
(``--benchmark-disable``) makes one call per case.
"""

from typing import Any

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from ncps_mlx.policies import ModelPolicy, get_task, policy_model  # noqa: E402
from ncps_mlx.policies.latency import (  # noqa: E402
    REFERENCE_THREADS,
    ReferencePolicy,
    reference_model,
)

TASK = "pendulum"
MODELS = {"pendulum_cfc_ncp": "cfc-ncp", "pendulum_ltc_ncp": "ltc-ncp"}
IMPLS = ("mlx", "torch")
MODE = "policy_loop"
ROUNDS = 2000  # ten full episodes
WARMUP_ROUNDS = 20


class ClosedLoop:
    """A task's environment driven by a policy one call at a time: ``observe()`` steps the
    environment with the last action (or starts the next seeded episode) and returns the
    call's arguments; ``act()`` is the policy call."""

    def __init__(self, policy: Any, task: str, seed: int = 0):
        self.policy, self.task, self.seed = policy, get_task(task), seed
        self.env = self.task.make_env()
        self.action: Any = None

    def observe(self) -> tuple[tuple[np.ndarray, float], dict]:
        if self.action is None:
            return self._start()
        observation, _, terminated, truncated, _ = self.env.step(self.action)
        if terminated or truncated:
            return self._start()
        return (np.asarray(observation, np.float32), 1.0), {}

    def act(self, observation: np.ndarray, timespan: float) -> None:
        self.action = self.policy(observation, timespan)

    def _start(self) -> tuple[tuple[np.ndarray, float], dict]:
        observation, _ = self.env.reset(seed=self.seed)
        self.seed += 1
        self.policy.reset()
        return (np.asarray(observation, np.float32), 1.0), {}


def _policy(model_name: str, impl: str) -> Any:
    model = policy_model(MODELS[model_name], TASK, seed=0)
    if impl == "mlx":
        return ModelPolicy(model, TASK)
    pytest.importorskip("torch")
    pytest.importorskip("ncps")
    return ReferencePolicy(TASK, reference_model(model))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_policy_loop(benchmark, smoke, model_name, impl):
    policy = _policy(model_name, impl)
    loop = ClosedLoop(policy, TASK)
    benchmark.group = f"{model_name}-{MODE}"
    benchmark.extra_info.update(
        model=model_name, mode=MODE, impl=impl, batch=1, seq_len=1, task=TASK,
        description=f"{MODELS[model_name]} policy of {TASK}, one call in the closed loop",
    )  # fmt: skip
    torch = None
    if impl == "torch":
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(REFERENCE_THREADS)
        benchmark.extra_info["torch_threads"] = REFERENCE_THREADS
    else:
        benchmark.extra_info["direct"] = policy.stepper.direct
    try:
        benchmark.pedantic(
            loop.act,
            setup=loop.observe,
            rounds=1 if smoke else ROUNDS,
            warmup_rounds=0 if smoke else WARMUP_ROUNDS,
        )
    finally:
        loop.env.close()
        if torch is not None:
            torch.set_num_threads(previous)
    assert loop.action is not None
