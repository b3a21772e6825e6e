"""ncps_mlx.datasets: SequenceData, the generated tasks and the UCR/UEA loaders."""

import socket
import subprocess
import sys

import numpy as np
import pytest

from ncps_mlx import datasets
from ncps_mlx.datasets import SequenceData, uea

GENERATORS = {
    "sine_waves": datasets.sine_waves,
    "irregular_oscillator": datasets.irregular_oscillator,
    "spring_mass_control": datasets.spring_mass_control,
}
FEATURES = {"sine_waves": 2, "irregular_oscillator": 1, "spring_mass_control": 3}


# SequenceData


def test_sequence_data_casts_and_reports_lengths():
    mask = np.array([[True, True, False], [True, False, False]])
    data = SequenceData(np.zeros((2, 3, 1)), np.array([0, 1]), np.ones((2, 3)), mask, ("a", 1))
    assert data.x.dtype == np.float32 and data.timespans.dtype == np.float32
    assert data.classes == ("a", "1")
    assert len(data) == 2 and data.lengths.tolist() == [2, 1]
    assert data.subset(np.array([1])).lengths.tolist() == [1]
    assert SequenceData(np.zeros((2, 3, 1)), np.zeros(2)).lengths.tolist() == [3, 3]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"x": np.zeros((2, 3))}, r"x must have shape \(samples, time, features\)"),
        ({"x": np.zeros((2, 3, 1), int)}, "x must hold floats"),
        ({"y": np.zeros((3, 3, 1))}, "y must have 2 samples"),
        ({"y": np.zeros((2, 4), int)}, "per-step targets y"),
        ({"y": np.zeros((2, 3, 1, 1))}, "y must have 1 to 3 dimensions"),
        ({"y": np.array(["a", "b"])}, "y must hold floats or integer class labels"),
        ({"timespans": np.ones((2, 4))}, r"timespans must have shape \(2, 3\)"),
        ({"mask": np.ones((3, 3), bool)}, r"mask must have shape \(2, 3\)"),
        ({"mask": np.array([[True, False, True]] * 2)}, "True for a prefix"),
        ({"mask": np.array([[True, True, True], [False] * 3])}, "some masks are all False"),
    ],
)
def test_sequence_data_refuses_bad_fields(fields, match):
    arguments = {"x": np.zeros((2, 3, 1)), "y": np.zeros((2, 3, 1))} | fields
    with pytest.raises(ValueError, match=r"\[SequenceData\] .*" + match):
        SequenceData(**arguments)


def test_sequence_data_compares_by_identity():
    data = datasets.sine_waves(2, 4)
    assert data == data and data != datasets.sine_waves(2, 4)
    assert len({data, data}) == 1


# Generated tasks: common contract


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_return_float32_sequence_data_of_the_asked_size(name):
    data = GENERATORS[name](5, 17, seed=3)
    assert isinstance(data, SequenceData)
    assert data.x.shape == (5, 17, FEATURES[name]) and data.y.shape == (5, 17, 1)
    assert data.x.dtype == data.y.dtype == np.float32
    assert data.mask is None and data.classes is None
    assert np.isfinite(data.x).all() and np.isfinite(data.y).all()
    if data.timespans is not None:
        assert data.timespans.dtype == np.float32 and (data.timespans > 0).all()


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_are_deterministic_in_the_seed(name):
    first, again, other = (GENERATORS[name](4, 20, seed=s) for s in (7, 7, 8))
    for field in ("x", "y", "timespans"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.allclose(first.x, other.x)
    assert not np.allclose(first.y, other.y)


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize(("size", "got"), [((0, 10), "got 0, 10"), ((3, 1), "got 3, 1")])
def test_generators_refuse_empty_sizes(name, size, got):
    with pytest.raises(ValueError, match=rf"\[{name}\] need num_sequences >= 1 .*{got}"):
        GENERATORS[name](*size)


@pytest.mark.parametrize(
    ("name", "argument", "value"),
    [
        ("irregular_oscillator", "horizon", -0.1),
        ("irregular_oscillator", "noise", -1.0),
        ("irregular_oscillator", "mean_gap", 0.0),
        ("spring_mass_control", "dt", 0.0),
        ("spring_mass_control", "u_max", -1.0),
        ("spring_mass_control", "noise", -0.5),
        ("spring_mass_control", "hold", 0.5),
    ],
)
def test_generators_refuse_bad_parameters(name, argument, value):
    with pytest.raises(ValueError, match=rf"\[{name}\] need {argument} .*, got {value}"):
        GENERATORS[name](3, 10, **{argument: value})


def test_sine_waves_maps_the_phase_to_its_double():
    data = datasets.sine_waves(3, 30, seed=1)
    t = np.arctan2(data.x[..., 0], data.x[..., 1])
    np.testing.assert_allclose(data.y[..., 0], np.sin(2 * t), atol=1e-5)


# irregular_oscillator


def fit_damped_sinusoid(t, s):
    """Least-squares ``A exp(-d t) sin(w t + phi)`` through noiseless samples: a grid over
    (d, w) in the documented ranges, refined around the best point, with the amplitude and
    phase solved linearly as ``exp(-d t) (a sin(w t) + b cos(w t))``."""

    def residual_and_coefficients(d, w):
        basis = np.exp(-d * t)[:, None] * np.stack([np.sin(w * t), np.cos(w * t)], axis=1)
        coefficients, *_ = np.linalg.lstsq(basis, s, rcond=None)
        return np.sum((basis @ coefficients - s) ** 2), coefficients

    decays, frequencies = np.linspace(0, 0.1, 21), np.linspace(1.5, 3.0, 301)
    for _ in range(6):
        scores = [[residual_and_coefficients(d, w)[0] for w in frequencies] for d in decays]
        i, j = np.unravel_index(np.argmin(scores), (len(decays), len(frequencies)))
        d, w = decays[i], frequencies[j]
        step_d, step_w = decays[1] - decays[0], frequencies[1] - frequencies[0]
        decays = np.linspace(max(d - step_d, 0), d + step_d, 11)
        frequencies = np.linspace(w - step_w, w + step_w, 11)
    _, (a, b) = residual_and_coefficients(d, w)
    return lambda time: np.exp(-d * time) * (a * np.sin(w * time) + b * np.cos(w * time))


def test_irregular_oscillator_targets_are_the_clean_signal_ahead():
    clean = datasets.irregular_oscillator(3, 40, seed=5, noise=0.0, horizon=0.0)
    ahead = datasets.irregular_oscillator(3, 40, seed=5, noise=0.0, horizon=0.7)
    np.testing.assert_array_equal(clean.timespans, ahead.timespans)
    # With no noise and no horizon the target is the observation itself.
    np.testing.assert_array_equal(clean.x, clean.y)
    t = np.cumsum(clean.timespans.astype(np.float64), axis=1)
    for n in range(3):
        # The curve through the observed samples, evaluated 0.7 later, is the target.
        signal = fit_damped_sinusoid(t[n], clean.x[n, :, 0].astype(np.float64))
        np.testing.assert_allclose(ahead.y[n, :, 0], signal(t[n] + 0.7), atol=2e-4)


def test_irregular_oscillator_noise_is_additive_gaussian_on_the_observations():
    clean = datasets.irregular_oscillator(200, 50, seed=2, noise=0.0, horizon=0.0)
    noisy = datasets.irregular_oscillator(200, 50, seed=2, noise=0.2, horizon=0.0)
    np.testing.assert_array_equal(clean.y, noisy.y)
    residual = noisy.x - noisy.y
    assert abs(residual.mean()) < 0.005 and residual.std() == pytest.approx(0.2, rel=0.02)


def test_irregular_oscillator_gaps_are_irregular_and_bounded_below():
    gaps = datasets.irregular_oscillator(100, 100, seed=0, mean_gap=0.5).timespans
    assert gaps.min() >= np.float32(0.05) and gaps.mean() == pytest.approx(0.5, rel=0.03)
    assert gaps.max() > 5 * gaps.mean()


# spring_mass_control


def pid_law(x, dt, kp, ki, kd, u_max):
    position, velocity, reference = (x[..., k].astype(np.float64) for k in range(3))
    error = reference - position
    integral = np.cumsum(error, axis=1) * dt
    return np.clip(kp * error + ki * integral - kd * velocity, -u_max, u_max)


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_spring_mass_control_targets_follow_the_controller_law(noise):
    gains = {"kp": 3.0, "ki": 0.8, "kd": 1.5, "u_max": 2.5}
    data = datasets.spring_mass_control(6, 150, seed=4, dt=0.02, noise=noise, **gains)
    expected = pid_law(data.x, 0.02, **gains)
    np.testing.assert_allclose(data.y[..., 0], expected, atol=1e-4)
    np.testing.assert_array_equal(data.timespans, np.float32(0.02))
    assert (np.abs(data.y) == np.float32(2.5)).any()  # the actuator limit is reached


def test_spring_mass_control_plant_obeys_its_dynamics():
    data = datasets.spring_mass_control(4, 300, seed=1, dt=0.01)
    position, velocity, reference = (data.x[..., k].astype(np.float64) for k in range(3))
    # Semi-implicit Euler: each position moves by the next velocity times dt.
    np.testing.assert_allclose(np.diff(position, axis=1), 0.01 * velocity[:, 1:], atol=1e-5)
    # The reference holds its levels in [-1, 1], and the controller tracks it.
    assert np.abs(reference).max() <= 1 and (np.diff(reference, axis=1) == 0).mean() > 0.9
    assert np.abs(reference - position)[:, -50:].mean() < 0.5 * np.abs(reference).mean()


# UCR/UEA sets shipped in aeon


def test_importing_datasets_does_not_import_aeon():
    code = "import sys, ncps_mlx.datasets; sys.exit('aeon' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unknown_set_is_refused_with_the_shipped_list():
    with pytest.raises(ValueError, match=r"\[load_uea\] need .* 'JapaneseVowels'.*got 'FordA'"):
        datasets.load_uea("FordA")


def test_missing_aeon_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "aeon", None)
    monkeypatch.setitem(sys.modules, "aeon.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'ncps-mlx\[data\]'"):
        datasets.basic_motions()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def japanese_vowels():
    pytest.importorskip("aeon")
    return datasets.japanese_vowels()


def test_japanese_vowels_is_padded_at_the_end_and_masked(japanese_vowels):
    train, test = japanese_vowels
    assert (len(train), len(test)) == (270, 370)
    assert train.x.shape[1:] == test.x.shape[1:] == (29, 12)
    assert train.classes == test.classes == tuple(str(k) for k in range(1, 10))
    assert train.y.dtype == np.int64 and set(train.y) == set(test.y) == set(range(9))
    lengths = np.concatenate([train.lengths, test.lengths])
    assert lengths.min() == 7 and lengths.max() == 29
    for split in (train, test):
        assert not split.x[~split.mask].any()  # padding is zero
        assert split.timespans is None


def test_japanese_vowels_is_standardised_on_the_real_train_steps(japanese_vowels):
    train, test = japanese_vowels
    real = train.x[train.mask].astype(np.float64)
    np.testing.assert_allclose(real.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=0), 1, atol=1e-5)
    # The same transform applied to raw test data: compare with an unstandardised load.
    raw_train, raw_test = datasets.japanese_vowels(standardize=False)
    raw = raw_train.x[raw_train.mask].astype(np.float64)
    expected = (raw_test.x - raw.mean(axis=0)) / raw.std(axis=0)
    np.testing.assert_allclose(test.x[test.mask], expected[test.mask], atol=1e-4)
    np.testing.assert_array_equal(raw_test.mask, test.mask)


def test_basic_motions_is_equal_length_without_a_mask(no_network):
    pytest.importorskip("aeon")
    train, test = datasets.basic_motions()
    assert (len(train), len(test)) == (40, 40)
    assert train.x.shape[1:] == test.x.shape[1:] == (100, 6)
    assert train.mask is None and test.mask is None
    assert train.classes == ("badminton", "running", "standing", "walking")
    assert np.bincount(train.y).tolist() == [10, 10, 10, 10]


@pytest.mark.parametrize("name", uea.SHIPPED)
def test_every_shipped_set_loads_offline(name, no_network):
    pytest.importorskip("aeon")
    train, test = datasets.load_uea(name)
    assert train.x.shape[1:] == test.x.shape[1:] and train.classes == test.classes
    assert train.y.max() < len(train.classes) and test.y.max() < len(train.classes)
    assert np.isfinite(train.x).all() and np.isfinite(test.x).all()


def test_numeric_labels_sort_as_numbers():
    labels = np.array(["10", "2", "1", "9"])
    assert uea._sorted_classes(labels) == ("1", "2", "9", "10")
    assert uea._sorted_classes(np.array(["b", "a", "10"])) == ("10", "a", "b")


def split(lengths, labels, features=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, features)) for n in lengths], np.array(labels)


def test_a_test_label_missing_from_train_is_refused():
    with pytest.raises(ValueError, match=r"test label of Toy among the train labels .*\['c'\]"):
        uea._build_splits("Toy", split([3, 3], ["a", "b"]), split([3], ["c"]), True)


def test_missing_values_are_refused():
    train = split([3, 4], ["a", "b"])
    train[0][1][2, 0] = np.nan
    with pytest.raises(ValueError, match=r"Toy has missing values \(NaN\) in its train split"):
        uea._build_splits("Toy", train, split([3], ["a"]), True)


def test_padding_covers_the_longest_series_of_either_split():
    train, test = uea._build_splits("Toy", split([2, 3], ["a", "b"]), split([5], ["b"]), True)
    assert train.x.shape == (2, 5, 2) and test.x.shape == (1, 5, 2)
    assert train.lengths.tolist() == [2, 3] and test.lengths.tolist() == [5]
    assert test.y.tolist() == [1]


def test_a_constant_feature_is_only_centred():
    train = ([np.array([[1.0, 4.0], [3.0, 4.0]])], np.array(["a"]))
    data, _ = uea._build_splits("Toy", train, train, True)
    np.testing.assert_allclose(data.x[0], [[-1.0, 0.0], [1.0, 0.0]])


def test_sequence_data_refuses_non_boolean_masks_and_bad_timespans():
    x = np.zeros((2, 3, 1), np.float32)
    with pytest.raises(ValueError, match="mask must be boolean"):
        SequenceData(x, np.zeros(2, np.int64), mask=np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="timespans must be finite and >= 0"):
        SequenceData(x, np.zeros(2, np.int64), timespans=np.full((2, 3), -1.0))
