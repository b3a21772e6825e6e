"""Models, cases and timed callables shared by the benchmarks, their conftest and the report.

Every case exists twice, once per implementation: ``impl="mlx"`` runs ``ncps_mlx`` and
``impl="torch"`` runs the reference ``ncps==1.0.1`` on PyTorch, so speed-ups come from one
run on one machine. A runner is a zero-argument callable that performs one timed call; the
mlx runners end in ``mx.eval`` because MLX is lazy (the controller's returns NumPy arrays,
already computed).
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import mlx.core as mx
import numpy as np

INPUT_SIZE = 16
BATCH = 32
SEQ_LEN = 128
LEARNING_RATE = 1e-3
# One step at batch 1: step1 through ncps_mlx.Controller (a controller's call), step1_graph
# through make_predict(frozen=True) (MLX's graph and evaluation).
STEP_MODES = ("step1", "step1_graph")
MODES = ("train", "inference", *STEP_MODES)
# The matrix products of one train step alone, to split its time (see `matmul_shapes`).
MATMULS = "matmuls"
# ncps_mlx's train step against torch's fused nn.LSTM of the same sizes (a bar to reach:
# a CfC does more per step than an LSTM).
VERSUS_LSTM = "train_vs_lstm"
IMPLS = ("mlx", "torch")


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: ``family(input_size, units, **options)`` with
    ``AutoNCP(units, motor)`` as the wiring when ``motor`` is set, else ``units`` fully
    connected. ``seq_len`` and ``batch``, when set, are the model's own workload (the
    papers' shapes) instead of the suite's."""

    family: str
    units: int
    motor: int | None = None
    mixed_memory: bool = False
    input_size: int = INPUT_SIZE
    proj_size: int | None = None
    backbone_units: int | None = None
    backbone_layers: int | None = None
    activation: str | None = None
    seq_len: int | None = None
    batch: int | None = None

    @property
    def output_size(self) -> int:
        if self.proj_size is not None:
            return self.proj_size
        return self.motor if self.motor is not None else self.units

    def options(self) -> dict[str, Any]:
        """The keyword arguments both implementations take, beyond the sizes."""
        names = ("mixed_memory", "proj_size", "backbone_units", "backbone_layers", "activation")
        found = {name: getattr(self, name) for name in names}
        return {name: value for name, value in found.items() if value not in (None, False)}

    def describe(self) -> str:
        units = f"AutoNCP({self.units}, {self.motor})" if self.motor else str(self.units)
        options = "".join(f", {name}={value!r}" for name, value in self.options().items())
        return f"{self.family}({self.input_size}, {units}{options})"


# Insertion order is the order of every table and plot.
MODELS: dict[str, ModelSpec] = {
    "cfc_fc": ModelSpec("CfC", 64),
    "cfc_ncp": ModelSpec("CfC", 64, 8),
    "ltc_ncp": ModelSpec("LTC", 32, 8),
    "cfc_mixed": ModelSpec("CfC", 64, mixed_memory=True),
    "ltc_mixed": ModelSpec("LTC", 32, 8, mixed_memory=True),
    "cfc_ncp128": ModelSpec("CfC", 128, 16),
    "ltc_ncp128": ModelSpec("LTC", 128, 16),
    # The bit-stream XOR models of the CfC paper (Hasani et al. 2022), at its shapes.
    "cfc_xor": ModelSpec(
        "CfC",
        192,
        input_size=1,
        proj_size=1,
        backbone_units=128,
        backbone_layers=1,
        activation="relu",
        seq_len=32,
        batch=128,
    ),  # fmt: skip
    "ltc_xor": ModelSpec("LTC", 64, input_size=1, seq_len=32, batch=256),
}
CORE_MODELS = ("cfc_fc", "cfc_ncp", "ltc_ncp", "cfc_mixed", "ltc_mixed")
LARGE_MODELS = ("cfc_ncp128", "ltc_ncp128")
PAPER_MODELS = ("cfc_xor", "ltc_xor")
SWEEP_MODELS = ("cfc_ncp", "ltc_ncp")
# Dense models, whose matrix products grow with the batch: trained and run over batch.
DENSE_SWEEP_MODELS = ("cfc_fc", "cfc_mixed")
SWEEP_BATCHES = (8, 32, 128)
SWEEP_SEQ_LENS = (32, 128, 512)


@dataclass(frozen=True)
class Case:
    """One workload: a model, a mode and the input shape (batch, seq_len, input_size)."""

    model: str
    mode: str
    batch: int = BATCH
    seq_len: int = SEQ_LEN

    @property
    def group(self) -> str:
        return f"{self.model}-{self.mode}-b{self.batch}-t{self.seq_len}"

    @property
    def id(self) -> str:
        return self.group

    def smoke(self) -> "Case":
        """The same case shrunk so that compiling and running it once takes seconds."""
        if self.mode in STEP_MODES:
            return self
        return replace(self, batch=max(1, self.batch // 8), seq_len=max(2, self.seq_len // 16))


def core_cases() -> list[Case]:
    """The issue's workloads: every model in every mode, the step modes at batch 1 and one
    step."""
    names = (*CORE_MODELS, *LARGE_MODELS, *PAPER_MODELS)
    found = [_own_shape(Case(name, mode)) for name in names for mode in MODES]
    return [replace(c, batch=1, seq_len=1) if c.mode in STEP_MODES else c for c in found]


def _own_shape(case: Case) -> Case:
    spec = MODELS[case.model]
    return replace(case, batch=spec.batch or case.batch, seq_len=spec.seq_len or case.seq_len)


def sweep_cases() -> list[Case]:
    """Inference over batch and sequence length, and training over batch; the
    (BATCH, SEQ_LEN) points are core cases."""
    found = [
        Case(name, "inference", batch, seq_len)
        for name in SWEEP_MODELS
        for batch in SWEEP_BATCHES
        for seq_len in SWEEP_SEQ_LENS
    ]
    found += [Case(name, "train", batch) for name in SWEEP_MODELS for batch in SWEEP_BATCHES]
    found += [
        Case(name, mode, batch)
        for name in DENSE_SWEEP_MODELS
        for mode in ("train", "inference")
        for batch in SWEEP_BATCHES
    ]
    return [case for case in found if (case.batch, case.seq_len) != (BATCH, SEQ_LEN)]


def breakdown_cases() -> list[Case]:
    """The dense models' train-step products (the steps a BLAS dominates), and the fully
    connected CfC's train step against torch's fused LSTM."""
    found = [Case("cfc_fc", MATMULS), Case("cfc_fc", MATMULS, 128), Case("cfc_mixed", MATMULS)]
    found += [_own_shape(Case("cfc_xor", MATMULS))]
    return found + [Case("cfc_fc", VERSUS_LSTM), Case("cfc_fc", VERSUS_LSTM, 128)]


def case_info(case: Case, impl: str) -> dict[str, Any]:
    """What a result needs to be read without its test id (stored as ``extra_info``)."""
    spec = MODELS[case.model]
    info = {"model": case.model, "mode": case.mode, "impl": impl, "batch": case.batch}
    info.update(seq_len=case.seq_len, input_size=spec.input_size, units=spec.units)
    info.update(motor=spec.motor, mixed_memory=spec.mixed_memory, description=spec.describe())
    return info


def build_mlx(spec: ModelSpec) -> Any:
    from ncps_mlx import LTC, CfC
    from ncps_mlx.wirings import AutoNCP

    units = AutoNCP(spec.units, spec.motor) if spec.motor else spec.units
    family = CfC if spec.family == "CfC" else LTC
    return family(spec.input_size, units, **spec.options())


def build_torch(spec: ModelSpec) -> Any:
    import ncps.torch as nt
    import ncps.wirings as nw

    units = nw.AutoNCP(spec.units, spec.motor) if spec.motor else spec.units
    family = nt.CfC if spec.family == "CfC" else nt.LTC
    return family(spec.input_size, units, **spec.options())


def make_data(case: Case, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (batch, seq_len, input_size) and regression targets, fixed by a seed."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.batch, case.seq_len, spec.input_size), dtype=np.float32)
    y = rng.standard_normal((case.batch, case.seq_len, spec.output_size), dtype=np.float32)
    return x, y


def matmul_shapes(model: Any, batch: int, seq_len: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of every matrix product in one train step of a fully connected CfC
    (with its mixed-memory LSTM and output projection, if any).

    A product hoisted out of the time loop (an input projection, the output projection)
    runs once over all steps; backward, it needs its weight's gradient and, for the
    output projection, its input's. Each product inside the time loop runs forward and,
    backward, once for the gradient of its input and once for that of its weight.
    """
    from ncps_mlx.cells import CfCCell

    cell = model.rnn_cell
    if not isinstance(cell, CfCCell):
        raise ValueError(f"matmul_shapes: only a fully connected CfC, not {model!r}")
    heads = len(cell.head_names) * cell.hidden_size
    widths = [cell.backbone_units] * len(cell.backbone) + [heads]
    first, tokens, size = widths[0], batch * seq_len, cell.input_size
    hoisted = [(tokens, size, first), (size, tokens, first)]
    loop = [(batch, cell.hidden_size, first)]
    loop += [(batch, k, n) for k, n in zip(widths[:-1], widths[1:], strict=True)]
    if model.mixed_memory:
        gates = 4 * cell.hidden_size
        hoisted += [(tokens, size, gates), (size, tokens, gates)]
        loop += [(batch, cell.hidden_size, gates)]
    if model.proj_size is not None:
        n, p = cell.hidden_size, model.proj_size
        hoisted += [(tokens, n, p), (tokens, p, n), (p, tokens, n)]
    shapes = list(hoisted)
    for m, k, n in loop:
        shapes += [(m, k, n), (m, n, k), (k, m, n)] * seq_len
    return shapes


def _matmul_operands(case: Case, spec: ModelSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    shapes = matmul_shapes(build_mlx(spec), case.batch, case.seq_len)
    made = {
        shape: (
            rng.standard_normal(shape[:2], np.float32),
            rng.standard_normal(shape[1:], np.float32),
        )
        for shape in set(shapes)
    }
    return [made[shape] for shape in shapes]


def mlx_runner(case: Case) -> Callable[[], Any]:
    """One timed ncps_mlx call of ``case`` (built fresh: compiling happens on first call)."""
    import mlx.nn as nn
    import mlx.optimizers as optim

    from ncps_mlx import Controller
    from ncps_mlx.training import make_predict, make_train_step

    spec = MODELS[case.model]
    mx.random.seed(0)
    if case.mode == MATMULS:
        # Not compiled: the compiler would merge the repeated identical products.
        operands = [tuple(mx.array(a) for a in pair) for pair in _matmul_operands(case, spec)]
        mx.eval(operands)
        return _mlx_call(lambda: [a @ b for a, b in operands])
    model = build_mlx(spec)
    x, y = (mx.array(a) for a in make_data(case, spec))
    if case.mode in ("train", VERSUS_LSTM):
        step = make_train_step(model, optim.Adam(learning_rate=LEARNING_RATE), nn.losses.mse_loss)
        return _mlx_call(lambda: step(x, y))
    if case.mode == "inference":
        predict = make_predict(model)
        return _mlx_call(lambda: predict(x))
    if case.mode == "step1":
        controller = Controller(model)
        inputs = np.array(x[:, 0])
        return lambda: controller(inputs)
    # Trained weights: the frozen call derives them once, not per call.
    predict = make_predict(model, frozen=True)
    zeros = mx.zeros((1, model.state_size))
    carried = {"hx": (zeros, zeros) if spec.mixed_memory else zeros}

    def step1_graph() -> Any:
        out, carried["hx"] = predict(x[:, :1], carried["hx"])
        return out, carried["hx"]

    return _mlx_call(step1_graph)


def _mlx_call(call: Callable[[], Any]) -> Callable[[], Any]:
    # mx.eval returns once the outputs are computed. An mx.synchronize after it would add
    # a second round trip to the stream's worker thread (about 45 us per call on the
    # 2-core machine, a quarter of a one-step call) that no caller of the model pays.
    def run() -> Any:
        out = call()
        mx.eval(out)
        return out

    return run


def torch_runner(case: Case) -> Callable[[], Any]:
    """One timed reference call of ``case``; inference and the step modes run under no_grad."""
    import torch

    spec = MODELS[case.model]
    if case.mode == MATMULS:
        operands = [tuple(map(torch.from_numpy, pair)) for pair in _matmul_operands(case, spec)]
        return torch.no_grad()(lambda: [a @ b for a, b in operands])
    torch.manual_seed(0)
    if case.mode == VERSUS_LSTM:  # outputs (B, T, units): the CfC's targets fit
        model = torch.nn.LSTM(spec.input_size, spec.units, batch_first=True)
    else:
        model = build_torch(spec)
    x, y = (torch.from_numpy(a) for a in make_data(case, spec))
    if case.mode in ("train", VERSUS_LSTM):
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        loss_fn = torch.nn.MSELoss()

        def train() -> Any:
            optimizer.zero_grad()
            loss = loss_fn(model(x)[0], y)
            loss.backward()
            optimizer.step()
            return loss

        return train
    model.eval()
    if case.mode == "inference":
        return torch.no_grad()(lambda: model(x))
    carried: dict[str, Any] = {"hx": None}

    @torch.no_grad()
    def step1() -> Any:
        out, carried["hx"] = model(x[:, :1], carried["hx"])
        return out

    return step1


def torch_saved_bytes(case: Case) -> int:
    """Bytes the reference's forward pass keeps for backward in a ``train`` case: every
    distinct storage autograd saves, a lower bound of its peak memory (torch reports no
    peak on the CPU)."""
    import torch

    spec = MODELS[case.model]
    torch.manual_seed(0)
    model = build_torch(spec)
    x, y = (torch.from_numpy(a) for a in make_data(case, spec))
    saved: dict[int, int] = {}

    def keep(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        torch.nn.functional.mse_loss(model(x)[0], y)
    return sum(saved.values())


def runner(case: Case, impl: str) -> Callable[[], Any]:
    return mlx_runner(case) if impl == "mlx" else torch_runner(case)


def mlx_peak_memory(run: Callable[[], Any]) -> int | None:
    """Peak bytes MLX allocates during one call of ``run`` (None if MLX cannot tell)."""
    if not hasattr(mx, "reset_peak_memory"):
        return None
    mx.reset_peak_memory()
    run()
    return int(mx.get_peak_memory())
