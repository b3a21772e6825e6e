"""Published training recipes: clipping per tensor and per element, L2 on chosen
parameters, a per-epoch learning-rate decay, binary cross-entropy and accuracy, the
bit-stream XOR data, and the CfC paper's recipe as a run config.

Each option is checked against an evaluation made here by hand (numpy, or the penalty
added to the loss before differentiating), not against the code that implements it.
"""

import copy
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import CfC, cli, config
from ncps_mlx.config import ConfigError, read_config, validate_config
from ncps_mlx.datasets import SequenceData, bit_stream_xor
from ncps_mlx.training import fit, make_train_step
from ncps_mlx.training.losses import LOSSES, METRICS, resolve_loss, resolve_metrics
from ncps_mlx.training.recipes import EpochDecay, decay_per_epoch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bit_stream_xor.toml"
CELL_WEIGHTS = "rnn_cell.*.weight"


def small_model() -> CfC:
    return CfC(3, 6, proj_size=1, return_sequences=False, backbone_units=8, backbone_layers=1)


def small_batch() -> tuple[mx.array, mx.array]:
    return mx.random.normal((8, 5, 3)), mx.random.normal((8, 1))


def flat(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: np.array(value) for name, value in tree_flatten(model.trainable_parameters())}


def hand_gradients(model, x, y, l2=0.0, chosen=()) -> tuple[float, dict[str, np.ndarray]]:
    """The mean squared error and its gradients, with ``l2 * sum(w ** 2)`` over ``chosen``
    added to the loss before differentiating, as the paper's Keras code does."""
    twin = copy.deepcopy(model)

    def loss(m):
        prediction, _ = m(x)
        data = nn.losses.mse_loss(prediction, y)
        weights = dict(tree_flatten(m.trainable_parameters()))
        penalty = sum((mx.sum(weights[name] ** 2) for name in chosen), mx.array(0.0))
        return data + l2 * penalty, data

    (_, data), grads = nn.value_and_grad(twin, loss)(twin)
    return data.item(), {name: np.array(g) for name, g in tree_flatten(grads)}


def stepped(model, x, y, **options) -> tuple[float, dict[str, np.ndarray]]:
    """The loss one compiled step returns and the parameters after it (SGD, rate 1)."""
    loss = make_train_step(model, optim.SGD(learning_rate=1.0), LOSSES["mse"], **options)(x, y)
    return loss.item(), flat(model)


def assert_update(before, after, gradients, atol=1e-6):
    """SGD with rate 1: each parameter moved by minus its (clipped) gradient."""
    assert set(after) == set(gradients)
    for name, gradient in gradients.items():
        np.testing.assert_allclose(after[name], before[name] - gradient, rtol=1e-5, atol=atol)


def norm(array: np.ndarray) -> float:
    return float(np.sqrt(np.sum(array.astype(np.float64) ** 2)))


# Clipping


def test_clip_tensor_norm_clips_each_gradient_by_its_own_norm():
    model = small_model()
    x, y = small_batch()
    before = flat(model)
    _, grads = hand_gradients(model, x, y)
    bound = float(np.median([norm(g) for g in grads.values()]))
    clipped = {name: g * min(1.0, bound / norm(g)) for name, g in grads.items()}
    # The bound splits the tensors: some are scaled down, the others pass unchanged.
    assert 0 < sum(norm(g) > bound for g in grads.values()) < len(grads)
    _, after = stepped(model, x, y, clip_tensor_norm=bound)
    assert_update(before, after, clipped)


def test_clip_value_clips_each_element():
    model = small_model()
    x, y = small_batch()
    before = flat(model)
    _, grads = hand_gradients(model, x, y)
    bound = float(np.median(np.abs(np.concatenate([g.ravel() for g in grads.values()]))))
    _, after = stepped(model, x, y, clip_value=bound)
    assert_update(before, after, {name: np.clip(g, -bound, bound) for name, g in grads.items()})


def test_the_clips_combine_elementwise_then_per_tensor_then_globally():
    model = small_model()
    x, y = small_batch()
    before = flat(model)
    _, grads = hand_gradients(model, x, y)
    value, tensor = 0.05, 0.1
    clipped = {name: np.clip(g, -value, value) for name, g in grads.items()}
    clipped = {name: g * min(1.0, tensor / norm(g)) for name, g in clipped.items()}
    total = np.sqrt(sum(norm(g) ** 2 for g in clipped.values()))
    glob = total / 2  # the global clip acts too
    clipped = {name: g * glob / total for name, g in clipped.items()}
    # numpy scalars too (glob is a float64): the step takes them as Python floats.
    _, after = stepped(
        model, x, y, clip_value=np.float32(value), clip_tensor_norm=tensor, clip_norm=glob
    )
    assert_update(before, after, clipped)
    moved = {name: before[name] - after[name] for name in after}
    assert max(np.abs(g).max() for g in moved.values()) <= value + 1e-6
    assert max(norm(g) for g in moved.values()) <= tensor + 1e-6
    assert np.sqrt(sum(norm(g) ** 2 for g in moved.values())) == pytest.approx(glob, rel=1e-4)


# L2 on chosen parameters


@pytest.mark.parametrize(
    "selection",
    [CELL_WEIGHTS, [CELL_WEIGHTS], lambda name: name.startswith("rnn_cell.") and "weight" in name],
    ids=["glob", "globs", "predicate"],
)
def test_l2_adds_the_penalty_of_the_chosen_parameters_only(selection):
    model = small_model()
    x, y = small_batch()
    before = flat(model)
    chosen = [n for n in before if n.startswith("rnn_cell.") and n.endswith(".weight")]
    assert len(chosen) == 5 and "fc.weight" not in chosen  # backbone, ff1, ff2, time_a, time_b
    l2 = 0.1
    data_loss, penalized = hand_gradients(model, x, y, l2, chosen)
    _, plain = hand_gradients(model, x, y)
    loss, after = stepped(model, x, y, l2=l2, l2_params=selection)
    assert_update(before, after, penalized)
    for name in before:  # the others' gradients are the data's alone
        if name not in chosen:
            np.testing.assert_allclose(penalized[name], plain[name], rtol=0, atol=0)
        else:
            assert not np.allclose(penalized[name], plain[name], rtol=0, atol=1e-4)
    assert loss == pytest.approx(data_loss, rel=1e-5)  # the penalty is not in the loss


def test_l2_without_l2_params_takes_every_trainable_parameter():
    model = small_model()
    x, y = small_batch()
    before = flat(model)
    _, penalized = hand_gradients(model, x, y, 0.05, list(before))
    _, after = stepped(model, x, y, l2=0.05)
    assert_update(before, after, penalized)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"l2": 1e-3, "l2_params": "cell.*"}, "l2_params 'cell.*' matches no trainable parameter"),
        ({"l2": 1e-3, "l2_params": lambda name: False}, "l2_params picks no trainable parameter"),
        ({"l2_params": CELL_WEIGHTS}, "l2_params chooses where l2 applies: set l2 too"),
        ({"l2": 0.0}, "l2 must be a number > 0 or None, got 0.0"),
        ({"clip_tensor_norm": -1.0}, "clip_tensor_norm must be a number > 0 or None, got -1.0"),
        ({"clip_value": float("inf")}, "clip_value must be a number > 0 or None, got inf"),
        ({"clip_norm": True}, "clip_norm must be a number > 0 or None, got True"),
        ({"lr_decay_per_epoch": 1.5}, r"lr_decay_per_epoch must be a factor in \(0, 1\]"),
    ],
)
def test_bad_recipe_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=r"\[make_train_step\] " + message):
        make_train_step(small_model(), optim.SGD(0.1), LOSSES["mse"], **options)
    data = bit_stream_xor(8, 5)
    model = CfC(1, 6, proj_size=1, return_sequences=False)
    with pytest.raises(ValueError, match=r"\[fit\] " + message):
        fit(model, data, epochs=1, loss="binary_cross_entropy", progress=False, **options)


def test_an_unmatched_glob_lists_the_parameter_names():
    with pytest.raises(ValueError) as error:
        make_train_step(small_model(), optim.SGD(0.1), LOSSES["mse"], l2=1.0, l2_params="w*")
    assert "the model's are rnn_cell.backbone.0.weight, rnn_cell.backbone.0.bias," in str(
        error.value
    )


# Binary cross-entropy and accuracy


def test_binary_cross_entropy_is_the_logistic_loss_of_logits():
    logits = np.array([[-80.0], [-3.0], [-0.5], [0.0], [0.7], [4.0], [80.0]], np.float32)
    targets = np.array([[0], [1], [0], [1], [1], [0], [1]], np.float32)
    expected = np.logaddexp(0.0, logits.astype(np.float64)) - logits * targets
    loss = resolve_loss("binary_cross_entropy")
    floats = loss(mx.array(logits), mx.array(targets))
    np.testing.assert_allclose(np.array(floats), expected, rtol=1e-6, atol=1e-6)
    # Integer labels, one per output vector, without the last axis: the same values.
    labels = loss(mx.array(logits), mx.array(targets[:, 0].astype(np.int32)))
    np.testing.assert_array_equal(np.array(labels), np.array(floats))
    soft = loss(mx.array(logits), mx.array(np.full_like(targets, 0.25)))
    np.testing.assert_allclose(np.array(soft), np.logaddexp(0.0, logits) - 0.25 * logits, 1e-6)


def test_binary_accuracy_reads_a_positive_logit_as_a_one():
    logits = mx.array([[2.0], [-1.0], [0.0], [3.0], [-0.1]])
    targets = mx.array([[1.0], [1.0], [0.0], [0.0], [0.3]])
    hits = resolve_metrics(["binary_accuracy"])["binary_accuracy"](logits, targets)
    assert np.array(hits)[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    labels = METRICS["binary_accuracy"](logits, mx.array([1, 1, 0, 0, 0]))
    assert np.array(labels)[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_fit_takes_binary_labels_only_for_a_single_logit():
    data = bit_stream_xor(16, 6)
    labels = SequenceData(data.x, data.y[:, 0].astype(np.int64), data.timespans, data.mask)
    single = CfC(1, 6, proj_size=1, return_sequences=False)
    history = fit(single, labels, labels, loss="binary_cross_entropy", epochs=1,
                  metrics=["binary_accuracy"], progress=False)  # fmt: skip
    assert 0.0 <= history["val_binary_accuracy"][0] <= 1.0
    two = CfC(1, 6, proj_size=2, return_sequences=False)
    with pytest.raises(ValueError, match=r"needs 0/1 float targets .* \(output_size 1\)"):
        fit(two, labels, loss="binary_cross_entropy", epochs=1, progress=False)
    twos = SequenceData(data.x, labels.y * 2, data.timespans, data.mask)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\) \(a binary loss takes 0 or 1\)"):
        fit(single, twos, loss="binary_cross_entropy", epochs=1, progress=False)


# The learning rate decayed per epoch


def rates(schedule, steps) -> list[float]:
    return [schedule(mx.array(step, mx.uint64)).item() for step in steps]


def test_epoch_decay_multiplies_the_rate_or_the_schedule_per_epoch():
    optimizer = optim.SGD(learning_rate=0.1)
    decay_per_epoch(optimizer, 0.5, 4)
    expected = [0.1 * 0.5 ** (step / 4) for step in range(9)]
    assert rates(optimizer._schedulers["learning_rate"], range(9)) == pytest.approx(expected)
    # Again on the same optimizer: the new decay replaces the old one.
    decay_per_epoch(optimizer, 0.9, 4)
    assert rates(optimizer._schedulers["learning_rate"], [8]) == pytest.approx([0.1 * 0.81])
    decay_per_epoch(optimizer, None, None)  # taken off: the constant rate is back
    assert "learning_rate" not in optimizer._schedulers
    assert optimizer.learning_rate.item() == pytest.approx(0.1)
    scheduled = optim.SGD(learning_rate=optim.step_decay(0.1, 0.1, 2))
    decay_per_epoch(scheduled, 0.5, 4)
    wrapped = scheduled._schedulers["learning_rate"]
    assert isinstance(wrapped, EpochDecay)
    expected = [0.1 * 0.1 ** (step // 2) * 0.5 ** (step / 4) for step in range(6)]
    assert rates(wrapped, range(6)) == pytest.approx(expected)


def test_fit_decays_the_rate_per_epoch_and_resumes_on_the_same_curve(tmp_path):
    data = bit_stream_xor(48, 6, seed=2)  # 3 batches of 16 per epoch

    def run(epochs, **options):
        mx.random.seed(1)
        model = CfC(1, 6, proj_size=1, return_sequences=False, backbone_units=8)
        optimizer = optim.RMSprop(learning_rate=0.01, alpha=0.9)
        history = fit(model, data, loss="binary_cross_entropy", optimizer=optimizer,
                      epochs=epochs, batch_size=16, lr_decay_per_epoch=0.5, progress=False,
                      **options)  # fmt: skip
        return history, flat(model)

    history, straight = run(3)
    # A row logs the rate of the epoch's last step, 0.01 * 0.5 ** ((3 epochs - 1) / 3).
    expected = [0.01 * 0.5 ** ((3 * epoch - 1) / 3) for epoch in (1, 2, 3)]
    assert history["learning_rate"] == pytest.approx(expected, rel=1e-5)
    run(2, checkpoint_dir=tmp_path)
    resumed_history, resumed = run(3, checkpoint_dir=tmp_path, resume=True)
    assert resumed_history["learning_rate"] == pytest.approx(expected, rel=1e-5)
    for name, value in straight.items():
        np.testing.assert_array_equal(resumed[name], value)


# The bit-stream XOR data


def paper_xor_data(size: int, seed: int, pad_size: int) -> tuple[np.ndarray, ...]:
    """``XORData.create_set`` with ``event_based=True`` of the CfC paper's code
    (raminmh/CfC, irregular_sampled_datasets.py), one sample at a time as it is written
    there, elapsed times divided by ``pad_size`` as its constructor does."""
    rng = np.random.RandomState(seed)
    samples = []
    for _ in range(size):
        label, last_char, write_index, elapsed_counter = 0, -1, 0, 0
        events, elapsed = np.zeros(pad_size, np.float32), np.zeros(pad_size, np.float32)
        mask = np.zeros(pad_size, bool)
        for _ in range(rng.randint(low=2, high=pad_size)):
            elapsed_counter += 1
            char = int(rng.randint(low=0, high=2))
            label += char
            if last_char != char:
                events[write_index], elapsed[write_index] = char, elapsed_counter
                mask[write_index] = True
                write_index += 1
                elapsed_counter = 0
                if write_index >= pad_size - 1:
                    break
            last_char = char
        if elapsed_counter > 0:
            events[write_index], elapsed[write_index] = char, elapsed_counter
            mask[write_index] = True
        samples.append((events, elapsed / pad_size, mask, label % 2))
    return tuple(np.stack(part) for part in zip(*samples, strict=True))


@pytest.mark.parametrize(
    ("size", "seed", "pad_size"), [(500, 1234984, 32), (300, 48736, 3), (300, 5, 9)]
)
def test_bit_stream_xor_draws_the_papers_data(size, seed, pad_size):
    events, elapsed, mask, labels = paper_xor_data(size, seed, pad_size)
    data = bit_stream_xor(size, pad_size, seed=seed)
    np.testing.assert_array_equal(data.x[..., 0], events)
    np.testing.assert_array_equal(data.timespans, elapsed)
    np.testing.assert_array_equal(data.mask, mask)
    np.testing.assert_array_equal(data.y, labels[:, None].astype(np.float32))
    assert data.x.dtype == data.y.dtype == data.timespans.dtype == np.float32
    assert (data.timespans[data.mask] > 0).all() and 0.3 < data.y.mean() < 0.7


def test_bit_stream_xor_checks_its_arguments():
    with pytest.raises(ValueError, match=r"\[bit_stream_xor\] need .* seq_len >= 3, got 4, 2"):
        bit_stream_xor(4, 2)


# The paper's recipe as a run config


def tiny_recipe(tmp_path: Path) -> Path:
    """The example with the recipe's keys as they are and a tiny data set and model."""
    text = EXAMPLE.read_text()
    for old, new in [
        ("num_sequences = 110000, seq_len = 32", "num_sequences = 64, seq_len = 8"),
        ("validation_fraction = 0.09090909090909091", "validation_fraction = 0.25"),
        ("units = 192", "units = 8"),
        ("backbone_units = 128", "backbone_units = 8"),
        ("epochs = 200", "epochs = 1"),
        ("batch_size = 128", "batch_size = 16"),
        ('dir = "runs/bit_stream_xor"', 'dir = "run"\nprogress = false'),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "tiny_xor.toml"
    path.write_text(text)
    return path


def test_the_example_is_the_papers_recipe(capsys):
    assert cli.main(["validate", str(EXAMPLE)]) == 0
    assert "examples/bit_stream_xor.toml: valid" in capsys.readouterr().out.replace("\\", "/")
    resolved = read_config(EXAMPLE)
    info, training = resolved.data.info, resolved.training
    assert (info.train_size, info.val_size, info.seq_len, info.output_size) == (
        100000,
        10000,
        32,
        1,
    )
    assert info.timespans and info.mask and not info.classification
    assert resolved.model.kwargs["proj_size"] == 1 and resolved.model.parameters == 124097
    assert training.steps_per_epoch == 782
    assert (training.clip_tensor_norm, training.l2, training.l2_params) == (
        1.0, 3e-6, ("rnn_cell.*.weight",),
    )  # fmt: skip
    assert (training.learning_rate, training.lr_decay_per_epoch) == (0.05, 0.95)
    optimizer = config.build_optimizer(training)
    assert isinstance(optimizer, optim.RMSprop)
    assert (optimizer.alpha, optimizer.eps) == (0.9, 1e-7)


def test_a_tiny_recipe_trains_one_epoch_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", str(tiny_recipe(tmp_path))]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    final = metrics["final"]
    assert np.isfinite(final["loss"]) and 0.0 <= final["val_binary_accuracy"] <= 1.0
    assert metrics["config"]["training"]["l2_params"] == ["rnn_cell.*.weight"]


def recipe_problems(**training) -> list[str]:
    raw = {
        "data": {"name": "bit_stream_xor", "options": {"num_sequences": 16, "seq_len": 6}},
        "model": {"type": "CfC", "units": 4, "backbone_units": 8},
        "training": {"loss": "binary_cross_entropy", **training},
        "output": {"dir": "run"},
    }
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    return error.value.problems


@pytest.mark.parametrize(
    ("training", "problem"),
    [
        ({"clip_tensor_norm": 0}, "training.clip_tensor_norm: got 0; use a number > 0"),
        ({"clip_value": -1.0}, "training.clip_value: got -1.0; use a number > 0"),
        ({"l2": "3e-6"}, "training.l2: got '3e-6' (a string); use a number > 0"),
        (
            {"lr_decay_per_epoch": 1.5},
            "training.lr_decay_per_epoch: got 1.5; use a number in (0, 1]",
        ),
        (
            {"l2_params": "rnn_cell.*"},
            "training.l2_params: got 'rnn_cell.*' (a string); use a list of strings",
        ),
        (
            {"l2_params": ["rnn_cell.*"]},
            "training.l2_params: chooses where l2 applies, but l2 is not set; set l2",
        ),
        (
            {"l2": 1e-6, "l2_params": ["cell.*"]},
            "training.l2_params: 'cell.*' matches no trainable parameter; the model's are "
            "rnn_cell.backbone.0.weight,",
        ),
        (
            {"optimizer_options": {"alpha": 0.9}},
            "training.optimizer_options.alpha: unknown key; allowed keys: betas, eps, "
            "bias_correction",
        ),
        (
            {"optimizer": "rmsprop", "optimizer_options": {"eps": "small"}},
            "training.optimizer_options.eps: got 'small' (a string); use a number",
        ),
        (
            {"optimizer": "sgd", "weight_decay": 0.1, "optimizer_options": {"weight_decay": 0.2}},
            "training.optimizer_options.weight_decay: weight_decay is set twice; keep one",
        ),
    ],
)
def test_bad_recipe_keys_are_named(training, problem):
    problems = recipe_problems(**training)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
