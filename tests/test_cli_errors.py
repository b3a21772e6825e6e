"""How ``ncps-mlx`` says a mistake: ``ncps-mlx <command>: <what is wrong>`` on stderr, one
line or two, flags named as typed, exit 2 for a command line that cannot run and 1 for a
command that failed, a traceback only with ``--debug``; and what ``export`` takes from
the checkpoint (the ``dt`` input of a model trained with timespans)."""

import dataclasses
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ncps_mlx
from ncps_mlx import CfC, cli, datasets, io
from ncps_mlx.errors import CheckpointError, see
from ncps_mlx.training import fit
from ncps_mlx.training.checkpoint import TRAINED_WITH, read_trained_with

ROOT = Path(__file__).resolve().parents[1]
HAS_COREMLTOOLS = importlib.util.find_spec("coremltools") is not None
needs_coremltools = pytest.mark.skipif(not HAS_COREMLTOOLS, reason="needs coremltools")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a checkpoint saved by ``ncps_mlx.save`` alone, a JSON file and a
    plain file, as a user's folder would have them."""
    monkeypatch.chdir(tmp_path)
    io.save(CfC(3, 8), "model.safetensors")
    Path("x.json").write_text("{}")
    Path("existing").write_text("a file")
    return tmp_path


def said(capsys):
    """What the command wrote on stderr, as lines; no traceback anywhere."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return captured.err.splitlines()


def help_line(command):
    return f"try 'ncps-mlx {command} --help'"


# Each mistake: the command line, its exit code, and stderr exactly.
MISTAKES = {
    "export of a missing file": (
        ["export", "missing.safetensors", "--out", "m.mlpackage"],
        2,
        ["ncps-mlx export: checkpoint: no file 'missing.safetensors'", help_line("export")],
    ),
    "export of a folder": (
        ["export", ".", "--out", "m.mlpackage"],
        2,
        ["ncps-mlx export: checkpoint: expected a file, got the folder '.'", help_line("export")],
    ),
    "export --kind sequence without --seq-len": (
        ["export", "model.safetensors", "--kind", "sequence", "--out", "m.mlpackage"],
        2,
        ["ncps-mlx export: --kind sequence needs --seq-len, the steps of each call (e.g. 32)"],
    ),
    "export --seq-len of another kind": (
        ["export", "model.safetensors", "--seq-len", "4", "--out", "m.mlpackage"],
        2,
        ["ncps-mlx export: --seq-len is for --kind sequence; --kind step runs one step"],
    ),
    "export --kind stateful in float32": (
        ["export", "model.safetensors", "--kind", "stateful", "--precision", "float32"]
        + ["--out", "m.mlpackage"],
        2,
        [
            "ncps-mlx export: --kind stateful keeps its state in Core ML state tensors, which "
            "are float16: use --precision float16"
        ],
    ),
    "export --out plainname": (
        ["export", "model.safetensors", "--out", "plainname"],
        2,
        [
            "ncps-mlx export: --out: expected a name ending in .mlpackage, got 'plainname' "
            "(e.g. 'plainname.mlpackage')",
            help_line("export"),
        ],
    ),
    "export --out in a missing folder": (
        ["export", "model.safetensors", "--out", "nowhere/m.mlpackage"],
        2,
        ["ncps-mlx export: --out: the folder 'nowhere' does not exist", help_line("export")],
    ),
    "export --batch-size 0": (
        ["export", "model.safetensors", "--batch-size", "0", "--out", "m.mlpackage"],
        2,
        [
            "ncps-mlx export: --batch-size: expected a positive integer, got '0'",
            help_line("export"),
        ],
    ),
    "export without --out": (
        ["export", "model.safetensors"],
        2,
        ["ncps-mlx export: the following arguments are required: --out", help_line("export")],
    ),
    "monitor report of a missing file": (
        ["monitor", "report", "missing.jsonl"],
        2,
        ["ncps-mlx monitor: run: no file 'missing.jsonl'", help_line("monitor")],
    ),
    "monitor --backends foo": (
        ["monitor", "--backends", "mlx,foo"],
        2,
        [
            "ncps-mlx monitor: --backends: unknown backend 'foo'; use 'auto' or names from "
            "mlx, psutil, nvml, ioreport, ioaccelerator, powermetrics",
            help_line("monitor"),
        ],
    ),
    "monitor --interval -1": (
        ["monitor", "--interval", "-1"],
        2,
        [
            "ncps-mlx monitor: --interval: expected a positive number, got '-1'",
            help_line("monitor"),
        ],
    ),
    "monitor --duration nan": (
        ["monitor", "--duration", "nan"],
        2,
        [
            "ncps-mlx monitor: --duration: expected a positive number, got 'nan'",
            help_line("monitor"),
        ],
    ),
    "demo --out an existing file": (
        ["demo", "--out", "existing"],
        2,
        ["ncps-mlx demo: --out: expected a folder, got the file 'existing'", help_line("demo")],
    ),
    "demo --epochs abc": (
        ["demo", "--epochs", "abc"],
        2,
        ["ncps-mlx demo: --epochs: expected a positive integer, got 'abc'", help_line("demo")],
    ),
    "demo --seed x": (
        ["demo", "--seed", "x"],
        2,
        ["ncps-mlx demo: --seed: expected an integer, got 'x'", help_line("demo")],
    ),
    "kernels foo": (
        ["kernels", "foo"],
        2,
        [
            "ncps-mlx kernels: action: invalid choice: 'foo' (choose from 'build', 'status', "
            "'clear')",
            help_line("kernels"),
        ],
    ),
    "kernels without an action": (
        ["kernels"],
        2,
        ["ncps-mlx kernels: the following arguments are required: action", help_line("kernels")],
    ),
    "an unknown command": (
        ["trian", "run.toml"],
        2,
        [
            "ncps-mlx: command: invalid choice: 'trian' (choose from 'demo', 'export', "
            "'kernels', 'monitor', 'policies', 'train', 'validate')",
            "try 'ncps-mlx --help'",
        ],
    ),
    "an unknown flag": (
        ["--verbose", "demo"],
        2,
        ["ncps-mlx: unrecognized arguments: --verbose", "try 'ncps-mlx --help'"],
    ),
    "train of a missing config": (
        ["train", "missing.toml"],
        2,
        [
            "missing.toml: 1 problem in the config:",
            "  - config: cannot read 'missing.toml' (No such file or directory); give an "
            "existing file",
            see("config-error"),
        ],
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_is_said_in_a_line_or_two_with_its_exit_code(mistake, workdir, capsys):
    argv, code, lines = MISTAKES[mistake]
    assert cli.main(argv) == code
    assert said(capsys) == lines


def test_backend_names_may_be_spaced_but_not_empty(capsys):
    args = cli.build_parser().parse_args(["monitor", "--backends", " nvml, psutil"])
    assert args.backends == " nvml, psutil"  # the live view reads them as typed
    assert cli.main(["monitor", "--backends", ","]) == 2
    assert (
        said(capsys)[0] == "ncps-mlx monitor: --backends: expected 'auto' or backend names, got ','"
    )


def test_export_of_a_file_that_is_no_checkpoint_fails_with_the_reason(workdir, capsys):
    assert cli.main(["export", "x.json", "--out", "m.mlpackage"]) == cli.FAILED == 1
    lines = said(capsys)
    assert len(lines) == 2
    assert lines[0].startswith("ncps-mlx export: 'x.json' is not a well-formed safetensors file")
    assert lines[1] == see("checkpoint-unreadable")


def test_validate_of_a_file_that_is_no_toml_lists_its_problem(workdir, capsys):
    assert cli.main(["validate", "x.json"]) == 2
    lines = said(capsys)
    assert lines[0] == "x.json: 1 problem in the config:"
    assert lines[1].startswith("  - config: TOML syntax error in x.json, line 1")


def test_export_without_coremltools_says_only_how_to_install_it(workdir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import coremltools now fails
    assert cli.main(["export", "model.safetensors", "--out", "m.mlpackage"]) == 1
    assert said(capsys) == [
        "ncps-mlx export: Core ML export needs coremltools: pip install 'ncps-mlx[export]'"
    ]


@pytest.mark.parametrize(
    "error, line",
    [
        (
            ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"),
            "matplotlib is not installed: pip install 'ncps-mlx[plot]'",
        ),
        (
            ImportError("[load_uea] needs aeon: pip install 'ncps-mlx[data]'\nSee there."),
            "needs aeon: pip install 'ncps-mlx[data]'",
        ),
    ],
)
def test_a_missing_extra_is_its_install_line(error, line, monkeypatch, capsys):
    def missing(args):
        raise error

    monkeypatch.setattr(cli, "_kernels", missing)
    assert cli.main(["kernels", "status"]) == 1
    assert said(capsys) == [f"ncps-mlx kernels: {line}"]


@pytest.mark.parametrize(
    "error, code, line",
    [
        (PermissionError(13, "Permission denied", "out/x"), 1, "Permission denied: 'out/x'"),
        (CheckpointError("damaged\nSee docs/troubleshooting.md#a."), 1, "damaged"),
        (ValueError("[Monitor] 'interval' must be > 0"), 2, "'interval' must be > 0"),
        (cli.UsageError("--kind x needs --y"), 2, "--kind x needs --y"),
    ],
)
def test_the_top_level_maps_errors_to_exit_codes_and_lines(error, code, line, monkeypatch, capsys):
    def failing(args):
        raise error

    monkeypatch.setattr(cli, "_kernels", failing)
    assert cli.main(["kernels", "status"]) == code
    assert said(capsys)[0] == f"ncps-mlx kernels: {line}"


def test_a_bug_keeps_its_traceback(monkeypatch):
    def buggy(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "_kernels", buggy)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["kernels", "status"])


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_wherever_it_is_given(where, workdir):
    argv = ["export", "x.json", "--out", "m.mlpackage"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(CheckpointError, match="not a well-formed safetensors file"):
        cli.main(argv)


def test_a_failed_training_is_exit_1_in_one_line_and_a_traceback_with_debug(
    workdir, monkeypatch, capsys
):
    import ncps_mlx.config

    def diverged(config):
        raise ValueError("[fit] 'y' holds nan at sample 3")

    monkeypatch.setattr(ncps_mlx.config, "run_config", diverged)
    Path("run.toml").write_text(RUN_TOML.format(data="sine_waves"))
    assert cli.main(["train", "run.toml"]) == 1
    assert said(capsys) == ["ncps-mlx train: 'y' holds nan at sample 3"]
    with pytest.raises(cli.CommandFailed):
        cli.main(["--debug", "train", "run.toml"])


def test_version_help_and_no_command(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"{ncps_mlx.__version__}\n"
    assert cli.main(["export", "--help"]) == 0
    assert "--timespans, --no-timespans" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert "usage: ncps-mlx" in capsys.readouterr().out


def run_cli(cwd, *arguments):
    """``ncps-mlx`` in a fresh interpreter, as a terminal starts it."""
    return subprocess.run(
        [sys.executable, "-m", "ncps_mlx.cli", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_a_mistake_through_the_real_entry_point(workdir):
    done = run_cli(workdir, "monitor", "report", "missing.jsonl")
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr == f"ncps-mlx monitor: run: no file 'missing.jsonl'\n{help_line('monitor')}\n"
    )


# -- export: what the checkpoint says, and no noise -----------------------------------

RUN_TOML = """\
seed = 0

[data]
name = "{data}"
options = {{ num_sequences = 12, seq_len = 6 }}
validation_fraction = 0.25

[model]
type = "CfC"
units = 4

[training]
epochs = 1
batch_size = 3

[output]
dir = "run"
progress = false
"""

CHECKPOINTS = ("run/model.safetensors", "run/checkpoints/last.safetensors")
CHECKPOINTS += ("run/checkpoints/best.safetensors",)


@pytest.mark.parametrize("data, timespans", [("irregular_oscillator", True), ("sine_waves", False)])
def test_train_and_fit_record_the_inputs_the_model_was_trained_with(
    data, timespans, workdir, capsys
):
    Path("run.toml").write_text(RUN_TOML.format(data=data))
    assert cli.main(["train", "run.toml"]) == 0
    for path in CHECKPOINTS:
        header, _ = io.read_checkpoint(path)
        assert header["metadata"][TRAINED_WITH] == {"timespans": timespans, "mask": False}
        assert read_trained_with(header["metadata"]) == {"timespans": timespans, "mask": False}


def test_fit_records_a_mask(tmp_path):
    data = datasets.sine_waves(8, 5, seed=0)
    masked = dataclasses.replace(data, mask=np.ones(data.x.shape[:2], dtype=bool))
    model = CfC(2, 4, proj_size=1)
    fit(model, masked, epochs=1, batch_size=4, checkpoint_dir=tmp_path, progress=False)
    header, _ = io.read_checkpoint(tmp_path / "last.safetensors")
    assert read_trained_with(header["metadata"]) == {"timespans": False, "mask": True}


@pytest.mark.parametrize(
    "metadata",
    [{}, {TRAINED_WITH: "yes"}, {TRAINED_WITH: {"timespans": 1, "mask": False}}],
)
def test_a_missing_or_malformed_record_says_nothing(metadata):
    assert read_trained_with(metadata) is None


@needs_coremltools
def test_export_keeps_dt_for_a_model_trained_with_timespans(workdir, capsys):
    Path("run.toml").write_text(RUN_TOML.format(data="irregular_oscillator"))
    assert cli.main(["train", "run.toml"]) == 0
    capsys.readouterr()
    for path in CHECKPOINTS:
        assert cli.main(["export", path, "--out", "m.mlpackage"]) == 0
        captured = capsys.readouterr()
        assert captured.out == "wrote m.mlpackage (inputs: x, h, dt)\n"
        assert captured.err == ""  # neither a note nor coremltools' progress bars
        assert ncps_mlx.export.read_metadata("m.mlpackage")["inputs"]["dt"] == [1, 1]
    argv = ["export", CHECKPOINTS[0], "--out", "m.mlpackage", "--no-timespans"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == "wrote m.mlpackage (inputs: x, h)\n"


@needs_coremltools
def test_export_of_a_checkpoint_without_a_record_says_so_and_leaves_dt_out(workdir, capsys):
    assert cli.main(["export", "model.safetensors", "--out", "m.mlpackage"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "wrote m.mlpackage (inputs: x, h)\n"
    assert captured.err == (
        "ncps-mlx export: note: the checkpoint does not say whether its model was trained "
        "with timespans; exported without the 'dt' input (--timespans adds it)\n"
    )
    assert cli.main(["export", "model.safetensors", "--out", "m.mlpackage", "--timespans"]) == 0
    assert capsys.readouterr() == ("wrote m.mlpackage (inputs: x, h, dt)\n", "")


@needs_coremltools
@pytest.mark.parametrize(
    "argv, line",
    [
        (["--target", "macOS99"], "ncps-mlx export: unknown --target 'macOS99'; use one of "),
        (
            ["--kind", "stateful", "--target", "macOS14"],
            "ncps-mlx export: --kind stateful needs --target >= macOS15 (or its iOS "
            "equivalent), got macOS14",
        ),
    ],
)
def test_export_target_mistakes_name_the_flags(argv, line, workdir, capsys):
    assert cli.main(["export", "model.safetensors", "--out", "m.mlpackage", *argv]) == 2
    lines = said(capsys)
    assert lines[0].startswith(line) and len(lines) <= 2
    assert not Path("m.mlpackage").exists()


@needs_coremltools
def test_unknown_target_lists_the_macos_names_the_kind_can_use(workdir):
    with pytest.raises(ValueError, match="unknown minimum_deployment_target") as raised:
        ncps_mlx.export.to_coreml(io.load("model.safetensors"), "m.mlpackage", kind="stateful",
                                  minimum_deployment_target="macOS99")  # fmt: skip
    names = str(raised.value).rpartition("use one of ")[2].split(", ")
    assert "macOS15" in names and "iOS18" in names
    assert "macOS14" not in names and "iOS17" not in names


@needs_coremltools
def test_export_in_a_fresh_process_prints_no_coremltools_noise(workdir):
    """Importing coremltools off macOS logs eight "Failed to load _MLModelProxy" lines,
    and converting draws three progress bars: none reaches the user."""
    done = run_cli(workdir, "export", "model.safetensors", "--out", "m.mlpackage", "--timespans")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "wrote m.mlpackage (inputs: x, h, dt)\n"
    assert done.stderr == ""


@needs_coremltools
def test_quieting_coremltools_restores_its_logging_and_progress_bars():
    from coremltools.converters.mil.mil.passes import pass_pipeline

    from ncps_mlx.export import coreml

    logger = logging.getLogger("coremltools")
    level, bar = logger.level, pass_pipeline.tqdm
    coreml.require_coremltools()
    with coreml._without_progress_bars():
        assert pass_pipeline.tqdm is not bar
        assert pass_pipeline.tqdm(range(3)).disable  # a bar that draws nothing
    assert (logger.level, pass_pipeline.tqdm) == (level, bar)
    assert logger.isEnabledFor(logging.WARNING)  # warnings while converting are shown
