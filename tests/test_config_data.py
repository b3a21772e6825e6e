"""Run configs: each data source's problems (an .npz file, a generated task, a UEA set),
the model and output checks that need particular data, and what the builders make of a
resolved config (the data split, a wired model, the schedules, early stopping)."""

import copy
import io
import zipfile

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import datasets
from ncps_mlx.config import (
    ConfigError,
    build_callbacks,
    build_data,
    build_model,
    build_optimizer,
    validate_config,
)
from ncps_mlx.training import EarlyStopping
from ncps_mlx.wirings import NCP

BASE = {
    "seed": 0,
    "data": {"name": "sine_waves", "options": {"num_sequences": 8, "seq_len": 6}},
    "model": {"type": "CfC", "units": 4, "backbone_units": 8},
    "training": {"epochs": 2, "batch_size": 4, "learning_rate": 0.01},
    "output": {"dir": "run", "progress": False},
}

RNG = np.random.default_rng(0)
X = RNG.normal(size=(10, 5, 3)).astype(np.float32)
LABELS = np.arange(10) % 3  # three classes, each present


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output.dir and data.path are relative


def config(data=None, model=None, training=None, output=None):
    """BASE with whole sections replaced."""
    raw = copy.deepcopy(BASE)
    for name, section in (("data", data), ("model", model), ("training", training)):
        if section is not None:
            raw[name] = section
    if output is not None:
        raw["output"] = output
    return raw


def model_with(**keys):
    """BASE's model with keys added (None removes one)."""
    section = {**BASE["model"], **keys}
    return {key: value for key, value in section.items() if value is not None}


def problems_of(raw, tmp_path):
    with pytest.raises(ConfigError) as caught:
        validate_config(raw, base_dir=tmp_path)
    return caught.value.problems


def npz(tmp_path, **arrays):
    """An .npz file of ``arrays``, as the [data] section that reads it."""
    np.savez(tmp_path / "d.npz", **arrays)
    return {"path": "d.npz"}


# -- an .npz file ---------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_archive_is_named(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    (problem,) = problems_of(config(data={"path": "d.npz"}), tmp_path)
    assert problem == (
        f"data.path: {str(tmp_path / 'd.npz')!r} is not a readable .npz file "
        "(File is not a zip file); write it with numpy.savez"
    )


def test_an_npy_format_it_cannot_read_from_the_header_is_refused(tmp_path):
    member = io.BytesIO()
    np.lib.format.write_array(member, X, version=(3, 0))
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    (problem,) = problems_of(config(data={"path": "d.npz"}), tmp_path)
    assert "(npy format (3, 0) of x.npy is not supported)" in problem


@pytest.mark.parametrize(
    "arrays, expected",
    [
        (
            {"x": X, "y": LABELS, "labels": LABELS},
            [
                "data.path: the file has an unknown array 'labels'; remove it; allowed arrays: "
                "x, y, timespans, mask, classes, val_x, val_y, val_timespans, val_mask"
            ],
        ),
        (
            {"x": X, "y": LABELS, "classes": np.array(["a", None, 3], dtype=object)},
            [
                "data.path: the array 'classes' holds Python objects; save numbers, booleans "
                "or strings"
            ],
        ),
        ({"x": X}, ["data.path: the file lacks x or y; save both x and y"]),
        (
            {"x": X, "y": LABELS, "val_x": X},
            ["data.path: the file lacks val_x or val_y; save both val_x and val_y"],
        ),
        (
            {"x": np.zeros((10, 5)), "y": LABELS},
            [
                "data.path: x is float64 (10, 5); x must be floats of shape "
                "(samples, time, features)"
            ],
        ),
        (
            {"x": X.astype(np.int32), "y": LABELS},
            [
                "data.path: x is int32 (10, 5, 3); x must be floats of shape "
                "(samples, time, features)"
            ],
        ),
        (
            {"x": X, "y": np.zeros(10, np.float32)},
            [
                "data.path: y is float32 (10,), which does not fit x (10, 5, 3); y must be "
                "(10,) or (10, 5) int labels, or (10, O) or (10, 5, O) floats"
            ],
        ),
        (
            {"x": X, "y": np.arange(9)},
            [
                "data.path: y is int64 (9,), which does not fit x (10, 5, 3); y must be "
                "(10,) or (10, 5) int labels, or (10, O) or (10, 5, O) floats"
            ],
        ),
        (
            {
                "x": X,
                "y": LABELS,
                "timespans": np.ones(10, np.float32),
                "mask": np.ones((10, 5), np.float32),
            },
            [
                "data.path: timespans is float32 (10,); it must be floats of shape (10, 5)",
                "data.path: mask is float32 (10, 5); it must be booleans of shape (10, 5)",
            ],
        ),
        (
            {"x": X, "y": LABELS, "val_x": X[:4, :, :2], "val_y": LABELS[:4]},
            ["data.path: x has (3,) features but val_x (2,); give both the same features"],
        ),
        (
            {"x": X, "y": LABELS - 1},
            ["data.path: the class labels range over [-1, 1]; use labels that are >= 0"],
        ),
        (
            {"x": X, "y": LABELS, "classes": np.array(["a", "b"])},
            [
                "data.path: the class labels range over [0, 2]; use labels below 2 "
                "(the length of classes)"
            ],
        ),
        (
            # The validation labels are checked with the training ones.
            {"x": X, "y": LABELS, "val_x": X[:4], "val_y": np.array([0, 1, -2, 2])},
            ["data.path: the class labels range over [-2, 2]; use labels that are >= 0"],
        ),
    ],
    ids=[
        "unknown-array",
        "objects",
        "no-y",
        "val_x-alone",
        "x-2d",
        "x-ints",
        "y-floats-1d",
        "y-too-few",
        "timespans-and-mask",
        "val-features",
        "negative-label",
        "label-beyond-classes",
        "validation-labels",
    ],
)
def test_every_problem_of_an_npz_file_is_reported(tmp_path, arrays, expected):
    assert problems_of(config(data=npz(tmp_path, **arrays)), tmp_path) == expected


def test_keys_an_npz_file_does_not_take_are_refused(tmp_path):
    data = {**npz(tmp_path, x=X, y=LABELS), "options": {"a": 1}, "validation": "test"}
    assert problems_of(config(data=data), tmp_path) == [
        "data.options: only for generated tasks and UEA sets; remove it: an .npz file is used "
        "as it is",
        "data.validation: only for UEA sets; use validation_fraction, or val_x and val_y "
        "arrays in the file",
    ]


def test_validation_arrays_and_a_validation_fraction_exclude_each_other(tmp_path):
    data = {**npz(tmp_path, x=X, y=LABELS, val_x=X[:4], val_y=LABELS[:4])}
    data["validation_fraction"] = 0.5
    assert problems_of(config(data=data), tmp_path) == [
        "data.validation_fraction: the file has val_x and val_y arrays; remove "
        "validation_fraction, or the val_* arrays"
    ]


@pytest.mark.parametrize(
    "fraction, expected",
    [
        (0.01, "0.01 of 10 sequences leaves no validation sequence; raise it, or set 0 to "),
        (0.99, "0.99 of 10 sequences leaves no training sequence; lower it"),
    ],
)
def test_a_fraction_that_empties_a_split_is_refused(tmp_path, fraction, expected):
    data = {**npz(tmp_path, x=X, y=LABELS), "validation_fraction": fraction}
    (problem,) = problems_of(config(data=data), tmp_path)
    assert problem.startswith("data.validation_fraction: " + expected)


def test_named_classes_set_the_output_size_and_label_the_data(tmp_path):
    names = np.array(["low", "mid", "high", "unused"])
    resolved = validate_config(
        config(data=npz(tmp_path, x=X, y=LABELS, classes=names)), base_dir=tmp_path
    )
    info = resolved.data.info
    assert (info.classification, info.output_size, info.per_step) == (True, 4, False)
    assert "proj_size" not in resolved.model.kwargs  # 4 units give the 4 outputs
    train, val = build_data(resolved)
    assert train.classes == val.classes == ("low", "mid", "high", "unused")


def test_float_targets_per_step_with_timespans_and_a_mask(tmp_path):
    y = RNG.normal(size=(10, 5, 2)).astype(np.float32)
    timespans = np.full((10, 5), 0.5, np.float32)
    mask = np.ones((10, 5), bool)
    mask[:, -1] = False
    data = npz(tmp_path, x=X, y=y, timespans=timespans, mask=mask)
    resolved = validate_config(config(data=data), base_dir=tmp_path)
    info = resolved.data.info
    assert (info.classification, info.per_step, info.output_size) == (False, True, 2)
    assert (info.timespans, info.mask, info.train_size, info.val_size) == (True, True, 8, 2)
    assert (resolved.training.loss, resolved.training.metrics) == ("mse", ())
    train, val = build_data(resolved)
    # A seeded split into two parts that keep the file's order and hold every sequence.
    rows = np.concatenate([train.x, val.x])
    assert sorted(map(bytes, rows)) == sorted(map(bytes, X))
    for part in (train, val):
        order = [next(i for i in range(10) if np.array_equal(X[i], row)) for row in part.x]
        assert order == sorted(order)
        np.testing.assert_array_equal(part.y, y[order])
        np.testing.assert_array_equal(part.timespans, timespans[order])
        np.testing.assert_array_equal(part.mask, mask[order])
    again, _ = build_data(resolved)
    np.testing.assert_array_equal(again.x, train.x)


def test_the_files_own_validation_split_is_used_as_it_is(tmp_path):
    val_x, val_y = X[:4] + 1, np.array([2, 1, 0, 2])
    data = npz(tmp_path, x=X, y=LABELS, val_x=val_x, val_y=val_y)
    resolved = validate_config(config(data=data), base_dir=tmp_path)
    assert (resolved.data.validation, resolved.data.info.train_size) == ("file", 10)
    assert resolved.data.info.val_size == 4
    train, val = build_data(resolved)
    np.testing.assert_array_equal(train.x, X)
    np.testing.assert_array_equal(train.y, LABELS)
    np.testing.assert_array_equal(val.x, val_x)
    np.testing.assert_array_equal(val.y, val_y)


def test_a_zero_fraction_trains_on_every_sequence_without_validation(tmp_path):
    data = {**npz(tmp_path, x=X, y=LABELS), "validation_fraction": 0.0}
    resolved = validate_config(config(data=data), base_dir=tmp_path)
    assert (resolved.data.validation, resolved.data.info.val_size) == ("none", 0)
    train, val = build_data(resolved)
    assert val is None
    np.testing.assert_array_equal(train.x, X)


def test_a_missing_source_lists_the_names_to_choose_from(tmp_path):
    (problem,) = problems_of(config(data={"validation_fraction": 0.2}), tmp_path)
    assert problem.startswith("data.name: missing; set name (one of bit_stream_xor, ")
    assert problem.endswith(
        ", JapaneseVowels, OSULeaf, PickupGestureWiimoteZ) or path (an .npz file)"
    )


# -- a generated task ------------------------------------------------------------------


def test_a_generated_task_takes_a_fraction_not_a_validation_split(tmp_path):
    data = {**BASE["data"], "validation": "test"}
    assert problems_of(config(data=data), tmp_path) == [
        "data.validation: only for UEA sets; use validation_fraction for generated data "
        "(0 turns validation off)"
    ]


def test_a_generators_own_refusal_is_reported_under_its_options(tmp_path):
    data = {"name": "sine_waves", "options": {"num_sequences": 8, "seq_len": 1}}
    (problem,) = problems_of(config(data=data), tmp_path)
    assert problem.startswith("data.options.")
    assert "[sine_waves] need num_sequences >= 1 and seq_len >= 2" in problem


def test_a_generated_task_too_small_to_split(tmp_path):
    data = {"name": "sine_waves", "options": {"num_sequences": 1, "seq_len": 6}}
    assert problems_of(config(data=data), tmp_path) == [
        "data.validation_fraction: 0.2 of 1 sequences leaves no validation sequence; raise "
        "it, or set 0 to train without validation"
    ]


# -- a UEA set (its loader replaced: these are the config's checks, not aeon's) --------


def _tiny_uea(name, *, standardize=True):
    x = np.random.default_rng(1).normal(size=(6, 4, 2)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    classes = ("1", "2")
    train = datasets.SequenceData(x, labels, classes=classes)
    return train, datasets.SequenceData(x[:3], labels[:3], classes=classes)


def _refusing_uea(error):
    def load_uea(name, *, standardize=True):
        raise error

    return load_uea


def test_a_uea_set_is_validated_on_its_test_split(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_uea", _tiny_uea)
    resolved = validate_config(config(data={"name": "BasicMotions"}), base_dir=tmp_path)
    assert resolved.data.validation == "test"
    assert (resolved.data.info.train_size, resolved.data.info.val_size) == (6, 3)
    assert resolved.data.info.output_size == 2  # its two classes
    train, test = build_data(resolved)
    np.testing.assert_array_equal(test.x, _tiny_uea("BasicMotions")[1].x)
    assert (len(train), train.classes) == (6, ("1", "2"))
    none = validate_config(config(data={"name": "BasicMotions", "validation": "none"}))
    assert none.data.info.val_size == 0
    assert build_data(none)[1] is None


def test_a_uea_set_takes_no_validation_fraction(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_uea", _tiny_uea)
    data = {"name": "BasicMotions", "validation_fraction": 0.2}
    assert problems_of(config(data=data), tmp_path) == [
        "data.validation_fraction: UEA sets are validated on their test split; remove it "
        'and set validation = "test" or "none"'
    ]


def test_a_uea_sets_options_are_its_loaders_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_uea", _tiny_uea)
    data = {"name": "BasicMotions", "options": {"standardise": False}}
    (problem,) = problems_of(config(data=data), tmp_path)
    assert problem.startswith("data.options.standardise: unknown key; did you mean 'standardize'?")


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            ImportError("No module named 'aeon'"),
            "data.name: BasicMotions is read with aeon, which is not installed; "
            "pip install 'ncps-mlx[data]'",
        ),
        (OSError("the set's files are unreadable"), "data.name: the set's files are unreadable"),
        (ValueError("BasicMotions is not shipped"), "data.name: BasicMotions is not shipped"),
    ],
)
def test_a_uea_set_that_cannot_be_loaded_is_one_problem(tmp_path, monkeypatch, error, expected):
    monkeypatch.setattr(datasets, "load_uea", _refusing_uea(error))
    assert problems_of(config(data={"name": "BasicMotions"}), tmp_path) == [expected]


# -- the model, for the data ------------------------------------------------------------


def _ncp(**keys):
    return {
        "type": "NCP",
        "inter_neurons": 3,
        "command_neurons": 3,
        "motor_neurons": 2,
        "sensory_fanout": 2,
        "inter_fanout": 2,
        "recurrent_command_synapses": 2,
        "motor_fanin": 2,
        **keys,
    }


@pytest.mark.parametrize(
    "model, expected",
    [
        (
            model_with(wiring={"type": "AutoNCP", "units": 8}),
            "model.wiring: both units and wiring are set; keep one of them",
        ),
        (
            {"type": "LTC", "wiring": {"units": 8}},
            "model.wiring.type: missing; add type = ... (one of AutoNCP, NCP, FullyConnected, "
            "Random)",
        ),
        (
            {"type": "LTC", "wiring": {"type": "AutoNP", "units": 8}},
            "model.wiring.type: got 'AutoNP'; did you mean 'AutoNCP'? choose one of AutoNCP, "
            "NCP, FullyConnected, Random",
        ),
        (
            # The data's one output is what the wiring cannot give: the hint says so.
            {"type": "LTC", "wiring": {"type": "AutoNCP", "units": 3}},
            "model.wiring.output_size: [AutoNCP] 'output_size' must be less than units - 2 but "
            "got output_size=1 with units=3; the data needs 1 output (the targets' last axis): "
            "give the wiring more units, or set model.proj_size and a smaller wiring output",
        ),
        (
            {"type": "LTC", "wiring": _ncp(sensory_fanout=9, motor_neurons=1)},
            "model.wiring.sensory_fanout: [NCP] 'sensory_fanout' is 9 but there are only 3 inter "
            "neurons (allowed: 0..3); fix [model.wiring]",
        ),
        (
            {"type": "LTC", "wiring": _ncp()},
            "model: the model has 2 outputs but the data needs 1 output (the targets' last "
            "axis); set model.wiring.motor_neurons = 1 or model.proj_size = 1",
        ),
        (
            {"type": "CfC", "wiring": {"type": "FullyConnected", "units": 6, "output_dim": 2}},
            "model.wiring.output_dim: a CfC outputs all 6 neurons of a FullyConnected wiring, so "
            "output_dim 2 would not be its output size; remove output_dim; model.proj_size "
            "(default: the data's output size) maps the neurons to the outputs",
        ),
        (
            model_with(proj_size=3),
            "model: the model has 3 outputs but the data needs 1 output (the targets' last "
            "axis); set model.proj_size = 1 (or remove it: it defaults to the data's output size)",
        ),
        (
            model_with(backbone_dropout=2.0),
            "model.backbone_dropout: [CfCCell] 'backbone_dropout' must be a number in [0, 1) but "
            "got 2.0",
        ),
    ],
    ids=[
        "units-and-wiring",
        "wiring-type-missing",
        "wiring-type-typo",
        "wiring-output-too-large",
        "wiring-argument",
        "wiring-outputs-mismatch",
        "every-neuron-output",
        "projection-mismatch",
        "constructor-refusal",
    ],
)
def test_model_problems_name_the_key_and_the_fix(tmp_path, model, expected):
    assert problems_of(config(model=model), tmp_path) == [expected]


def test_classes_are_the_outputs_a_classifier_needs(tmp_path):
    data = npz(tmp_path, x=X, y=LABELS)
    assert problems_of(config(data=data, model=model_with(proj_size=2)), tmp_path) == [
        "model: the model has 2 outputs but the data needs 3 outputs (one per class); set "
        "model.proj_size = 3 (or remove it: it defaults to the data's output size)"
    ]


@pytest.mark.parametrize("kind", ["CfC", "LTC"])
def test_a_wired_model_is_built_with_its_wiring_and_the_datas_outputs(tmp_path, kind):
    section = {"type": kind, "wiring": {"type": "AutoNCP", "units": 8, "seed": 3}}
    resolved = validate_config(config(model=section), base_dir=tmp_path)
    # The data's one target became the wiring's output size.
    assert resolved.model.wiring == {"type": "AutoNCP", "units": 8, "seed": 3, "output_size": 1}
    model = build_model(resolved.model, resolved.data.info)
    assert (type(model).__name__, model.input_size, model.output_size) == (kind, 2, 1)
    assert isinstance(model.wiring, NCP) and model.wiring.units == 8
    assert resolved.model.parameters == sum(v.size for _, v in _leaves(model.parameters()))
    y, _ = model(mx.zeros((3, 6, 2)))
    assert y.shape == (3, 6, 1)  # per-step targets: the whole sequence


def _leaves(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


# -- training and output ----------------------------------------------------------------


def test_l2_params_without_l2_is_refused(tmp_path):
    training = {**BASE["training"], "l2_params": ["*kernel*"]}
    assert problems_of(config(training=training), tmp_path) == [
        "training.l2_params: chooses where l2 applies, but l2 is not set; set l2"
    ]


@pytest.mark.parametrize(
    "keys, expected",
    [
        (
            {"optimizer": "sgd", "momentum": 0.9, "optimizer_options": {"momentum": 0.5}},
            "training.optimizer_options.momentum: momentum is set twice; keep one",
        ),
        (
            {"optimizer": "adam", "optimizer_options": {"bettas": [0.9, 0.99]}},
            "training.optimizer_options.bettas: unknown key; did you mean 'betas'? allowed "
            "keys: betas, eps, bias_correction",
        ),
        (
            {"optimizer": "adam", "optimizer_options": {"eps": "x"}},
            "training.optimizer_options.eps: got 'x' (a string); use a number",
        ),
        (
            # Refused by the optimizer itself, which validation builds.
            {"optimizer": "sgd", "optimizer_options": {"nesterov": True}},
            "training.optimizer_options: Nesterov momentum requires a momentum and zero dampening.",
        ),
        (
            {"l2": 0.01, "l2_params": ["nothing*"]},
            "training.l2_params: 'nothing*' matches no trainable parameter; the model's are "
            "rnn_cell.backbone.0.weight, rnn_cell.backbone.0.bias, rnn_cell.ff1.weight, "
            "rnn_cell.ff1.bias, rnn_cell.ff2.weight, rnn_cell.ff2.bias, rnn_cell.time_a.weight, "
            "rnn_cell.time_a.bias, rnn_cell.time_b.weight, rnn_cell.time_b.bias, fc.weight, "
            "fc.bias",
        ),
        (
            {"schedule": {"type": "cosine", "end_learning_rate": 0.5}},
            "training.schedule.end_learning_rate: 0.5 is not below the learning_rate 0.01; "
            "lower it, or the learning_rate",
        ),
        (
            {"schedule": {"type": "exponential", "end_learning_rate": 0.0}},
            "training.schedule.end_learning_rate: an exponential decay never reaches 0; use a "
            "number > 0",
        ),
    ],
    ids=["set-twice", "unknown", "wrong-type", "refused", "l2-glob", "end-rate", "end-zero"],
)
def test_training_problems_name_the_key_and_the_fix(tmp_path, keys, expected):
    training = {**BASE["training"], **keys}
    assert problems_of(config(training=training), tmp_path) == [expected]


def test_optimizer_options_reach_the_optimizer(tmp_path):
    training = {**BASE["training"], "optimizer": "adamw", "optimizer_options": {"eps": 1e-6}}
    resolved = validate_config(config(training=training), base_dir=tmp_path)
    optimizer = build_optimizer(resolved.training)
    assert type(optimizer).__name__ == "AdamW" and optimizer.eps == 1e-6


def _rate_after(optimizer, steps: int) -> float:
    """The learning rate the optimizer applies at its step ``steps`` (0 first)."""
    weights = {"w": mx.zeros(1)}
    for _ in range(steps + 1):
        optimizer.apply_gradients({"w": mx.zeros(1)}, weights)
    return optimizer.learning_rate.item()


@pytest.mark.parametrize(
    "schedule, at, expected",
    [
        ({"type": "cosine", "decay_steps": 10, "end_learning_rate": 0.001}, 10, 0.001),
        ({"type": "cosine", "decay_steps": 10, "end_learning_rate": 0.001}, 5, 0.0055),
        ({"type": "exponential", "decay_steps": 4, "end_learning_rate": 0.0001}, 4, 0.0001),
        ({"type": "exponential", "decay_steps": 4, "end_learning_rate": 0.0001}, 2, 0.001),
        ({"type": "step", "decay_rate": 0.5, "step_size": 3}, 2, 0.01),
        ({"type": "step", "decay_rate": 0.5, "step_size": 3}, 3, 0.005),
        ({"type": "step", "decay_rate": 0.5, "step_size": 3}, 6, 0.0025),
        ({"type": "none"}, 7, 0.01),
    ],
)
def test_the_optimizer_follows_the_schedule(tmp_path, schedule, at, expected):
    training = {**BASE["training"], "schedule": schedule}
    resolved = validate_config(config(training=training), base_dir=tmp_path)
    optimizer = build_optimizer(resolved.training)
    assert _rate_after(optimizer, at) == pytest.approx(expected, rel=1e-5)


def test_early_stopping_is_built_as_configured(tmp_path):
    early = {"monitor": "val_loss", "patience": 4, "min_delta": 0.01, "mode": "min"}
    training = {**BASE["training"], "early_stopping": early}
    resolved = validate_config(config(training=training), base_dir=tmp_path)
    (callback,) = build_callbacks(resolved.training)
    assert isinstance(callback, EarlyStopping)
    assert (callback.monitor, callback.patience, callback.min_delta, callback.mode) == (
        "val_loss",
        4,
        0.01,
        "min",
    )
    assert build_callbacks(validate_config(config()).training) == []


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("a file")
    output = {"dir": "taken", "progress": False}
    assert problems_of(config(output=output), tmp_path) == [
        "output.dir: 'taken' is a file; give a folder (it is created if missing)"
    ]


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    output = {"dir": "run", "resume": True, "overwrite": True, "progress": False}
    assert problems_of(config(output=output), tmp_path) == [
        "output.overwrite: set with output.resume; keep one of them"
    ]


def test_sections_that_are_not_tables_are_each_one_problem(tmp_path):
    raw = {"seed": 0, "data": 3, "model": [1], "training": "fast", "output": 1.5}
    assert problems_of(raw, tmp_path) == [
        "data: got 3 (an int); use a table",
        "model: got [1] (an array); use a table",
        "training: got 'fast' (a string); use a table",
        "output: got 1.5 (a float); use a table",
    ]


def test_a_config_without_a_training_section_trains_with_the_defaults(tmp_path):
    raw = config()
    del raw["training"]
    training = validate_config(raw, base_dir=tmp_path).training
    # 10 epochs of batches of 32: the 6 training sequences are one step per epoch.
    assert (training.epochs, training.batch_size, training.steps_per_epoch) == (10, 32, 1)
    assert (training.optimizer, training.learning_rate, training.loss) == ("adam", 1e-3, "mse")
