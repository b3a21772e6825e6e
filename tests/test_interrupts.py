"""Ctrl-C in fit: it stops at a step boundary, saves the epoch in progress, says how to
resume, and the resumed run continues the uninterrupted trajectory exactly."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from ncps_mlx import CfC, TrainingInterrupted, load
from ncps_mlx.datasets import sine_waves
from ncps_mlx.errors import TrainingDivergedError
from ncps_mlx.training import Callback, EarlyStopping, fit
from ncps_mlx.training.checkpoint import load_training_state

ROOT = Path(__file__).resolve().parents[1]
DATA = sine_waves(64, 12, seed=1)
VAL = sine_waves(16, 12, seed=2)
EPOCHS, BATCHES = 4, 8  # 64 samples in batches of 8


class CtrlCAt(Callback):
    """Press Ctrl-C (a real SIGINT to this process) after a step, or ``times`` in a row."""

    def __init__(self, epoch=None, batch=None, times=1):
        self.epoch, self.batch, self.times = epoch, batch, times

    def on_batch_end(self, trainer, batch, logs):
        if (trainer.epoch, batch) == (self.epoch, self.batch):
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


class CtrlCAtEpochEnd(Callback):
    def __init__(self, epoch=None):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def small_model():
    mx.random.seed(0)
    return CfC(2, 8, backbone_units=8, backbone_dropout=0.2, proj_size=1)


def saved_state(folder):
    return load_training_state(folder / "last.safetensors", small_model(), optim.Adam(0.1))


def train(folder, callback, resume=False, epochs=EPOCHS):
    """A run with dropout (MLX's key), a schedule (the optimizer's step count) and early
    stopping's state: all of it must survive an interruption."""
    model = small_model()
    history = fit(
        model, DATA, VAL, epochs=epochs, batch_size=8, checkpoint_dir=folder, resume=resume,
        optimizer=optim.Adam(optim.cosine_decay(0.02, epochs * BATCHES)), progress=False,
        callbacks=[EarlyStopping(patience=10), callback],
    )  # fmt: skip
    return model, history


def params(model):
    return {key: np.array(value) for key, value in tree_flatten(model.parameters())}


def without_time(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    model, history = train(folder, Callback())
    return params(model), without_time(history.rows), folder


def assert_same_run(folder, model, history, uninterrupted):
    weights, rows, reference = uninterrupted
    for key, value in params(model).items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    assert without_time(history.rows) == rows
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
    assert without_time(logged) == rows
    best = load(folder / "best.safetensors")
    for key, value in params(best).items():
        np.testing.assert_array_equal(value, params(load(reference / "best.safetensors"))[key])
    assert not list(folder.glob(".*"))  # no temporary files


@pytest.mark.parametrize(("epoch", "batch"), [(1, 0), (2, 4), (3, BATCHES - 1)])
def test_ctrl_c_saves_the_step_and_resume_continues_exactly(
    tmp_path, uninterrupted, epoch, batch, capsys
):
    with pytest.raises(TrainingInterrupted) as caught:
        train(tmp_path, CtrlCAt(epoch, batch))
    message = f"training interrupted in epoch {epoch} after batch {batch + 1} of {BATCHES}"
    assert str(caught.value).startswith(message)
    assert f"continue with fit(..., checkpoint_dir={str(tmp_path)!r}, resume=True)" in str(
        caught.value
    )
    assert capsys.readouterr().err.strip() == str(caught.value)  # said on stderr too
    assert caught.value.checkpoint == str(tmp_path / "last.safetensors")
    state = saved_state(tmp_path)
    assert state["epoch"] == epoch - 1 and len(state["history"]) == epoch - 1
    assert state["epoch_in_progress"]["epoch"] == epoch
    assert state["epoch_in_progress"]["next_batch"] == batch + 1

    model, history = train(tmp_path, CtrlCAt(), resume=True)
    assert_same_run(tmp_path, model, history, uninterrupted)


def test_ctrl_c_during_validation_stops_after_the_epochs_save(tmp_path, uninterrupted):
    with pytest.raises(TrainingInterrupted, match="interrupted after epoch 2; saved"):
        train(tmp_path, CtrlCAtEpochEnd(2))
    state = saved_state(tmp_path)
    assert state["epoch"] == 2 and state["epoch_in_progress"] is None
    model, history = train(tmp_path, CtrlCAtEpochEnd(), resume=True)
    assert_same_run(tmp_path, model, history, uninterrupted)


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    with pytest.raises(KeyboardInterrupt) as caught:
        train(tmp_path, CtrlCAt(2, 3, times=2))
    assert type(caught.value) is KeyboardInterrupt  # not the saving stop
    state = saved_state(tmp_path)
    assert state["epoch"] == 1 and state["epoch_in_progress"] is None


def test_without_a_checkpoint_dir_it_stops_and_says_nothing_was_saved():
    mx.random.seed(0)
    model = CfC(2, 8, proj_size=1)
    with pytest.raises(
        TrainingInterrupted, match="in epoch 1 after batch 3 of 8; nothing was saved"
    ):
        fit(model, DATA, epochs=2, batch_size=8, progress=False, callbacks=[CtrlCAt(1, 2)])


class Raise(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        raise RuntimeError("a callback's own failure")


class Poison(Callback):
    def on_batch_end(self, trainer, batch, logs):
        trainer.model.update(tree_map(lambda a: a * math.nan, trainer.model.parameters()))


@pytest.mark.parametrize(
    ("callback", "error"),
    [
        (Callback(), None),
        (CtrlCAt(1, 1), TrainingInterrupted),
        (Raise(), RuntimeError),
        (Poison(), TrainingDivergedError),
    ],
)
def test_the_previous_handler_is_back_after_fit(tmp_path, callback, error):
    before = signal.getsignal(signal.SIGINT)
    mx.random.seed(0)
    run = lambda: fit(  # noqa: E731
        CfC(2, 8, proj_size=1), DATA, epochs=1, batch_size=8, progress=False,
        checkpoint_dir=tmp_path, callbacks=[callback],
    )  # fmt: skip
    if error is None:
        run()
    else:
        with pytest.raises(error):
            run()
    assert signal.getsignal(signal.SIGINT) is before


def test_an_ignored_sigint_stays_ignored(tmp_path):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        mx.random.seed(0)
        history = fit(
            CfC(2, 8, proj_size=1), DATA, epochs=2, batch_size=8, progress=False,
            callbacks=[CtrlCAt(1, 1)],
        )  # fmt: skip
        assert len(history) == 2 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


PAUSED_RUN = textwrap.dedent(
    """
    import sys
    import mlx.core as mx
    import mlx.optimizers as optim
    from ncps_mlx import CfC
    from ncps_mlx.datasets import sine_waves
    from ncps_mlx.training import Callback, EarlyStopping, fit

    class WaitForCtrlC(Callback):
        def on_batch_end(self, trainer, batch, logs):
            if (trainer.epoch, batch) == (2, 4):
                print("ready", flush=True)
                sys.stdin.readline()  # the parent writes after its SIGINT

    mx.random.seed(0)
    model = CfC(2, 8, backbone_units=8, backbone_dropout=0.2, proj_size=1)
    fit(
        model, sine_waves(64, 12, seed=1), sine_waves(16, 12, seed=2), epochs=4,
        batch_size=8, checkpoint_dir=sys.argv[1],
        optimizer=optim.Adam(optim.cosine_decay(0.02, 4 * 8)), progress=True,
        callbacks=[EarlyStopping(patience=10), WaitForCtrlC()],
    )
    """
)


def test_a_real_ctrl_c_in_another_process(tmp_path, uninterrupted):
    script = tmp_path / "paused.py"
    script.write_text(PAUSED_RUN)
    folder = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, str(script), str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # A test run in the background may ignore SIGINT, which its children inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate("go\n", timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0
    hint = f"continue with fit(..., checkpoint_dir={str(folder)!r}, resume=True)"
    said = err.splitlines()
    assert "training interrupted in epoch 2 after batch 5 of 8" in err and hint in err
    assert said[-1].startswith("ncps_mlx.errors.TrainingInterrupted: training interrupted")
    model, history = train(folder, CtrlCAt(), resume=True)
    assert_same_run(folder, model, history, uninterrupted)
