"""What a running ``fit`` knows of itself: its history and the state callbacks see."""

from dataclasses import dataclass, field

import mlx.optimizers as optim

from ..rnn import RNN


@dataclass
class History:
    """One row per epoch: ``epoch``, ``loss``, ``val_*``, ``learning_rate``, ``seconds``,
    ``samples_per_s``. ``history["loss"]`` gives a column.

    ``finished_before`` is true when ``fit(resume=True)`` found the run already finished
    and trained nothing.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = ""
    finished_before: bool = False

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.rows if key in row]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Trainer:
    """What callbacks see of a running ``fit``."""

    model: RNN
    optimizer: optim.Optimizer
    epochs: int
    batches_per_epoch: int
    history: History
    rank: int = 0
    world_size: int = 1
    epoch: int = 0
    stop_training: bool = False
    stop_reason: str = ""
    #: Steps of the current epoch done (more than 0 at its start when resumed midway).
    batches_done: int = 0
    #: The epoch of the lowest ``val_loss`` so far, whose weights ``best.safetensors``
    #: holds; 0 without validation data.
    best_epoch: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes checkpoints, logs and progress."""
        return self.rank == 0
