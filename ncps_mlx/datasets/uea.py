"""Classification sets of the UCR/UEA archives that ship inside the ``aeon`` package.

``aeon`` is optional (``pip install 'ncps-mlx[data]'``) and imported only when a set is
loaded. Only the copies in aeon's own package data are read: ``aeon`` downloads any set it
cannot find locally, so [`load_uea`][ncps_mlx.datasets.load_uea] accepts the names in `SHIPPED`
alone and checks the files are there before handing aeon the folder to read from.
"""

import os

import numpy as np

from ..errors import see
from ._base import SequenceData

SHIPPED: tuple[str, ...] = (
    "ACSF1",
    "ArrowHead",
    "BasicMotions",
    "GunPoint",
    "ItalyPowerDemand",
    "JapaneseVowels",
    "OSULeaf",
    "PickupGestureWiimoteZ",
)
"""Archive sets found in aeon's package data (checked against aeon 1.6.0)."""

_OWNER = "load_uea"
_SPLITS = ("train", "test")


def load_uea(name: str, *, standardize: bool = True) -> tuple[SequenceData, SequenceData]:
    """Load a UCR/UEA classification set shipped with aeon as ``(train, test)``.

    Series become (N, T, C) float32 arrays. Sets of unequal length are padded with zeros
    at the end to the longest series of either split and get a ``mask``; equal-length
    sets have ``mask=None``. Labels become int64 indices into ``classes``, the distinct
    labels of the train split, sorted numerically when all of them are numbers (so
    ``"10"`` follows ``"9"``) and as strings otherwise.

    Args:
        name: One of `SHIPPED`.
        standardize: Z-score each feature with the mean and standard deviation of the
            train split's real (unpadded) steps, applied to both splits; padding stays
            0. A feature constant over the train split is only centred.

    Returns:
        The train and test splits, each a per-sequence classification
        [`SequenceData`][ncps_mlx.datasets.SequenceData].

    Raises:
        ValueError: ``name`` is not in `SHIPPED`, the data has missing values
            (NaN), or the test split has a label the train split lacks.
        ImportError: aeon is not installed.
        FileNotFoundError: The installed aeon does not ship the set.
    """
    if name not in SHIPPED:
        raise ValueError(
            f"[{_OWNER}] need the name of a set shipped with aeon, one of {SHIPPED}, got {name!r}"
        )
    raw = _read_shipped(name)
    return _build_splits(name, raw["train"], raw["test"], standardize)


def japanese_vowels(**kwargs: bool) -> tuple[SequenceData, SequenceData]:
    """JapaneseVowels: tell 9 speakers apart from 12 LPC cepstrum coefficients.

    270 train and 370 test utterances of 7 to 29 steps (so ``mask`` is set). Keyword
    arguments go to [`load_uea`][ncps_mlx.datasets.load_uea].
    """
    return load_uea("JapaneseVowels", **kwargs)


def basic_motions(**kwargs: bool) -> tuple[SequenceData, SequenceData]:
    """BasicMotions: 4 activities from 6 accelerometer and gyroscope channels.

    40 train and 40 test recordings of 100 steps each. Keyword arguments go to
    [`load_uea`][ncps_mlx.datasets.load_uea].
    """
    return load_uea("BasicMotions", **kwargs)


def _read_shipped(name: str) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Read both splits of ``name`` from aeon's package data, never from the network."""
    try:
        import aeon
        from aeon.datasets import load_classification
    except ImportError as error:
        raise ImportError(
            f"[{_OWNER}] needs the optional dependency aeon: pip install 'ncps-mlx[data]'\n"
            + see("missing-extra")
        ) from error
    folder = os.path.join(os.path.dirname(aeon.__file__), "datasets", "data")
    # aeon downloads whatever it cannot find under `extract_path`; aeon counts a set as
    # present when both files exist, so checking them first rules the download path out.
    for split in _SPLITS:
        path = os.path.join(folder, name, f"{name}_{split.upper()}.ts")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"[{_OWNER}] aeon {aeon.__version__} does not ship {name}: no file {path}"
            )
    raw = {}
    for split in _SPLITS:
        # The flags ask for the original files: older aeon versions default to the
        # truncated "_eq" copy of unequal-length sets such as JapaneseVowels.
        series, labels = load_classification(
            name,
            split=split,
            extract_path=folder,
            load_equal_length=False,
            load_no_missing=False,
        )
        raw[split] = ([np.asarray(s, dtype=np.float64).T for s in series], np.asarray(labels))
    return raw


def _build_splits(
    name: str,
    train: tuple[list[np.ndarray], np.ndarray],
    test: tuple[list[np.ndarray], np.ndarray],
    standardize: bool,
) -> tuple[SequenceData, SequenceData]:
    """Turn ``(series, labels)`` pairs, each series (T_i, C), into padded SequenceData."""
    for split, (series, _) in zip(_SPLITS, (train, test), strict=True):
        if any(np.isnan(s).any() for s in series):
            raise ValueError(
                f"[{_OWNER}] {name} has missing values (NaN) in its {split} split; "
                "they are not imputed"
            )
    classes = _sorted_classes(train[1])
    lengths = [len(s) for series, _ in (train, test) for s in series]
    length = max(lengths)
    # Equal lengths need no mask; SequenceData then treats every step as real.
    ragged = min(lengths) != length
    (x_train, mask_train), (x_test, mask_test) = _pad(train[0], length), _pad(test[0], length)
    if standardize:
        mean, std = _feature_stats(x_train, mask_train)
        x_train = np.where(mask_train[..., None], (x_train - mean) / std, 0.0)
        x_test = np.where(mask_test[..., None], (x_test - mean) / std, 0.0)
    return (
        SequenceData(
            x_train.astype(np.float32),
            _label_indices(name, "train", train[1], classes),
            mask=mask_train if ragged else None,
            classes=classes,
        ),
        SequenceData(
            x_test.astype(np.float32),
            _label_indices(name, "test", test[1], classes),
            mask=mask_test if ragged else None,
            classes=classes,
        ),
    )


def _sorted_classes(labels: np.ndarray) -> tuple[str, ...]:
    """Distinct labels, numerically sorted if they are all numbers, else as strings."""
    unique = np.unique(labels.astype(str))
    try:
        return tuple(sorted(unique.tolist(), key=float))
    except ValueError:
        return tuple(unique.tolist())


def _label_indices(
    name: str, split: str, labels: np.ndarray, classes: tuple[str, ...]
) -> np.ndarray:
    """Each label's position in ``classes``, as int64."""
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(labels.astype(str).tolist()) - index.keys())
    if unknown:
        raise ValueError(
            f"[{_OWNER}] need every {split} label of {name} among the train labels "
            f"{classes}, got {unknown}"
        )
    return np.array([index[label] for label in labels.astype(str)], dtype=np.int64)


def _pad(series: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack (T_i, C) series into zero-padded (N, length, C) plus the (N, length) mask."""
    x = np.zeros((len(series), length, series[0].shape[1]))
    mask = np.zeros((len(series), length), dtype=bool)
    for i, s in enumerate(series):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return x, mask


def _feature_stats(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over the real steps of ``x``."""
    real = x[mask]
    std = real.std(axis=0)
    # A constant feature would divide by zero; centring it is all z-scoring can do.
    return real.mean(axis=0), np.where(std > 0, std, 1.0)
