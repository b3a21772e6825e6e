"""TOML run configs: validation reports every problem before any compute; runs save."""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ncps_mlx import CfC, cli, config, datasets, load
from ncps_mlx.config import ConfigError, TrainingConfig, load_config, read_config, validate_config
from ncps_mlx.config._fields import keys_of
from ncps_mlx.training import EarlyStopping
from ncps_mlx.training.fit import check_data
from ncps_mlx.training.losses import LOSSES
from tests.config_reference import SECTIONS, key_table

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "run-configs.md"

# Tiny on purpose: an end-to-end run of it takes a second or two.
TINY = {
    "seed": 0,
    "data": {"name": "sine_waves", "options": {"num_sequences": 8, "seq_len": 6}},
    "model": {"type": "CfC", "units": 4, "backbone_units": 8},
    "training": {"epochs": 2, "batch_size": 4, "learning_rate": 0.01},
    "output": {"dir": "run", "progress": False},
}

TINY_TOML = """\
seed = 0

[data]
name = "sine_waves"
options = { num_sequences = 8, seq_len = 6 }
validation_fraction = 0.25

[model]
type = "CfC"
units = 4
backbone_units = 8

[training]
epochs = 2
batch_size = 4
learning_rate = 0.01
schedule = "cosine"
metrics = ["mae"]

[training.early_stopping]
patience = 3

[output]
dir = "run"
progress = false
monitor = true
"""


def tiny(**sections):
    """TINY with some sections' keys replaced (a value of None deletes the key)."""
    raw = copy.deepcopy(TINY)
    for section, updates in sections.items():
        for key, value in updates.items():
            if value is None:
                raw[section].pop(key, None)
            else:
                raw[section][key] = value
    return raw


def problems(raw, **kwargs):
    with pytest.raises(ConfigError) as caught:
        validate_config(raw, **kwargs)
    error = caught.value
    assert str(error).count("\n  - ") == len(error.problems)  # all listed in the message
    return error.problems


def single_problem(raw, **kwargs):
    found = problems(raw, **kwargs)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # output.dir is relative to the current folder: keep every run inside tmp_path.
    monkeypatch.chdir(tmp_path)


def test_a_valid_config_gets_defaults_that_fit_the_data():
    resolved = validate_config(TINY)
    info = resolved.data.info
    assert (info.input_size, info.output_size, info.per_step) == (2, 1, True)
    assert (info.train_size, info.val_size) == (6, 2)  # 0.2 of 8, rounded
    assert resolved.model.kwargs["return_sequences"] is True
    assert resolved.model.kwargs["proj_size"] == 1  # 4 units, 1 target
    assert resolved.model.parameters > 0
    assert (resolved.training.loss, resolved.training.metrics) == ("mse", ())
    assert resolved.training.steps_per_epoch == 2
    assert json.dumps(resolved.to_dict())
    assert "CfC(units=4" in resolved.summary()


def test_unknown_keys_get_a_suggestion():
    raw = tiny(model={"unitz": 4, "units": None})
    raw["trainig"] = {}
    found = problems(raw)
    assert any(p.startswith("model.unitz: unknown key; did you mean 'units'?") for p in found)
    assert any(p.startswith("trainig: unknown key; did you mean 'training'?") for p in found)
    assert any(p.startswith("model.units: missing") for p in found)


def test_wrong_types_are_named_and_a_bool_is_not_an_int():
    found = problems(tiny(training={"epochs": "10", "batch_size": True}))
    assert found == [
        "training.epochs: got '10' (a string); use an int >= 1",
        "training.batch_size: got true (a boolean); use an int >= 1",
    ]


def test_out_of_range_values():
    found = problems(tiny(training={"learning_rate": 0}, data={"validation_fraction": 1.0}))
    assert "training.learning_rate: got 0; use a number > 0" in found
    assert "data.validation_fraction: got 1.0; use a number in [0, 1)" in found


def test_bad_choices_suggest_the_closest():
    found = problems(tiny(training={"optimizer": "adamm"}, model={"type": "cfc"}))
    assert any(
        p.startswith("training.optimizer: got 'adamm'; did you mean 'adam'? choose one of")
        for p in found
    )
    assert any(p.startswith("model.type: got 'cfc'; did you mean 'CfC'?") for p in found)


def test_a_missing_data_file_and_both_name_and_path():
    missing = single_problem(tiny(data={"name": None, "options": None, "path": "no.npz"}))
    assert missing.startswith("data.path: no file at") and "no.npz" in missing
    both = single_problem(tiny(data={"path": "no.npz"}))
    assert both == "data.path: both name and path are set; keep one of them"


def test_generator_options_are_checked_against_its_signature():
    typo = single_problem(tiny(data={"options": {"num_sequence": 8}}))
    assert typo.startswith("data.options.num_sequence: unknown key; did you mean 'num_sequences'?")
    assert "seq_len" in typo  # the allowed keys are listed
    raw = tiny(data={"name": "irregular_oscillator", "options": {"noise": -1.0}})
    assert single_problem(raw).startswith("data.options.noise: [irregular_oscillator] need noise")


def test_an_output_size_mismatch_says_what_to_change():
    wiring = {"type": "AutoNCP", "units": 8, "output_size": 3}
    found = single_problem(tiny(model={"units": None, "backbone_units": None, "wiring": wiring}))
    assert found.startswith("model: the model has 3 outputs but the data needs 1 output")
    assert "set model.wiring.output_size = 1 or model.proj_size = 1" in found
    sequences = single_problem(tiny(model={"return_sequences": False}))
    assert sequences.startswith("model.return_sequences: is false, but the targets are per step")


def test_export_without_coremltools(monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import coremltools now fails
    found = single_problem(tiny(output={"export_coreml": True}))
    assert found.startswith("output.export_coreml: needs coremltools, which is not installed")


def test_toml_syntax_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('seed = 0\n[data]\nname = "sine_waves\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "broken.toml, line 3" in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_every_problem_is_reported_at_once():
    raw = tiny(
        training={"epochs": 0, "loss": "cross_entropy", "momentum": 0.9},
        model={"mode": "fast", "input_size": 3},
        output={"dir": None, "colour": True},
    )
    found = problems(raw)
    assert len(found) == 7, found
    for start in (
        "training.epochs:",
        "training.loss: 'cross_entropy' does not suit the data's float targets",
        "training.momentum: the 'adam' optimizer does not take it",
        "model.mode: got 'fast'",
        "model.input_size: it is taken from the data (2 features); remove it",
        "output.dir: missing",
        "output.colour: unknown key",
    ):
        assert any(p.startswith(start) for p in found), (start, found)


def test_training_figures_must_exist_to_stop_early_on_them():
    raw = tiny(data={"validation_fraction": 0}, training={"early_stopping": {"patience": 2}})
    raw["training"]["early_stopping"]["monitor"] = "val_loss"
    found = single_problem(raw)
    assert found.startswith("training.early_stopping.monitor: 'val_loss' is not logged (val_")
    schedule = {"type": "cosine", "step_size": 3}
    found = single_problem(tiny(training={"schedule": schedule}))
    assert found.startswith("training.schedule.step_size: a 'cosine' schedule does not take it")


def test_npz_data_classification_defaults(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 3)
    raw = tiny(data={"name": None, "options": None, "path": "d.npz"})
    resolved = validate_config(raw, base_dir=tmp_path)
    assert resolved.data.info.classification and resolved.data.info.output_size == 3
    assert resolved.model.kwargs == {"backbone_units": 8, "return_sequences": False, "proj_size": 3}
    assert (resolved.training.loss, resolved.training.metrics) == ("cross_entropy", ("accuracy",))

    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros((10, 4, 1), np.float32), val_x=x, val_y=x)
    raw = tiny(data={"name": None, "options": None, "path": "bad.npz", "validation_fraction": 0.1})
    found = problems(raw, base_dir=tmp_path)
    assert any(
        p.startswith("data.path: y is float32 (10, 4, 1), which does not fit") for p in found
    )


def test_load_config_needs_tomli_on_python_310(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "tomllib", None)
    with pytest.raises(ImportError, match="pip install tomli"):
        load_config(tmp_path / "any.toml")


def test_cli_validate_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(TINY_TOML)
    assert cli.main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "6 train / 2 validation sequences" in out and "parameters" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TOML.replace("epochs = 2", "epochs = -2"))
    assert cli.main(["validate", str(bad)]) == 2
    assert "training.epochs: got -2; use an int >= 1" in capsys.readouterr().err


def test_an_invalid_config_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TOML.replace('type = "CfC"', 'type = "GRU"'))
    assert cli.main(["train", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "model.type: got 'GRU'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_cli_train_end_to_end_and_resume(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    assert cli.main(["train", str(path)]) == 0
    run = tmp_path / "run"
    for name in ("model.safetensors", "metrics.json", "monitor.jsonl", "checkpoints"):
        assert (run / name).exists(), name
    assert (run / "checkpoints" / "last.safetensors").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert {"loss", "val_loss", "val_mae"} <= set(metrics["final"])
    assert metrics["config"]["training"]["schedule"]["type"] == "cosine"
    model = load(run / "model.safetensors")
    assert (model.input_size, model.output_size) == (2, 1)

    # The folder now holds a run: refused, unless resumed (with more epochs here).
    assert cli.main(["train", str(path)]) == 2
    assert "output.dir: 'run' already holds a run" in capsys.readouterr().err
    path.write_text(TINY_TOML.replace("epochs = 2", "epochs = 3"))
    assert cli.main(["train", str(path), "--resume"]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3


def test_the_examples_validate():
    resolved = read_config(EXAMPLES / "sine_waves.toml")
    assert resolved.model.wiring == {"type": "AutoNCP", "units": 16, "output_size": 1}
    pytest.importorskip("aeon")
    resolved = read_config(EXAMPLES / "japanese_vowels.toml")
    assert resolved.data.info.output_size == 9 and resolved.data.info.mask
    assert resolved.model.kwargs["return_sequences"] is False
    assert resolved.model.kwargs["proj_size"] == 9
    assert resolved.training.early_stopping is None  # nothing is tuned on the test split


def test_wiring_outputs_default_to_the_data():
    fully = {"type": "FullyConnected", "units": 5}
    ltc = validate_config(
        tiny(model={"type": "LTC", "units": None, "backbone_units": None, "wiring": fully})
    )
    assert ltc.model.wiring["output_dim"] == 1 and "proj_size" not in ltc.model.kwargs
    # A wired CfC outputs the wiring's last layer: every neuron of a one-layer wiring.
    cfc = validate_config(tiny(model={"units": None, "backbone_units": None, "wiring": fully}))
    assert "output_dim" not in cfc.model.wiring and cfc.model.kwargs["proj_size"] == 1
    found = single_problem(
        tiny(model={"units": None, "backbone_units": None, "wiring": {**fully, "output_dim": 1}})
    )
    assert found.startswith("model.wiring.output_dim: a CfC outputs all 5 neurons")


def test_the_documented_example_validates(tmp_path):
    block = GUIDE.read_text().split("## A complete file")[1].split("```toml\n", 1)[1]
    path = tmp_path / "documented.toml"
    path.write_text(block.split("```")[0])
    resolved = read_config(path)
    assert resolved.model.wiring["output_size"] == 1 and resolved.data.info.timespans


def test_the_guide_holds_the_key_tables_the_schema_makes():
    # The guide's tables are generated from the dataclasses' options: a key added to the
    # schema, or a changed default or bound, must show up in the documentation.
    page = GUIDE.read_text()
    for name, cls in SECTIONS.items():
        table = key_table(cls)
        assert table in page, f"{name} is stale: python -m tests.config_reference"
        for field, option in keys_of(cls):
            assert f"| `{field.name}` |" in table and option.doc, (name, field.name)
    training = key_table(TrainingConfig)
    assert "| `epochs` | an int | `10` | >= 1 |" in training
    assert "steps_per_epoch" not in training  # derived, not a key
    momentum = "| `momentum` | a number | `0` | in [0, 1); only with optimizer `sgd` |"
    assert momentum in training


def test_derived_fields_are_not_keys():
    found = single_problem(tiny(training={"steps_per_epoch": 3}))
    assert found.startswith(
        "training.steps_per_epoch: unknown key; did you mean 'lr_decay_per_epoch'? allowed "
        "keys: epochs,"
    )
    assert [field.name for field, _ in keys_of(config.DataConfig)] == [
        "name",
        "path",
        "options",
        "validation",
        "validation_fraction",
    ]


def test_list_items_are_checked_against_the_choices():
    found = problems(tiny(training={"metrics": ["maee", "mae", "mae"]}))
    assert found == [
        "training.metrics: got 'maee'; did you mean 'mae'? choose each from accuracy, "
        "binary_accuracy, mae, mse"
    ]
    resolved = validate_config(tiny(training={"metrics": ["mae", "mae", "mse"]}))
    assert resolved.training.metrics == ("mae", "mse")  # each figure once


def test_a_schedule_string_stands_for_its_type():
    bad = single_problem(tiny(training={"schedule": "cosin"}))
    assert bad == (
        "training.schedule: got 'cosin'; did you mean 'cosine'? "
        "choose one of none, cosine, exponential, step"
    )
    resolved = validate_config(tiny(training={"schedule": "step", "epochs": 3}))
    # 3 epochs of 2 batches: a third of the run is 2 steps; the rate halves by default.
    assert resolved.training.schedule == config.ScheduleConfig("step", decay_rate=0.5, step_size=2)
    typed = single_problem(tiny(training={"schedule": {"end_learning_rate": 0.0}}))
    assert typed.startswith("training.schedule.type: missing; add type = ... (one of none,")


def test_early_stopping_reports_the_callbacks_own_checks():
    early = {"patience": 0, "min_delta": -0.5, "mode": "mni"}
    found = problems(tiny(training={"early_stopping": early}))
    assert found == [
        "training.early_stopping.mode: got 'mni'; did you mean 'min'? choose one of auto, min, max",
        "training.early_stopping.patience: [EarlyStopping] patience must be an int >= 1, got 0",
        "training.early_stopping.min_delta: [EarlyStopping] min_delta must be a number >= 0, "
        "got -0.5",
    ]
    with pytest.raises(ValueError, match=r"patience must be an int >= 1, got True"):
        EarlyStopping(patience=True)  # the same check, for a caller of fit
    resolved = validate_config(tiny(training={"early_stopping": {"min_delta": 1}}))
    assert resolved.training.early_stopping == config.EarlyStoppingConfig(
        "val_loss", 5, 1.0, "auto"
    )


def _label_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "labels.npz", x=x, y=np.arange(10) % 3)
    return datasets.SequenceData(x, np.arange(10) % 3)


@pytest.mark.parametrize("labels", [False, True], ids=["float targets", "class labels"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_the_config_and_fit_agree_on_which_losses_suit_the_targets(loss, labels, tmp_path):
    if labels:
        data, model = (
            _label_data(tmp_path),
            CfC(3, 4, proj_size=3, return_sequences=False, batch_first=True),
        )
        raw = tiny(data={"name": None, "options": None, "path": "labels.npz"})
    else:
        data = datasets.sine_waves(8, 6)
        model = CfC(2, 4, proj_size=1, return_sequences=True, batch_first=True)
        raw = tiny()
    raw["training"]["loss"] = loss
    try:
        check_data(model, data, loss, "train")
        fit_refuses = False
    except ValueError:
        fit_refuses = True
    try:
        validate_config(raw, base_dir=tmp_path)
        config_refuses = False
    except ConfigError as error:
        config_refuses = any(p.startswith("training.loss:") for p in error.problems)
    assert config_refuses == fit_refuses == ((loss == "cross_entropy") != labels)


def test_metrics_must_suit_the_targets_as_losses_do():
    found = single_problem(tiny(training={"metrics": ["accuracy"]}))
    assert found == (
        "training.metrics: 'accuracy' does not suit the data's float targets; use "
        "binary_accuracy or mae or mse"
    )


def test_the_resolved_config_keeps_its_keys():
    # metrics.json stores to_dict(): its keys are what earlier runs recorded.
    resolved = validate_config(tiny(training={"early_stopping": {}})).to_dict()
    assert list(resolved) == ["seed", "data", "model", "training", "output", "source"]
    assert list(resolved["data"]) == [
        "source",
        "name",
        "path",
        "options",
        "validation",
        "validation_fraction",
        "info",
    ]
    assert list(resolved["model"]) == ["type", "units", "wiring", "kwargs", "parameters"]
    assert list(resolved["training"]) == [
        "epochs",
        "batch_size",
        "loss",
        "metrics",
        "optimizer",
        "learning_rate",
        "weight_decay",
        "momentum",
        "optimizer_options",
        "schedule",
        "clip_norm",
        "clip_tensor_norm",
        "clip_value",
        "l2",
        "l2_params",
        "lr_decay_per_epoch",
        "shuffle",
        "early_stopping",
        "memory_budget_mb",
        "steps_per_epoch",
    ]
    assert resolved["training"]["early_stopping"] == {
        "monitor": "val_loss",
        "patience": 5,
        "min_delta": 0.0,
        "mode": "auto",
    }
    assert list(resolved["output"]) == [
        "dir",
        "resume",
        "overwrite",
        "progress",
        "monitor",
        "export_coreml",
    ]


def test_optimizers_keep_their_own_defaults():
    adamw = validate_config(tiny(training={"optimizer": "adamw"}))
    assert config.build_optimizer(adamw.training).weight_decay == 0.01  # AdamW's default
    sgd = validate_config(tiny(training={"optimizer": "sgd", "momentum": 0.9}))
    built = config.build_optimizer(sgd.training)
    assert (built.momentum, built.weight_decay) == (0.9, 0.0)
    wrong = single_problem(tiny(training={"weight_decay": 0.1}))
    assert wrong == (
        "training.weight_decay: the 'adam' optimizer does not take it; "
        "remove it, or use optimizer 'adamw' or 'sgd'"
    )


def test_a_step_over_the_memory_budget_is_a_problem_of_the_budget():
    # 1 KiB: less than a step of one sample needs.
    found = single_problem(tiny(training={"memory_budget_mb": 0.001}))
    assert found.startswith("training.memory_budget_mb: a training step of batch_size=")
    assert "the memory budget is 0.001 MiB" in found and "no batch_size fits" in found
