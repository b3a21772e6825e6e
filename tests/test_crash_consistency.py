"""Crash consistency: a training run killed at any point, then resumed, ends exactly where
an uninterrupted run ends.

A small run (a CfC on 64 sequences, 6 epochs, a checkpoint after every epoch) is started
in another process and stopped at seeded random points: SIGKILL just before one of the
file system calls of its saves (the flush of a temporary file, its rename into place,
the flush of the folder), SIGKILL after a random delay, and Ctrl-C (SIGINT) after a
random delay. Each is resumed here, and must give bit for bit the checkpoint, history and
metrics log of the uninterrupted run, a ``best.safetensors`` holding the best epoch of
the history, and no temporary file.

Run as a module, this file is the training process: ``KILL_AT=n`` kills it just before
its n-th such call.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest

from ncps_mlx import CfC, io, kernels
from ncps_mlx.datasets import sine_waves
from ncps_mlx.training import Callback, EarlyStopping, fit

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, BATCHES = 6, 8
FILES = ["best.safetensors", "last.safetensors", "metrics.jsonl"]
SEED = 20240601
#: Kills before chosen file system calls, after random delays, and Ctrl-C.
CALL_TRIALS, KILL_TRIALS, CTRL_C_TRIALS = 10, 5, 4


class Started(Callback):
    """Calls ``started`` when the loop begins (the training process says so)."""

    def __init__(self, started=None):
        self.started = started

    def on_train_begin(self, trainer):
        if self.started is not None:
            self.started()


def run(folder: Path, resume: bool = False, started=None):
    """The training run: dropout draws from MLX's key, the schedule follows the optimizer's
    step, early stopping keeps a state; all of it is in the checkpoints."""
    mx.random.seed(0)
    model = CfC(2, 8, backbone_units=8, backbone_dropout=0.2, proj_size=1)
    history = fit(
        model, sine_waves(64, 12, seed=1), sine_waves(16, 12, seed=2), epochs=EPOCHS,
        batch_size=8, optimizer=optim.Adam(optim.cosine_decay(0.02, EPOCHS * BATCHES)),
        callbacks=[EarlyStopping(patience=20), Started(started)], checkpoint_dir=folder,
        resume=resume,
        progress=False,
    )  # fmt: skip
    return model, history


def _main(folder: str) -> None:
    """The training process: records its saves' calls, dies before the KILL_AT-th, and
    says when its loop starts (and the loop's seconds at the end)."""
    kill_at, calls = int(os.environ.get("KILL_AT", "0")), []

    def hooked(name, call):
        def before(*args):
            calls.append([name, os.path.basename(args[1]) if name == "replace" else None])
            if len(calls) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return call(*args)

        return before

    def started():
        print("training", flush=True)
        times.append(time.perf_counter())

    os.replace, os.fsync = hooked("replace", os.replace), hooked("fsync", os.fsync)
    times = []
    run(Path(folder), started=started)
    print(json.dumps({"calls": calls, "seconds": time.perf_counter() - times[0]}), flush=True)


def _start(folder: Path, kill_at: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_crash_consistency", str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": str(kill_at)},
        # A test run in the background may ignore SIGINT, which its children inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _after_delay(folder: Path, delay: float, signum: int) -> int:
    child = _start(folder)
    try:
        assert child.stdout.readline() == "training\n"
        time.sleep(delay)
        child.send_signal(signum)
        child.communicate(timeout=120)
    finally:
        child.kill()
    return child.returncode


def _killed_at_call(folder: Path, kill_at: int) -> int:
    child = _start(folder, kill_at)
    child.communicate(timeout=120)
    return child.returncode


def _kinds(calls: list) -> list[str]:
    """What each recorded call does: a write's flush of its temporary file, its rename into
    place, the flush of the folder after it."""
    kinds = []
    for index, (name, target) in enumerate(calls):
        if name == "replace":
            kinds.append(f"rename {target}")
        elif index + 1 < len(calls) and calls[index + 1][0] == "replace":
            kinds.append(f"flush temporary {calls[index + 1][1]}")
        else:
            kinds.append(f"flush folder after {calls[index - 1][1]}")
    return kinds


def _checkpoint(path: Path) -> tuple[dict, dict]:
    header, arrays = io.read_checkpoint(path)
    return header["metadata"], {key: np.array(value) for key, value in arrays.items()}


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def _loop_state(metadata: dict) -> dict:
    state = dict(metadata["training"])
    state["history"] = _without_time(state["history"])
    return state


def _assert_same_arrays(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def _trials(calls: list, seconds: float) -> list[tuple[str, float]]:
    """Seeded: a kill before one call of every kind, more calls at random, random delays."""
    rng = random.Random(SEED)
    kinds = _kinds(calls)
    by_kind: dict[str, list[int]] = {}
    for number, kind in enumerate(kinds, 1):
        by_kind.setdefault(kind, []).append(number)
    chosen = [rng.choice(numbers) for numbers in by_kind.values()]
    rest = [number for number in range(1, len(calls) + 1) if number not in chosen]
    chosen += rng.sample(rest, CALL_TRIALS - len(chosen))
    trials = [("call", number) for number in sorted(chosen)]
    trials += [("kill", rng.uniform(0, seconds)) for _ in range(KILL_TRIALS)]
    trials += [("ctrl-c", rng.uniform(0, seconds)) for _ in range(CTRL_C_TRIALS)]
    return trials


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in another process as the trials are; its saves' calls."""
    kernels.usable(mx.float32)  # built now if needed: no build's renames in the runs
    folder = tmp_path_factory.mktemp("reference")
    child = _start(folder)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    record = json.loads(out.splitlines()[-1])
    assert record["calls"] and all(target in FILES for name, target in record["calls"] if target)
    return folder, record


def _stop(trial: Path, how: str, point: float, kinds: list[str]) -> tuple[str, int]:
    """Run the trial's process and stop it as ``how`` says: what was done, the exit code."""
    if how == "call":
        return f"kill before {kinds[int(point) - 1]}", _killed_at_call(trial, int(point))
    signum = signal.SIGKILL if how == "kill" else signal.SIGINT
    return f"{how} after {point:.3f} s", _after_delay(trial, point, signum)


def _left_behind(trial: Path) -> str:
    """What the stopped run left: the epoch of last (and the step, when saved midway),
    whether best is behind it, how many temporary files."""
    if not (trial / "last.safetensors").exists():
        return "no last"
    state = _checkpoint(trial / "last.safetensors")[0]["training"]
    found = f"last at epoch {state['epoch']}"
    if state["epoch_in_progress"]:
        found += f" + {state['epoch_in_progress']['next_batch']} steps"
    best = trial / "best.safetensors"
    if state["best_epoch"] and (
        not best.exists() or _checkpoint(best)[0]["epoch"] != state["best_epoch"]
    ):
        found += ", best behind last"
    temporaries = len(list(trial.glob(".*")))
    return found + (f", {temporaries} temporary file(s)" if temporaries else "")


def _assert_resumed_to(trial: Path, history, reference: Path) -> None:
    metadata, arrays = _checkpoint(reference / "last.safetensors")
    resumed_metadata, resumed_arrays = _checkpoint(trial / "last.safetensors")
    _assert_same_arrays(resumed_arrays, arrays)  # weights, optimizer state, random key
    assert _loop_state(resumed_metadata) == _loop_state(metadata)
    assert _without_time(history.rows) == _without_time(metadata["training"]["history"])
    best_metadata, best_arrays = _checkpoint(reference / "best.safetensors")
    resumed_best_metadata, resumed_best = _checkpoint(trial / "best.safetensors")
    assert resumed_best_metadata["epoch"] == best_metadata["epoch"]
    assert best_metadata["epoch"] == metadata["training"]["best_epoch"]
    _assert_same_arrays(resumed_best, best_arrays)
    logs = [(folder / "metrics.jsonl").read_text().splitlines() for folder in (trial, reference)]
    assert [_without_time(map(json.loads, lines)) for lines in logs] == [
        _without_time(metadata["training"]["history"])
    ] * 2
    assert sorted(path.name for path in trial.iterdir()) == FILES  # no temporary file


def test_kills_and_ctrl_c_at_random_points_resume_to_the_uninterrupted_run(tmp_path, reference):
    folder, record = reference
    kinds = _kinds(record["calls"])
    outcomes = []
    for number, (how, point) in enumerate(_trials(record["calls"], record["seconds"])):
        trial = tmp_path / f"trial{number}"
        done, code = _stop(trial, how, point, kinds)
        found = _left_behind(trial)
        _, history = run(trial, resume=True)
        try:
            _assert_resumed_to(trial, history, folder)
        except AssertionError as error:
            raise AssertionError(f"{done} (exit {code}, {found}): {error}") from error
        outcomes.append(f"{done:<46} exit {code:>3}  {found}")
    print(f"\n{len(outcomes)} trials, each resumed to the uninterrupted run:")
    print("\n".join(outcomes))
    # The kills before chosen calls hit the points that matter (the random ones may not).
    for what in ("temporary file", "best behind last"):
        assert any(what in outcome for outcome in outcomes), what


if __name__ == "__main__":
    _main(sys.argv[1])
