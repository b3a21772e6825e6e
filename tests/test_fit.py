"""fit: the loop, its checkpoints, resume, the NaN guard and its refusals."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from ncps_mlx import LTC, CfC, io, load
from ncps_mlx.datasets import SequenceData, sine_waves
from ncps_mlx.errors import CheckpointError, TrainingDivergedError, see
from ncps_mlx.training import Callback, EarlyStopping, fit
from ncps_mlx.training.checkpoint import load_training_state, save_training_state
from ncps_mlx.wirings import AutoNCP


def small_model(**kwargs):
    mx.random.seed(0)
    return CfC(2, 8, backbone_units=8, proj_size=1, **kwargs)


def params(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def assert_same_params(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


ROOT = Path(__file__).resolve().parents[1]
DATA = sine_waves(20, 12, seed=1)
VAL = sine_waves(8, 12, seed=2)


def test_fit_trains_and_reports_validation():
    model = CfC(2, AutoNCP(12, 1))
    history = fit(
        model, DATA, VAL, optimizer=optim.Adam(3e-2), epochs=8, batch_size=8,
        metrics=["mae"], progress=False,
    )  # fmt: skip
    assert len(history) == 8
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert set(history.rows[0]) >= {"epoch", "loss", "val_loss", "val_mae", "learning_rate"}
    # val_loss is the MSE over the validation set, evaluated independently here.
    model.eval()
    prediction, _ = model(VAL.x)
    expected = float(np.mean((np.array(prediction) - VAL.y) ** 2))
    assert history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)


def run(directory, epochs, **kwargs):
    model = small_model(backbone_dropout=0.2)  # dropout draws from MLX's key
    history = fit(
        model, DATA, VAL, epochs=epochs, batch_size=6, checkpoint_dir=directory,
        progress=False, optimizer=optim.Adam(optim.cosine_decay(0.02, 30)), **kwargs,
    )  # fmt: skip
    return model, history


def without_time(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def test_resume_continues_the_uninterrupted_trajectory(tmp_path):
    whole, whole_history = run(tmp_path / "whole", 5)
    run(tmp_path / "split", 2)
    resumed, resumed_history = run(tmp_path / "split", 5, resume=True)
    assert_same_params(whole, resumed)
    assert without_time(resumed_history.rows) == without_time(whole_history.rows)
    logged = [json.loads(line) for line in (tmp_path / "split/metrics.jsonl").open()]
    assert [row["epoch"] for row in logged] == [1, 2, 3, 4, 5]
    assert without_time(logged) == without_time(whole_history.rows)


def test_checkpoints_are_models_and_hold_the_training_state(tmp_path):
    model, history = run(tmp_path, 3)
    assert_same_params(load(tmp_path / "last.safetensors"), model)
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    best = load(tmp_path / "best.safetensors")
    assert best.get_config() == model.get_config()
    fresh = small_model(backbone_dropout=0.2)
    state = load_training_state(tmp_path / "last.safetensors", fresh, optim.Adam(0.1))
    assert state["epoch"] == 3 and len(state["history"]) == 3
    assert best_epoch >= 1


class PoisonWeights(Callback):
    """Make the next loss nan partway through an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, trainer, batch, logs):
        if trainer.epoch == self.epoch and batch == 0:
            trainer.model.update(tree_map(lambda a: a * math.nan, trainer.model.parameters()))


def test_nan_guard_stops_and_restores_the_last_good_epoch(tmp_path):
    model = small_model()
    with pytest.raises(TrainingDivergedError, match="epoch 3, batch 2.*end of epoch 2"):
        fit(
            model, DATA, epochs=5, batch_size=6, checkpoint_dir=tmp_path, progress=False,
            callbacks=[PoisonWeights(3)],
        )  # fmt: skip
    assert_same_params(model, load(tmp_path / "last.safetensors"))
    assert all(np.isfinite(v).all() for v in params(model).values())
    state = load_training_state(tmp_path / "last.safetensors", small_model(), optim.Adam(0.1))
    assert state["epoch"] == 2


KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import mlx.core as mx
    from ncps_mlx import CfC
    from ncps_mlx.datasets import sine_waves
    from ncps_mlx.training import fit

    real_save = mx.save_safetensors

    def save_then_die(file, arrays, metadata=None):
        real_save(file, arrays, metadata=metadata)
        if "last" in os.path.basename(file.name) and os.environ.get("ARMED"):
            file.flush()  # then half of the file is on disk
            os.truncate(file.name, os.path.getsize(file.name) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    mx.save_safetensors = save_then_die

    class Arm:
        def on_train_begin(self, trainer): pass
        def on_epoch_begin(self, trainer, epoch): pass
        def on_batch_end(self, trainer, batch, logs): pass
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                os.environ["ARMED"] = "1"
        def on_train_end(self, trainer): pass
        def state_dict(self): return {}
        def load_state_dict(self, state): pass

    mx.random.seed(0)
    model = CfC(2, 8, backbone_units=8, proj_size=1)
    fit(model, sine_waves(20, 12, seed=1), epochs=4, batch_size=6,
        checkpoint_dir=sys.argv[1], progress=False, callbacks=[Arm()])
    """
)


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SAVE)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == -9  # killed inside the save of epoch 2
    state = load_training_state(tmp_path / "run/last.safetensors", small_model(), optim.Adam(0.1))
    assert state["epoch"] == 1
    history = fit(
        small_model(), DATA, epochs=3, batch_size=6, checkpoint_dir=tmp_path / "run",
        resume=True, progress=False, callbacks=[Callback()],  # the killed run had one
    )  # fmt: skip
    assert [row["epoch"] for row in history.rows] == [1, 2, 3]


def test_early_stopping_stops_and_says_why():
    stopper = EarlyStopping("val_loss", patience=2, min_delta=1e9)
    history = fit(
        small_model(), DATA, VAL, epochs=10, batch_size=8, callbacks=[stopper], progress=False
    )
    assert len(history) == 3
    assert "val_loss has not improved" in history.stop_reason


def test_learning_rate_schedule_is_followed_per_step():
    schedule = optim.step_decay(0.1, 0.5, 4)
    history = fit(
        small_model(), DATA, epochs=3, batch_size=10, optimizer=optim.SGD(schedule),
        progress=False,
    )  # fmt: skip
    # Two batches per epoch; the logged rate is the one the epoch's last update used.
    expected = [schedule(mx.array(2 * epoch - 1)).item() for epoch in (1, 2, 3)]
    assert history["learning_rate"] == pytest.approx(expected, rel=1e-6)


def test_monitor_times_every_step():
    from ncps_mlx.monitor import Monitor

    monitor = Monitor(interval=0.05, backends=[], health=False)
    fit(small_model(), DATA, epochs=2, batch_size=8, monitor=monitor, progress=False)
    assert len(monitor.steps) == 2 * 3
    assert not monitor.running


def masked_data():
    rng = np.random.default_rng(0)
    lengths = np.array([12, 5, 9, 3, 12, 7])
    mask = np.arange(12)[None] < lengths[:, None]
    x = rng.normal(size=(6, 12, 2)).astype(np.float32) * mask[..., None]
    y = rng.integers(0, 3, size=6)
    return SequenceData(x, y, mask=mask, classes=("a", "b", "c"))


def test_classification_with_masks_reports_accuracy():
    data = masked_data()
    model = CfC(2, AutoNCP(10, 3), return_sequences=False)
    history = fit(
        model, data, data, loss="cross_entropy", metrics=["accuracy"], epochs=2, batch_size=3,
        progress=False,
    )  # fmt: skip
    model.eval()
    hits = [
        int(np.argmax(np.array(model(data.x[i : i + 1, :n])[0])[0]) == data.y[i])
        for i, n in enumerate(data.lengths)
    ]
    assert history["val_accuracy"][-1] == pytest.approx(np.mean(hits))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train": (np.zeros((4, 5, 3)), np.zeros((4, 5, 1)))}, "2 features"),
        ({"train": (np.zeros((4, 5, 2)), np.zeros((4, 5, 2)))}, r"shape \(4, 5, 1\)"),
        ({"train": (np.zeros((4, 5, 2)), np.zeros((3, 5, 1)))}, "4 samples"),
        ({"train": (np.full((4, 5, 2), np.nan), np.zeros((4, 5, 1)))}, "nan or inf"),
        ({"loss": "cross_entropy"}, "needs integer class labels"),
        ({"epochs": 0}, "'epochs' must be an int >= 1"),
        ({"batch_size": 2.5}, "'batch_size' must be an int"),
        ({"resume": True}, "needs the checkpoint_dir"),
        ({"loss": "hinge"}, "unknown loss"),
        ({"metrics": ["f1"]}, "unknown metrics"),
        ({"train": "data.csv"}, "must be a SequenceData"),
    ],
)
def test_bad_requests_are_refused_before_training(kwargs, match):
    arguments = {"train": DATA, "epochs": 1, "progress": False, **kwargs}
    model = small_model()
    before = params(model)
    with pytest.raises(ValueError, match=match):
        fit(model, **arguments)
    for key, value in params(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_ltc_timespans_are_checked_at_every_real_step_before_training():
    x, y = np.ones((4, 5, 2), np.float32), np.zeros((4, 5, 1), np.float32)
    mask = np.ones((4, 5), bool)
    mask[3, 3:] = False
    timespans = np.where(mask, 1.0, 0.0).astype(np.float32)  # padding with 0 is fine
    model = LTC(2, AutoNCP(8, 1))
    fit(model, SequenceData(x, y, timespans, mask), epochs=1, batch_size=2, progress=False)
    timespans[3, 1] = 0.0  # a real step of the last batch
    before = params(model)
    with pytest.raises(ValueError, match=r"timespans must be finite and > 0"):
        fit(model, SequenceData(x, y, timespans, mask), epochs=1, batch_size=2, progress=False)
    for key, value in params(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_float16_divergence_names_the_optimizer_eps():
    model = CfC(2, AutoNCP(8, 1))
    model.set_dtype(mx.float16)  # Adam's default eps is 0 in float16: masked weights get 0 / 0
    with pytest.raises(TrainingDivergedError, match=r"In float16, give the optimizer eps"):
        fit(model, DATA, optimizer=optim.Adam(1e-3), epochs=2, batch_size=4, progress=False)


def test_labels_outside_the_outputs_are_refused():
    data = masked_data()
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        fit(CfC(2, AutoNCP(10, 2), return_sequences=False), data, loss="cross_entropy")


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("three_epochs")
    run(folder, 3)
    return folder / "last.safetensors"


def crafted(folder, edit, base):
    """``base`` (a real run's last.safetensors) in ``folder``, its loop state edited."""
    model, optimizer = small_model(backbone_dropout=0.2), optim.Adam(0.1)
    state = load_training_state(base, model, optimizer)
    edit(state)
    save_training_state(folder / "last.safetensors", model, optimizer, state)


def setting(key, value):
    return lambda state: state.update({key: value})


def without(key):
    return lambda state: state.pop(key)


def in_row(key, value):
    return lambda state: state["history"][1].update({key: value})


IN_PROGRESS = {"epoch": 4, "next_batch": 1, "loss_sum": 0.5, "samples": 6, "seconds": 0.1}


def in_progress(**changes):
    return setting("epoch_in_progress", {**IN_PROGRESS, **changes})


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (setting("epoch", "3"), "'epoch' must be an int from 0 to epochs=5"),
        (setting("epoch", -1), "'epoch'"),
        (setting("epoch", 6), "'epoch' must be an int from 0 to epochs=5 (resume with epochs"),
        (without("epoch"), "epochs done), got nothing"),
        (setting("history", {"loss": 1.0}), "'history' must be a list of 3 rows"),
        (setting("history", ["row"]), "'history'"),
        (lambda state: state["history"].pop(), "'history'"),
        (in_row("loss", "0.1"), "'history'[1] must be {'epoch': 2, 'loss': number, ...}"),
        (in_row("loss", None), "'history'"),
        (in_row("epoch", 7), "'history'[1]"),
        (in_row("epoch", True), "'history'"),
        (setting("best_epoch", "3"), "'best_epoch'"),
        (setting("best_epoch", 99), "'best_epoch'"),
        (setting("stop_training", "no"), "'stop_training' must be true or false"),
        (setting("stop_reason", 3), "'stop_reason' must be a string"),
        (setting("data_order", {"state": 1}), "'data_order' must be a numpy PCG64 state"),
        (setting("data_order", None), "'data_order'"),
        (in_progress(next_batch=0), "'epoch_in_progress'"),
        (in_progress(next_batch=5), "'epoch_in_progress'"),  # 4 batches an epoch
        (in_progress(epoch=5), "'epoch_in_progress'"),
        (in_progress(loss_sum="x"), "'epoch_in_progress'"),
        (in_progress(loss_sum=math.nan), "'epoch_in_progress'"),
        (in_progress(samples=0), "'epoch_in_progress'"),
        (in_progress(seconds=-1.0), "'epoch_in_progress'"),
        (in_progress(extra=1), "'epoch_in_progress'"),
        (setting("epoch_in_progress", [4, 1]), "'epoch_in_progress'"),
        (setting("callbacks", 3), "'callbacks' must be a list of objects"),
        (setting("callbacks", [1]), "'callbacks'"),
        (setting("callbacks", [{}]), "written with 1 callbacks, this run has 0"),
        (lambda state: state.clear(), "'epoch'"),
    ],
)
def test_a_crafted_loop_state_is_refused_naming_the_field(tmp_path, three_epochs, edit, field):
    crafted(tmp_path, edit, three_epochs)
    with pytest.raises(CheckpointError) as caught:
        run(tmp_path, 5, resume=True)
    message = str(caught.value)
    assert "training state: " in message and field in message
    assert message.endswith(see("resume"))


@pytest.mark.parametrize(
    "saved",
    [
        {"best": "low", "best_epoch": 1, "wait": 0},
        {"best": 0.1, "wait": 0},
        {"best": 0.1, "best_epoch": 1, "wait": -2},
    ],
)
def test_a_crafted_callback_state_is_refused(tmp_path, three_epochs, saved):
    crafted(tmp_path, setting("callbacks", [saved]), three_epochs)
    with pytest.raises(CheckpointError, match=r"'callbacks'\[0\] does not fit EarlyStopping"):
        run(tmp_path, 5, resume=True, callbacks=[EarlyStopping(patience=9)])


def test_a_valid_state_of_an_earlier_version_still_resumes(tmp_path, three_epochs):
    older = lambda state: [state.pop(key) for key in ("best_epoch", "epoch_in_progress")]  # noqa: E731
    crafted(tmp_path, older, three_epochs)
    assert len(run(tmp_path, 4, resume=True)[1]) == 4


def saved_epoch(path):
    header, _ = io.read_checkpoint(path)
    return header["metadata"]["epoch"]


@pytest.mark.parametrize("damage", ["missing", "garbage", "older"])
def test_resume_rewrites_a_best_that_a_kill_left_behind(tmp_path, damage):
    # last is written first: a kill before best leaves a best of an older epoch or none.
    _, history = run(tmp_path / "run", 2)
    assert history["val_loss"][-1] < history["val_loss"][0]  # epoch 2 is the best
    best = tmp_path / "run/best.safetensors"
    if damage == "missing":
        best.unlink()
    elif damage == "garbage":
        best.write_bytes(b"not a checkpoint")
    else:
        run(tmp_path / "one", 1)
        best.write_bytes((tmp_path / "one/best.safetensors").read_bytes())
    run(tmp_path / "run", 2, resume=True)
    assert saved_epoch(best) == 2
    assert_same_params(load(best), load(tmp_path / "run/last.safetensors"))


def test_resume_leaves_a_sound_best_alone(tmp_path):
    run(tmp_path, 3)
    before = (tmp_path / "best.safetensors").stat().st_mtime_ns
    run(tmp_path, 3, resume=True)
    assert (tmp_path / "best.safetensors").stat().st_mtime_ns == before


def test_fit_removes_the_temporary_files_a_killed_run_left(tmp_path):
    left = [
        tmp_path / ".last.safetensors.k1x.partial.safetensors",
        tmp_path / ".best.safetensors.k2y.partial.safetensors",
        tmp_path / ".metrics.jsonl.k3z.partial",
    ]
    for path in left:
        path.write_bytes(b"half a file")
    someone_elses = tmp_path / ".notes.md.k4w.partial"
    someone_elses.write_text("kept")
    run(tmp_path, 1)
    assert [path for path in left if path.exists()] == [] and someone_elses.exists()
