"""The progress display and the logging callbacks: what a user sees and what lands on disk."""

import csv
import io
import re
import struct
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from ncps_mlx import CfC
from ncps_mlx.datasets import sine_waves
from ncps_mlx.training import Callback, CSVLogger, ProgressBar, TensorBoardLogger, fit
from ncps_mlx.training import callbacks as cb
from ncps_mlx.training.trainer import History, Trainer

TRAIN = sine_waves(32, 12, seed=1)  # 4 batches of 8
VAL = sine_waves(8, 12, seed=2)
BATCHES = 4


def tiny_model():
    mx.random.seed(0)
    return CfC(2, 8, proj_size=1)


def short_fit(**kwargs):
    arguments = {"epochs": 2, "batch_size": 8, "metrics": ["mae"], "progress": False}
    return fit(tiny_model(), TRAIN, VAL, **{**arguments, **kwargs})


def frames(output: str) -> list[str]:
    """Every line a terminal would have shown, each redraw of the bar on its own."""
    return [frame for frame in re.split(r"[\r\n]", output) if frame.strip()]


# -- Lines that fit the terminal ---------------------------------------------------------

STATUSES = [
    [cb.COMPILING_TRAIN_STEP],
    ["loss 0.08517", "2.2k samples/s"],
    ["loss 0.03929", cb.COMPILING_VALIDATION, "2.23k samples/s"],
    [],
]


@pytest.mark.parametrize("status", STATUSES)
def test_progress_line_never_exceeds_the_width_nor_cuts_the_first_status(status):
    head = "epoch 10/100"
    for width in range(10, 160):
        line = cb.progress_line(width, head, 0.45, "580/1280", "[01:02<01:15]", status)
        assert len(line) <= width, (width, line)
        essential = len(head) + len(" 100% ") + len(status[0]) if status else 0
        if status and width >= essential:
            assert status[0] in line, (width, line)


def test_progress_line_gives_up_the_least_useful_parts_first():
    def line(width):
        status = ["loss 0.0852", "2.2k samples/s"]
        return cb.progress_line(width, "epoch 1/2", 0.5, "64/128", "[00:01<00:01]", status)

    assert line(100).endswith("| 64/128 [00:01<00:01] loss 0.0852, 2.2k samples/s")
    assert len(line(100)) == 100  # the bar takes the room left
    assert line(60).endswith("| 64/128 loss 0.0852, 2.2k samples/s")  # no timing
    assert line(45).endswith("| 64/128 loss 0.0852")  # no throughput
    assert line(36) == "epoch 1/2  50%|████    | loss 0.0852"  # no count
    assert line(27) == "epoch 1/2  50% loss 0.0852"  # no bar


def test_epoch_lines_wrap_between_figures_and_keep_every_one():
    figures = ["loss 0.03929", "val_loss 0.002951", "val_mae 0.0106", "lr 0.001"]
    for width in range(24, 120):
        lines = cb.epoch_lines(width, "epoch 1/2", figures, ["0.48 s", "2.2k samples/s"])
        assert all(len(line) <= width for line in lines), (width, lines)
        shown = "  ".join(lines)
        assert all(figure in shown for figure in figures), (width, lines)
    assert cb.epoch_lines(80, "epoch 1/2", figures, ["0.48 s", "2.2k samples/s"]) == [
        "epoch 1/2  loss 0.03929  val_loss 0.002951  val_mae 0.0106  lr 0.001  0.48 s"
    ]
    assert cb.epoch_lines(40, "epoch 1/2", figures, ["0.48 s"]) == [
        "epoch 1/2  loss 0.03929",
        "           val_loss 0.002951",
        "           val_mae 0.0106  lr 0.001",
        # the seconds would need a line of their own: left out
    ]


def test_terminal_width_follows_columns_then_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert cb.terminal_width(io.StringIO()) == 123
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(cb.shutil, "get_terminal_size", lambda: cb.os.terminal_size((97, 20)))
    assert cb.terminal_width(io.StringIO()) == 97  # no terminal behind the stream


# -- The bar through an epoch ------------------------------------------------------------


class FakeClock:
    """perf_counter advancing 0.25 s per reading: throughput without timing anything."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.25
        return self.now


def drive(bar, trainer, epoch, rows=None):
    """One epoch of a ProgressBar as fit calls it; the lines drawn after each hook."""
    trainer.batches_done = 0
    bar.on_epoch_begin(trainer, epoch)
    drawn = [str(bar.bar)]
    for index in range(trainer.batches_per_epoch):
        trainer.batches_done = index + 1
        bar.on_batch_end(trainer, index, {"loss": 0.5, "samples": 8})
        drawn.append(str(bar.bar))
    row = rows or {"epoch": epoch, "loss": 0.5, "val_loss": 0.25, "learning_rate": 1e-3}
    trainer.history.rows.append(row)
    bar.on_epoch_end(trainer, epoch, row)
    return drawn


@pytest.fixture
def trainer(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(cb.time, "perf_counter", FakeClock())
    return Trainer(None, None, epochs=2, batches_per_epoch=BATCHES, history=History())


def test_bar_says_it_compiles_and_shows_throughput_only_once_measured(trainer):
    bar = ProgressBar(validation=True, stream=io.StringIO())
    bar.on_train_begin(trainer)
    first = drive(bar, trainer, 1)
    assert cb.COMPILING_TRAIN_STEP in first[0]
    # The first step compiled: not timed, so no throughput after it.
    assert "loss 0.5" in first[1] and "samples/s" not in first[1]
    assert "32.0 samples/s" in first[2]  # 8 samples in 0.25 s
    assert cb.COMPILING_VALIDATION in first[-1]
    second = drive(bar, trainer, 2)
    assert all(cb.COMPILING_TRAIN_STEP not in line for line in second)
    assert "samples/s" not in second[0] and "samples/s" in second[1]  # timed from the start
    assert cb.VALIDATING in second[-1] and cb.COMPILING_VALIDATION not in second[-1]


def test_bar_learns_whether_the_run_validates(trainer):
    bar = ProgressBar(stream=io.StringIO())
    bar.on_train_begin(trainer)
    row = {"epoch": 1, "loss": 0.5, "val_loss": 0.4}
    assert cb.FINISHING_EPOCH in drive(bar, trainer, 1, row)[-1]  # nothing to go by yet
    assert cb.COMPILING_VALIDATION not in drive(bar, trainer, 2)[-1]
    silent = ProgressBar(validation=False, stream=io.StringIO())
    silent.on_train_begin(trainer)
    last = drive(silent, trainer, 1)[-1]
    assert "validat" not in last and cb.FINISHING_EPOCH not in last


def test_epoch_line_replaces_the_bar_with_every_figure(trainer):
    stream = io.StringIO()
    bar = ProgressBar(validation=True, stream=stream)
    bar.on_train_begin(trainer)
    row = {"epoch": 1, "loss": 0.5, "val_loss": 0.25, "val_mae": 0.125, "learning_rate": 0.01}
    drive(bar, trainer, 1, {**row, "seconds": 2.0, "samples_per_s": 16.0})
    assert stream.getvalue().endswith(
        "\repoch 1/2  loss 0.5  val_loss 0.25  val_mae 0.125  lr 0.01  2.0 s  16.0 samples/s\n"
    )


@pytest.mark.parametrize("width", [80, 120])
def test_fit_progress_fits_the_terminal_and_shows_validation(width, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(width))
    history = short_fit(progress=True)
    output = capsys.readouterr().err
    shown = frames(output)
    assert shown and all(len(frame) < width for frame in shown), max(shown, key=len)
    assert cb.COMPILING_TRAIN_STEP in shown[0]
    assert "samples_s" not in output and not re.search(r"(?<![\d.])0 samples/s", output)
    for row in history.rows:
        line = next(frame for frame in shown if frame.startswith(f"epoch {row['epoch']}/2  loss"))
        for key in ("loss", "val_loss", "val_mae"):
            assert f"{key} {row[key]:.4g}" in line


# -- CSVLogger ---------------------------------------------------------------------------


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    path = tmp_path / "logs" / "metrics.csv"
    history = short_fit(callbacks=[CSVLogger(path)])
    header, rows = read_csv(path)
    assert header == list(history.rows[0])  # epoch, loss, val_loss, val_mae, learning_rate, ...
    assert len(rows) == 2
    for written, row in zip(rows, history.rows, strict=True):
        assert {key: float(value) for key, value in written.items()} == row  # exact: repr


def test_csv_logger_adds_a_column_for_a_key_that_appears_later(tmp_path):
    class Note(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                logs["note"] = 7.0

    path = tmp_path / "metrics.csv"
    short_fit(callbacks=[Note(), CSVLogger(path)])
    header, rows = read_csv(path)
    assert header[-1] == "note"
    assert [row["note"] for row in rows] == ["", "7.0"]


def test_csv_logger_keeps_the_resumed_epochs_only(tmp_path):
    path = tmp_path / "metrics.csv"
    short_fit(callbacks=[CSVLogger(path)], checkpoint_dir=tmp_path / "run")
    done = path.read_text()
    # A row the checkpoint never saw: a kill between the CSV row and the checkpoint.
    path.write_text(done + "3,-777,-777,-777,-777,-777,-777\n")
    history = short_fit(
        callbacks=[CSVLogger(path)], checkpoint_dir=tmp_path / "run", resume=True, epochs=3
    )
    text = path.read_text()
    assert text.startswith(done) and "-777" not in text
    _, rows = read_csv(path)
    assert [float(row["loss"]) for row in rows] == history["loss"]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]


def test_csv_logger_starts_a_new_run_afresh(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("an older run\n")
    short_fit(callbacks=[CSVLogger(path)], epochs=1)
    assert "older" not in path.read_text()
    assert len(read_csv(path)[1]) == 1


def test_csv_logger_leaves_writing_to_the_main_process(tmp_path):
    logger = CSVLogger(tmp_path / "metrics.csv")
    other = Trainer(None, None, epochs=1, batches_per_epoch=1, history=History(), rank=1)
    logger.on_train_begin(other)
    logger.on_epoch_end(other, 1, {"epoch": 1, "loss": 0.5})
    assert not (tmp_path / "metrics.csv").exists()


# -- TensorBoardLogger -------------------------------------------------------------------


def test_tensorboard_logger_without_the_extra_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'ncps-mlx\[tensorboard\]'") as error:
        TensorBoardLogger(tmp_path)
    assert "#missing-extra" in str(error.value)


def test_tensorboard_logger_refuses_a_step_loss_that_is_not_a_bool(tmp_path):
    with pytest.raises(ValueError, match=r"\[TensorBoardLogger\] step_loss must be True"):
        TensorBoardLogger(tmp_path, step_loss="yes")


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the event files in ``log_dir``, by tag and step; each record's
    checksums verified (the TFRecord framing TensorBoard reads)."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        while data:
            header, (header_crc,) = data[:8], struct.unpack("<I", data[8:12])
            (length,) = struct.unpack("<Q", header)
            record, (record_crc,) = (
                data[12 : 12 + length],
                struct.unpack("<I", data[12 + length : 16 + length]),
            )
            assert masked_crc32c(header) == header_crc and masked_crc32c(record) == record_crc
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
            data = data[16 + length :]
    return scalars


def test_tensorboard_logger_writes_readable_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    log_dir = tmp_path / "tensorboard"
    history = short_fit(callbacks=[TensorBoardLogger(log_dir, step_loss=True)])
    scalars = read_scalars(log_dir)
    for key in ("loss", "val_loss", "val_mae", "learning_rate", "seconds", "samples_per_s"):
        assert scalars[key] == pytest.approx(dict(enumerate(history[key], 1)), rel=1e-6), key
    steps = scalars["step_loss"]
    assert sorted(steps) == list(range(1, 2 * BATCHES + 1))
    # Batches of equal size: an epoch's loss is the mean of its steps' losses.
    first_epoch = [steps[step] for step in range(1, BATCHES + 1)]
    assert sum(first_epoch) / BATCHES == pytest.approx(history["loss"][0], rel=1e-5)


def test_tensorboard_logger_goes_on_from_the_resumed_epoch(tmp_path):
    pytest.importorskip("tensorboardX")
    log_dir, run = tmp_path / "tensorboard", tmp_path / "run"
    short_fit(callbacks=[TensorBoardLogger(log_dir)], checkpoint_dir=run)
    history = short_fit(
        callbacks=[TensorBoardLogger(log_dir)], checkpoint_dir=run, resume=True, epochs=3
    )
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2  # one per run
    scalars = read_scalars(log_dir)
    assert scalars["loss"] == pytest.approx(dict(enumerate(history["loss"], 1)), rel=1e-6)
