"""The container every dataset returns and ``fit`` takes."""

from dataclasses import dataclass, fields, replace

import numpy as np

from ..errors import see

_OWNER = "SequenceData"


def _fail(message: str) -> None:
    raise ValueError(f"[{_OWNER}] {message}\n{see('sequence-data')}")


# eq=False: the generated __eq__ and __hash__ would compare and hash the numpy fields,
# which raises; identity equality is the only cheap, well-defined one.
def _per_step(name: str, value: np.ndarray, n: int, t: int) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != (n, t):
        _fail(f"{name} must have shape {(n, t)} to match x but got {value.shape}")
    if name == "timespans":
        if not (np.isfinite(value).all() and (value >= 0).all()):
            _fail("timespans must be finite and >= 0")
        return value.astype(np.float32, copy=False)
    if value.dtype != bool and not np.isin(value, (0, 1)).all():
        _fail(f"mask must be boolean (or 0/1) but holds other values of dtype {value.dtype}")
    mask = value.astype(bool)
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(t)[None, :] < lengths[:, None]):
        _fail("mask must be True for a prefix of each sequence (padding at the end)")
    if lengths.min() == 0:
        _fail("every sequence needs at least one real step; some masks are all False")
    return mask


@dataclass(frozen=True, eq=False)
class SequenceData:
    """Sequences with their targets, batch-first numpy arrays ready for ``fit``.

    Attributes:
        x: Inputs (N, T, F), float32.
        y: Targets: per step (N, T, O) float32 or (N, T) int class labels; per sequence
            (N, O) float32 or (N,) int class labels.
        timespans: Elapsed time before each step (N, T), float32; ``None`` means 1.
        mask: (N, T) bool, ``True`` at real steps. Padding sits at the end of a sequence,
            so a sample's length is its count of ``True``. ``None`` means all steps real.
        classes: Names of the class labels, for classification targets.
    """

    x: np.ndarray
    y: np.ndarray
    timespans: np.ndarray | None = None
    mask: np.ndarray | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x), np.asarray(self.y)
        if x.ndim != 3 or 0 in x.shape:
            _fail(f"x must have shape (samples, time, features) but got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            _fail(f"x must hold floats but has dtype {x.dtype}")
        n, t = x.shape[:2]
        if y.ndim == 0 or y.shape[0] != n:
            _fail(f"y must have {n} samples like x (shape {x.shape}) but has shape {y.shape}")
        per_step = y.ndim == 3 or (y.ndim == 2 and np.issubdtype(y.dtype, np.integer))
        if per_step and y.shape[1] != t:
            _fail(f"per-step targets y {y.shape} must have {t} steps like x {x.shape}")
        if y.ndim > 3:
            _fail(f"y must have 1 to 3 dimensions but has shape {y.shape}")
        object.__setattr__(self, "x", x.astype(np.float32, copy=False))
        if np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float32, copy=False)
        elif not np.issubdtype(y.dtype, np.integer):
            _fail(f"y must hold floats or integer class labels but has dtype {y.dtype}")
        object.__setattr__(self, "y", y)
        for name in ("timespans", "mask"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _per_step(name, getattr(self, name), n, t))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(name) for name in self.classes))

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def lengths(self) -> np.ndarray:
        """True length of each sequence."""
        if self.mask is None:
            return np.full(len(self), self.x.shape[1])
        return self.mask.sum(axis=1)

    def subset(self, indices: np.ndarray | slice) -> "SequenceData":
        """The samples at ``indices`` (any numpy index along the sample axis)."""
        arrays = {
            f.name: getattr(self, f.name)[indices]
            for f in fields(self)
            if f.name != "classes" and getattr(self, f.name) is not None
        }
        return replace(self, **arrays)
