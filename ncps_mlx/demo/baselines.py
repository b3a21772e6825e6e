"""The demo's recurrent baselines: a GRU and an LSTM of the NCP's size, trained the same way.

They are the GRU and LSTM of [`ncps_mlx.baselines`][ncps_mlx.baselines] (MLX's own layers,
`mlx.nn.GRU` and `mlx.nn.LSTM`, run one step at a time as cells of an
[`RNN`][ncps_mlx.RNN]) with the NCP's linear readout, so that the demo's single `fit`
call trains all three: same data, epochs, batches, optimizer, schedule, clipping, seed,
and the weights of the best validation epoch kept. Neither has a timespan input, so each
gets the elapsed time of every step as a second input feature. Their hidden size is the
one whose parameter count is closest to the NCP's. The cells and helpers are re-exported
here under their former names, so code and checkpoints of earlier demos still work.

They run on MLX's graph operations: the fused CPU kernels of `ncps_mlx.kernels` serve the
package's own cells only, so on the CPU a baseline trains several times slower than the
NCP, whatever the architectures' merits; the report says so beside the times.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..baselines import BASELINES as BASELINES
from ..baselines import GRUBaselineCell as GRUBaselineCell
from ..baselines import LSTMBaselineCell as LSTMBaselineCell
from ..baselines import build_baseline as build_baseline
from ..baselines import matched_hidden_size as matched_hidden_size
from ..baselines import with_timespan_feature
from ..costs import parameter_count
from ..datasets import SequenceData
from ..rnn import RNN
from ..training import History
from ..training.fit import LAST_CHECKPOINT
from .task import BASELINES_DIR, Log, score
from .training import fit_best

#: The demo's baselines (names of `BASELINES`), in the report's order.
NAMES = ("gru", "lstm")


def with_gaps(data: SequenceData) -> SequenceData:
    """``data`` with each step's elapsed time as one more input feature, and no timespans."""
    return SequenceData(with_timespan_feature(data.x, data.timespans), data.y, mask=data.mask)


@dataclass
class Baseline:
    """One trained baseline, for the report."""

    name: str
    model: RNN
    hidden_size: int
    history: History
    seconds: float
    resumed: bool = False
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """How the report names the model, e.g. `GRU(24) + linear readout`."""
        return f"{BASELINES[self.name].label}({self.hidden_size}) + linear readout"


def train_baseline(
    name: str,
    splits: dict[str, SequenceData],
    directory: Path,
    epochs: int,
    seed: int,
    parameters: int,
    *,
    progress: bool = True,
    log: Log = print,
    resume: bool = False,
) -> Baseline:
    """Train baseline ``name`` of about ``parameters`` parameters on the demo's ``splits``
    (with their timespans), as the NCP is trained, checkpointing into ``directory``, and
    score it."""
    data = {split: with_gaps(part) for split, part in splits.items()}
    input_size = data["train"].x.shape[-1]
    hidden_size = matched_hidden_size(name, input_size, parameters)
    mx.random.seed(seed)  # after the search, so the weights depend on the seed alone
    model = build_baseline(name, input_size, hidden_size)
    label = BASELINES[name].label
    log(
        f"Baseline: {label}({hidden_size}), {parameter_count(model)} parameters, the time "
        "gaps as a second input, trained the same way ..."
    )
    resumed = resume and (directory / LAST_CHECKPOINT).exists()
    history, seconds = fit_best(
        model,
        data,
        directory,
        epochs,
        seed,
        progress=progress,
        log=log,
        resume=resume,
        name=label,
    )
    scores, _ = score(model, data)
    return Baseline(name, model, hidden_size, history, seconds, resumed, scores)


def train_baselines(
    splits: dict[str, SequenceData],
    out: Path,
    epochs: int,
    seed: int,
    parameters: int,
    *,
    progress: bool = True,
    log: Log = print,
    resume: bool = False,
) -> list[Baseline]:
    """Every baseline of `NAMES`, trained into ``out/baselines/<name>``."""
    return [
        train_baseline(
            name,
            splits,
            out / BASELINES_DIR / name,
            epochs,
            seed,
            parameters,
            progress=progress,
            log=log,
            resume=resume,
        )
        for name in NAMES
    ]
