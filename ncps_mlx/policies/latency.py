"""Per-step latency of a policy inside its closed loop, against the reference: the same
weights in ``ncps`` 1.0.1's PyTorch model, stepped the same way.

Both sides act through the same encoding and decoding of the task (see
[`StepperPolicy`][ncps_mlx.policies.StepperPolicy]); the tests check that
[`ReferencePolicy`][ncps_mlx.policies.ReferencePolicy] and
[`ModelPolicy`][ncps_mlx.policies.ModelPolicy] give the same outputs along an episode, so
the timings compare the same function. The reference needs the ``interop`` extra
(``pip install 'ncps-mlx[interop]'``: torch and ncps 1.0.1); without it
[`loop_latency`][ncps_mlx.policies.loop_latency] measures ncps_mlx alone and says why.
"""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from .._checks import check_int
from ..errors import StateDictError
from ..interop import to_ncps_state_dict
from ..rnn import RNN
from .loop import rollout
from .policy import ModelPolicy, Policy, check_model_fits
from .tasks import Task, get_task

_OWNER = "loop_latency"
WARMUP_STEPS = 20
"""Untimed policy calls before the timed episodes: the first calls build caches."""
REFERENCE_THREADS = 1
"""torch's intra-op threads while the reference is timed (see
[`loop_latency`][ncps_mlx.policies.loop_latency])."""
# The constructor arguments ncps 1.0.1's layers take beyond the sizes; the rest of an
# ncps_mlx config (strict_wiring, the LTC's solver and proj_size) has no reference
# equivalent unless it is at its default.
_REFERENCE_OPTIONS = {
    "CfC": (
        "proj_size", "return_sequences", "batch_first", "mixed_memory", "mode", "activation",
        "backbone_units", "backbone_layers", "backbone_dropout",
    ),
    "LTC": (
        "return_sequences", "batch_first", "mixed_memory", "input_mapping", "output_mapping",
        "ode_unfolds", "epsilon", "implicit_param_constraints",
    ),
}  # fmt: skip
_WITHOUT_REFERENCE = {
    "CfC": {"strict_wiring": False},
    "LTC": {"solver": "semi_implicit", "proj_size": None},
}


def require_reference() -> tuple[Any, Any, Any]:
    """Import torch, ``ncps.torch`` and ``ncps.wirings``, or say how to install them.

    Returns:
        ``(torch, ncps.torch, ncps.wirings)``.

    Raises:
        ImportError: torch or ncps is not installed; the message says how to install them.
    """
    try:
        import ncps.torch as reference_layers
        import ncps.wirings as reference_wirings
        import torch
    except ImportError as error:
        raise ImportError(
            f"the reference needs torch and ncps 1.0.1: pip install 'ncps-mlx[interop]' ({error})"
        ) from error
    return torch, reference_layers, reference_wirings


def reference_model(model: RNN) -> Any:
    """``ncps`` 1.0.1's PyTorch CfC or LTC with ``model``'s wiring and weights, in
    evaluation mode (float32).

    The layer is built from ``model.get_config()`` (the wiring from its class and
    arguments, or its matrices for a plain ``Wiring``) and loads
    [`to_ncps_state_dict(model)`][ncps_mlx.interop.to_ncps_state_dict] strictly.

    Raises:
        ImportError: torch or ncps is not installed.
        ValueError: The model has no reference equivalent: a baseline or a cell of your
            own, ``strict_wiring``, an LTC with another solver or with ``proj_size``, or a
            wiring the reference builds otherwise.
    """
    torch, layers, wirings = require_reference()
    config = model.get_config()
    name = config.get("class_name")
    if name not in _REFERENCE_OPTIONS:
        raise ValueError(
            f"[reference_model] ncps 1.0.1 has CfC and LTC layers only, not a "
            f"{type(model.rnn_cell).__name__} (an ncps_mlx {name})"
        )
    for option, default in _WITHOUT_REFERENCE[name].items():
        if config.get(option, default) != default:
            raise ValueError(
                f"[reference_model] ncps 1.0.1's {name} has no {option}={config[option]!r} "
                f"(only the default, {default!r})"
            )
    units = config["units"]
    wiring = _reference_wiring(units, wirings) if isinstance(units, dict) else None
    options = {key: config[key] for key in _REFERENCE_OPTIONS[name] if key in config}
    layer = getattr(layers, name)(config["input_size"], wiring or units, **options)
    if wiring is not None:
        _check_same_wiring(model, wiring)
    state = {key: torch.from_numpy(np.array(v)) for key, v in to_ncps_state_dict(model).items()}
    layer.load_state_dict(state)
    return layer.eval()


def _reference_wiring(config: dict[str, Any], wirings: Any) -> Any:
    """The reference's wiring of an ncps_mlx wiring config (built by its layer)."""
    args = dict(config)
    name = args.pop("class_name")
    args.pop("input_dim", None)
    if name == "Wiring":  # its matrices: ncps reads the same keys
        return wirings.Wiring.from_config(config)
    if not hasattr(wirings, name):
        raise ValueError(f"[reference_model] ncps 1.0.1 has no {name} wiring")
    return getattr(wirings, name)(**args)


def _check_same_wiring(model: RNN, wiring: Any) -> None:
    """Both wirings have the same synapses (the generators are ports: same seed, same
    wiring; checked, not assumed)."""
    ours = model.wiring
    same = np.array_equal(ours.adjacency_matrix, wiring.adjacency_matrix) and np.array_equal(
        ours.sensory_adjacency_matrix, wiring.sensory_adjacency_matrix
    )
    if not same:
        raise ValueError(
            f"[reference_model] ncps 1.0.1 built another {type(ours).__name__} from the same "
            "arguments: its synapses differ from the model's"
        )


class ReferencePolicy:
    """The reference (an ``ncps`` 1.0.1 PyTorch CfC or LTC) acting on a task: a
    [`Policy`][ncps_mlx.policies.Policy] that encodes and decodes like
    [`StepperPolicy`][ncps_mlx.policies.StepperPolicy].

    Each call runs ``torch_model(x, hx, timespans)`` on one observation, ``(1, 1,
    features)``, with the elapsed time ``(1, 1)`` and the state carried from the previous
    call, under ``torch.no_grad()``.

    Args:
        task (str | Task): The task it acts on.
        torch_model: An ``ncps.torch.CfC`` or ``LTC`` reading the task's observations
            (e.g. from [`reference_model`][ncps_mlx.policies.reference_model]).
    """

    def __init__(self, task: "str | Task", torch_model: Any):
        torch, _, _ = require_reference()
        self.task = get_task(task)
        self.model = torch_model.eval()
        self._torch = torch
        self._state: Any = None

    def reset(self) -> None:
        """Start from the zero state."""
        self._state = None

    def __call__(self, observation: np.ndarray, timespan: float = 1.0) -> Any:
        """The action for an observation ``timespan`` steps after the previous one."""
        return self.task.decode(self.output(observation, timespan))

    def output(self, observation: np.ndarray, timespan: float = 1.0) -> np.ndarray:
        """The model's raw output (logits, or the scaled action) for an observation."""
        torch = self._torch
        x = torch.from_numpy(self.task.encode(observation)).reshape(1, 1, -1)
        with torch.no_grad():
            y, self._state = self.model(x, self._state, torch.full((1, 1), float(timespan)))
        return y.numpy().reshape(-1)


@dataclass(frozen=True)
class LoopTiming:
    """One policy's figures in its closed loop.

    Attributes:
        name: What acted: ``"ncps_mlx"`` or ``"ncps 1.0.1 (torch)"``.
        calls: The timed policy calls.
        median_us: The median time of a policy call (encoding, the step and decoding;
            the environment's step excluded), in microseconds.
        p90_us: Its 90th percentile, in microseconds.
        episodes: The full episodes run.
        rollouts_per_second: Full episodes per second, environment included.
        steps_per_second: Environment steps per second of the whole loop, the policy
            included.
        threads: What computed the step: the calling thread (the fused kernels) or MLX's
            worker thread for ncps_mlx; torch's intra-op threads for the reference.
    """

    name: str
    calls: int
    median_us: float
    p90_us: float
    episodes: int
    rollouts_per_second: float
    steps_per_second: float
    threads: str


@dataclass(frozen=True)
class LoopLatency:
    """What [`loop_latency`][ncps_mlx.policies.loop_latency] measured.

    Attributes:
        task: The task's name.
        model: The model (its class and size).
        ncps_mlx: The [`ModelPolicy`][ncps_mlx.policies.ModelPolicy]'s figures.
        reference: The [`ReferencePolicy`][ncps_mlx.policies.ReferencePolicy]'s, or
            ``None`` when it could not be measured.
        reference_missing: Why the reference was not measured, else ``None``.
        env_step_us: The median time of one environment step, in microseconds.
        env_steps_per_second: Steps per second of the environment alone (its steps in
            the timed episodes over the time they took).
        seed: The first episode's seed (then seed + 1, ...).
    """

    task: str
    model: str
    ncps_mlx: LoopTiming
    reference: LoopTiming | None
    reference_missing: str | None
    env_step_us: float
    env_steps_per_second: float
    seed: int

    @property
    def speedup(self) -> float | None:
        """The reference's median call time over ncps_mlx's (above 1: ncps_mlx is
        faster), or ``None`` without the reference."""
        if self.reference is None:
            return None
        return self.reference.median_us / self.ncps_mlx.median_us

    def markdown(self) -> str:
        """The table: per policy, median and p90 microseconds per call, rollouts and
        loop steps per second, threads; with the environment's own rate below it."""
        lines = [
            "| policy | median µs/call | p90 µs/call | rollouts/s | loop steps/s | threads |",
            "|---|---|---|---|---|---|",
        ]
        for timing in (self.ncps_mlx, self.reference):
            if timing is not None:
                lines.append(
                    f"| {timing.name} | {timing.median_us:.1f} | {timing.p90_us:.1f} "
                    f"| {timing.rollouts_per_second:.1f} | {timing.steps_per_second:.0f} "
                    f"| {timing.threads} |"
                )
        notes = [
            f"{self.task}, {self.model}: the environment alone steps in {self.env_step_us:.1f} "
            f"µs (median; {self.env_steps_per_second:.0f} steps/s)."
        ]
        if self.speedup is not None:
            notes.append(f"Speed-up of a policy call (reference / ncps_mlx): {self.speedup:.2f}x.")
        else:
            notes.append(f"Reference not measured: {self.reference_missing}.")
        return "\n".join(lines) + "\n\n" + " ".join(notes)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable."""
        return {
            "task": self.task,
            "model": self.model,
            "seed": self.seed,
            "ncps_mlx": vars(self.ncps_mlx),
            "reference": None if self.reference is None else vars(self.reference),
            "reference_missing": self.reference_missing,
            "env_step_us": self.env_step_us,
            "env_steps_per_second": self.env_steps_per_second,
            "speedup": self.speedup,
        }


class _TimedPolicy:
    """A policy whose calls are timed (perf_counter around each call)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.seconds: list[float] = []

    def reset(self) -> None:
        self.policy.reset()

    def __call__(self, observation: np.ndarray, timespan: float = 1.0) -> Any:
        start = time.perf_counter()
        action = self.policy(observation, timespan)
        self.seconds.append(time.perf_counter() - start)
        return action


class _TimedEnv:
    """An environment whose steps are timed."""

    def __init__(self, env: Any):
        self.env = env
        self.seconds: list[float] = []

    def reset(self, **options: Any) -> Any:
        return self.env.reset(**options)

    def step(self, action: Any) -> Any:
        start = time.perf_counter()
        result = self.env.step(action)
        self.seconds.append(time.perf_counter() - start)
        return result


class _Loop:
    """One side's timed episodes."""

    def __init__(self, name: str, policy: Policy, threads: str, env: Any):
        self.name, self.threads = name, threads
        self.policy, self.env = _TimedPolicy(policy), _TimedEnv(env)
        self.episodes, self.steps, self.seconds = 0, 0, 0.0

    def run(self, task: Task, seed: int) -> None:
        start = time.perf_counter()
        episode = rollout(self.policy, task, seed, env=self.env)
        self.seconds += time.perf_counter() - start
        self.episodes, self.steps = self.episodes + 1, self.steps + len(episode)

    def timing(self) -> LoopTiming:
        calls = np.asarray(self.policy.seconds) * 1e6
        return LoopTiming(
            name=self.name,
            calls=len(calls),
            median_us=float(np.median(calls)),
            p90_us=float(np.percentile(calls, 90)),
            episodes=self.episodes,
            rollouts_per_second=self.episodes / self.seconds,
            steps_per_second=self.steps / self.seconds,
            threads=self.threads,
        )


@contextlib.contextmanager
def _torch_threads(torch: Any, count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` in the body, then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _reference_side(model: RNN, task: Task) -> tuple[Policy | None, Any, str | None]:
    """``(policy, torch, None)``, or ``(None, None, why)`` when the reference cannot run."""
    try:
        torch, _, _ = require_reference()
        policy = ReferencePolicy(task, reference_model(model))
    except (ImportError, ValueError, StateDictError) as error:
        return None, None, str(error).splitlines()[0]
    return policy, torch, None


def _describe(model: RNN) -> str:
    """``CfC over AutoNCP(19)``, or ``GRUBaselineCell of 18 units``."""
    wiring = getattr(model, "wiring", None)
    if wiring is not None:
        return f"{type(model).__name__} over {type(wiring).__name__}({wiring.units})"
    return f"{type(model.rnn_cell).__name__} of {model.state_size} units"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def loop_latency(
    model: RNN, task: "str | Task", *, steps: int = 2000, seed: int = 0
) -> LoopLatency:
    """Time each policy call inside real closed-loop episodes of ``task``, for the
    ncps_mlx [`ModelPolicy`][ncps_mlx.policies.ModelPolicy] and for the reference.

    The reference is the same weights in ``ncps`` 1.0.1's PyTorch model
    ([`reference_model`][ncps_mlx.policies.reference_model]) acting as a
    [`ReferencePolicy`][ncps_mlx.policies.ReferencePolicy]. Full clean episodes from
    ``seed`` on (seed, seed + 1, ...) run until each side has made at least ``steps``
    policy calls, the two sides taking turns episode by episode so that a change of the
    machine's load touches both. ``time.perf_counter`` brackets every policy call
    (encoding, the step and decoding; the environment's step excluded) and every
    environment step; each side first makes ``WARMUP_STEPS`` (20) untimed
    calls.

    Threads: the [`Controller`][ncps_mlx.Controller] runs a step on the fused kernels
    directly on the calling thread (one thread, no hand-over; MLX's worker thread where
    it falls back to MLX's graph, which the timing says). The reference runs with
    ``torch.set_num_threads(1)`` while it is timed (restored afterwards): a step of a few
    dozen neurons gains nothing from more threads (its median is the same with one and
    with two), so the count is stated rather than left to the machine, and both sides
    compute on one core.

    Without torch or ncps (the ``interop`` extra) or for a model the reference has no
    equivalent of (a baseline), the reference's figures are ``None`` and
    ``reference_missing`` says why; nothing fails.

    Args:
        model: A policy model of ``task``.
        task: The task, or its name.
        steps: The least number of timed policy calls per side.
        seed: The first episode's seed.

    Returns:
        The [`LoopLatency`][ncps_mlx.policies.LoopLatency].

    Raises:
        ValueError: The model does not fit the task, or a bad ``steps`` or ``seed``.
        ImportError: Without gymnasium (``pip install 'ncps-mlx[control]'``).
    """
    task = get_task(task)
    check_int(_OWNER, "steps", steps)
    check_int(_OWNER, "seed", seed, low=0)
    check_model_fits(model, task, _OWNER)
    ours = ModelPolicy(model, task)
    how = "calling thread (fused kernels)" if ours.stepper.direct else "MLX graph (worker thread)"
    sides = [_Loop("ncps_mlx", ours, how, task.make_env())]
    reference, torch, missing = _reference_side(model, task)
    if reference is not None:
        name = f"ncps {_version('ncps')} (torch {_version('torch')})"
        threads = f"{REFERENCE_THREADS} torch thread"
        sides.append(_Loop(name, reference, threads, task.make_env()))
    quiet = _torch_threads(torch, REFERENCE_THREADS) if torch else contextlib.nullcontext()
    try:
        with quiet:
            for side in sides:  # warm-up, untimed
                rollout(side.policy.policy, task, seed, env=side.env.env, max_steps=WARMUP_STEPS)
            episode_seed = seed
            while min(len(side.policy.seconds) for side in sides) < steps:
                for side in sides:
                    side.run(task, episode_seed)
                episode_seed += 1
    finally:
        for side in sides:
            side.env.env.close()
    env_seconds = np.concatenate([side.env.seconds for side in sides])
    return LoopLatency(
        task=task.name,
        model=_describe(model),
        ncps_mlx=sides[0].timing(),
        reference=sides[1].timing() if len(sides) > 1 else None,
        reference_missing=missing,
        env_step_us=float(np.median(env_seconds) * 1e6),
        env_steps_per_second=float(len(env_seconds) / env_seconds.sum()),
        seed=seed,
    )
