"""A corpus of hostile checkpoints: what an unlucky disk or an attacker could hand to
``ncps_mlx.load`` and ``fit(resume=True)``.

Each case is a file and its kind: truncations and single-byte flips of real checkpoints
(the damage a disk or a copy does), crafted safetensors headers (sizes that overflow,
offsets outside the file), and crafted configs and training states sealed with a valid
digest (what an attacker who knows the format writes). :mod:`tests.checkpoint_worker`
loads them one by one in a separate process.
"""

import json
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

import ncps_mlx
from ncps_mlx import LTC, CfC
from ncps_mlx.wirings import AutoNCP

# What each case is loaded with by the worker: a model, or a resumed fit.
LOAD, RESUME = "load", "resume"


def base_models() -> dict[str, Any]:
    """Small models of every saved form: plain, wired, LTC, mixed memory, projection."""
    mx.random.seed(0)
    return {
        "cfc": CfC(3, 8, backbone_units=8),
        "cfc_ncp": CfC(3, AutoNCP(10, 2)),
        "ltc_ncp": LTC(3, AutoNCP(10, 2)),
        "ltc_mixed": LTC(3, 5, mixed_memory=True, proj_size=2),
    }


def train(folder: Path, epochs: int = 1, resume: bool = False) -> None:
    """A small run with a checkpoint_dir; the training checkpoints of the corpus are its."""
    from ncps_mlx.datasets import sine_waves
    from ncps_mlx.training import fit

    mx.random.seed(0)
    fit(
        CfC(2, 8, backbone_units=8, proj_size=1),
        sine_waves(16, 10, seed=1),
        epochs=epochs,
        batch_size=8,
        checkpoint_dir=folder,
        resume=resume,
        progress=False,
    )


def training_checkpoint(folder: Path) -> Path:
    """A real ``last.safetensors``, after one epoch of :func:`train`."""
    train(folder)
    return folder / "last.safetensors"


def split(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header (with ``__metadata__``) and data section."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join(header: Any, data: bytes) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text)) + text + data


def sealed(path: Path, edit: Callable[[dict, dict], None]) -> bytes:
    """``path`` with ``edit(header, arrays)`` applied and a valid digest: an attacker's file."""
    from ncps_mlx import _safetensors

    arrays, metadata = mx.load(str(path), return_metadata=True)
    header = json.loads(metadata["ncps_mlx"])
    edit(header, arrays)
    text = json.dumps(header)
    metadata = {"ncps_mlx": text, "ncps_mlx.sha256": _safetensors.digest(text, arrays)}
    out = path.with_suffix(".sealed.safetensors")
    mx.save_safetensors(str(out), arrays, metadata=metadata)
    data = out.read_bytes()
    out.unlink()
    return data


def _set(*keys: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(header: dict, arrays: dict) -> None:
        target = header
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _drop(key: str) -> Callable[[dict, dict], None]:
    return lambda header, arrays: header["model"].pop(key)


def _array(key: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(header: dict, arrays: dict) -> None:
        arrays[key] = value

    return edit


def _ncp(inter: int, command: int, sensory_fanout: int, recurrent: int) -> dict:
    """An NCP wiring config for 3 features and 2 motor neurons, sized as given."""
    return {
        "class_name": "NCP",
        "inter_neurons": inter,
        "command_neurons": command,
        "motor_neurons": 2,
        "sensory_fanout": sensory_fanout,
        "inter_fanout": 1,
        "recurrent_command_synapses": recurrent,
        "motor_fanin": 1,
        "input_dim": 3,
    }


# Crafted configs of the CfC/LTC bases, sealed: (name, base, edit).
CONFIGS = [
    ("autoncp_units_30000", "cfc_ncp", _set("model", "units", "units", value=30000)),
    ("autoncp_units_3000", "cfc_ncp", _set("model", "units", "units", value=3000)),
    ("backbone_layers_1e6", "cfc", _set("model", "backbone_layers", value=10**6)),
    ("backbone_units_1e9", "cfc", _set("model", "backbone_units", value=10**9)),
    ("units_1e9", "cfc", _set("model", "units", value=10**9)),
    ("ode_unfolds_1e9", "ltc_ncp", _set("model", "ode_unfolds", value=10**9)),
    ("ltc_units_5000", "ltc_mixed", _set("model", "units", value=5000)),
    ("input_size_1e9", "cfc", _set("model", "input_size", value=10**9)),
    ("ltc_units_20", "ltc_mixed", _set("model", "units", value=20)),
    ("units_off_by_one", "cfc", _set("model", "units", value=9)),
    ("return_sequences_string", "cfc", _set("model", "return_sequences", value="false")),
    ("batch_first_int", "cfc", _set("model", "batch_first", value=0)),
    ("activation_with_wiring", "cfc_ncp", _set("model", "activation", value="bogus")),
    ("activation_unknown", "cfc", _set("model", "activation", value="bogus")),
    ("mode_unknown", "cfc", _set("model", "mode", value="fast")),
    ("solver_unknown", "ltc_ncp", _set("model", "solver", value="euler")),
    ("epsilon_nan", "ltc_ncp", _set("model", "epsilon", value=float("nan"))),
    ("epsilon_string", "ltc_ncp", _set("model", "epsilon", value="1e-8")),
    ("dropout_above_one", "cfc", _set("model", "backbone_dropout", value=2.0)),
    ("units_negative", "cfc", _set("model", "units", value=-3)),
    ("units_float", "cfc", _set("model", "units", value=8.0)),
    ("units_bool", "cfc", _set("model", "units", value=True)),
    ("units_list", "cfc", _set("model", "units", value=[8])),
    ("proj_size_zero", "ltc_mixed", _set("model", "proj_size", value=0)),
    ("unknown_key", "cfc", _set("model", "colour", value="blue")),
    ("missing_input_size", "cfc", _drop("input_size")),
    ("missing_units", "cfc", _drop("units")),
    ("class_unknown", "cfc", _set("model", "class_name", value="GRU")),
    ("class_missing", "cfc", _drop("class_name")),
    ("model_is_list", "cfc", _set("model", value=[1, 2])),
    ("metadata_is_list", "cfc", _set("metadata", value=[1])),
    ("format_version_string", "cfc", _set("format_version", value="1")),
    ("format_version_future", "cfc", _set("format_version", value=99)),
    ("wiring_class_unknown", "cfc_ncp", _set("model", "units", "class_name", value="Grid")),
    ("wiring_seed_string", "cfc_ncp", _set("model", "units", "seed", value="1")),
    ("wiring_sparsity_nan", "cfc_ncp", _set("model", "units", "sparsity_level", value="nan")),
    ("wiring_input_dim_off", "ltc_ncp", _set("model", "units", "input_dim", value=4)),
    ("wiring_extra_key", "ltc_ncp", _set("model", "units", "extra", value=1)),
    ("wiring_not_built", "ltc_ncp", _set("model", "units", "input_dim", value=None)),
    ("ncp_huge", "ltc_ncp", _set("model", "units", value=_ncp(10**6, 10**6, 1, 10**9))),
    ("ncp_recurrent_1e9", "ltc_ncp", _set("model", "units", value=_ncp(5, 3, 2, 10**9))),
    (
        "plain_wiring_huge",
        "ltc_ncp",
        _set(
            "model",
            "units",
            value={
                "class_name": "Wiring",
                "units": 10**5,
                "output_dim": 2,
                "input_dim": 3,
                "adjacency_matrix": [[0]],
                "sensory_adjacency_matrix": None,
            },
        ),
    ),
    (
        "weights_int32",
        "cfc",
        lambda h, a: a.update(
            {k: v.astype(mx.int32) for k, v in a.items() if k.startswith("model.")}
        ),
    ),
    ("weights_mixed_dtypes", "cfc", _array("model.rnn_cell.ff1.bias", mx.zeros((8,), mx.float16))),
    ("weight_wrong_shape", "cfc", _array("model.rnn_cell.ff1.weight", mx.zeros((3, 3)))),
    ("weight_missing", "cfc", lambda h, a: a.pop("model.rnn_cell.ff1.bias")),
    ("weight_extra", "cfc", _array("model.rnn_cell.extra", mx.zeros((2,)))),
    (
        "wiring_matrix_edited",
        "ltc_ncp",
        lambda h, a: a.update({"wiring.adjacency_matrix": a["wiring.adjacency_matrix"] * 0}),
    ),
    ("wiring_matrix_missing", "ltc_ncp", lambda h, a: a.pop("wiring.adjacency_matrix")),
]

# Crafted training states, sealed, given to fit(resume=True).
TRAINING = [
    ("optimizer_wrong_shape", _array("optimizer.rnn_cell.ff1.bias.m", mx.zeros((3,)))),
    (
        "optimizer_wrong_dtype",
        lambda h, a: a.update(
            {"optimizer.rnn_cell.ff1.bias.m": a["optimizer.rnn_cell.ff1.bias.m"].astype(mx.float16)}
        ),
    ),
    ("optimizer_missing", lambda h, a: a.pop("optimizer.rnn_cell.ff1.bias.m")),
    ("optimizer_step_float", lambda h, a: a.update({"optimizer.step": mx.array(1.5)})),
    ("rng_key_shape", _array("rng.key", mx.zeros((5,), mx.uint32))),
    ("rng_key_missing", lambda h, a: a.pop("rng.key")),
    ("loop_state_missing", lambda h, a: h["metadata"].pop("training")),
    ("epoch_string", _set("metadata", "training", "epoch", value="1")),
    ("epoch_huge", _set("metadata", "training", "epoch", value=10**12)),
    ("history_not_list", _set("metadata", "training", "history", value={"loss": 1})),
    ("history_row_string", _set("metadata", "training", "history", value=["row"])),
    ("data_order_bogus", _set("metadata", "training", "data_order", value={"state": 1})),
    ("callbacks_not_list", _set("metadata", "training", "callbacks", value=3)),
    ("stop_training_string", _set("metadata", "training", "stop_training", value="no")),
]


def _table_cases(path: Path) -> Iterator[tuple[str, bytes]]:
    """Headers crafted past the safetensors format: sizes, offsets, dtypes, nesting."""
    header, data = split(path)
    first = next(key for key in header if key != "__metadata__")

    def with_entry(**changes: Any) -> bytes:
        crafted = json.loads(json.dumps(header))
        crafted[first].update(changes)
        return join(crafted, data)

    yield "shape_overflow", with_entry(shape=[2**62, 2**62])
    yield "shape_overflow_64", with_entry(shape=[2**32, 2**32, 2**32])
    yield "shape_negative", with_entry(shape=[-1, 8])
    yield "shape_float", with_entry(shape=[8.0])
    yield "shape_deep", with_entry(shape=[1] * 64)
    yield "offsets_past_end", with_entry(data_offsets=[0, 10**12])
    yield "offsets_reversed", with_entry(data_offsets=[32, 0])
    yield "offsets_string", with_entry(data_offsets="0,32")
    yield "dtype_unknown", with_entry(dtype="F128")
    yield "dtype_missing", join({**header, first: {"shape": [1]}}, data)
    yield "entry_not_object", join({**header, first: [1, 2]}, data)
    yield "metadata_not_strings", join({**header, "__metadata__": {"ncps_mlx": 1}}, data)
    yield "header_not_object", join(b"[1, 2, 3]", data)
    yield "header_not_utf8", join(b"\xff\xfe{}", data)
    yield "header_nested_deep", join(b"[" * 100_000 + b"]" * 100_000, data)
    yield "header_length_huge", struct.pack("<Q", 2**63) + b"{}"
    yield "header_length_past_end", struct.pack("<Q", 10**6) + b"{}" + data[:10]
    yield "data_extra_bytes", join(header, data + b"\0" * 16)
    yield "data_missing_bytes", join(header, data[:-4])
    yield (
        "config_nested_deep",
        join({**header, "__metadata__": {"ncps_mlx": "[" * 100_000 + "]" * 100_000}}, data),
    )
    yield "config_not_json", join({**header, "__metadata__": {"ncps_mlx": "{model"}}, data)
    yield "config_absent", join({**header, "__metadata__": {}}, data)
    yield "empty_file", b""


Case = tuple[str, str, str, str | None]  # kind, how it is loaded, path, undamaged base


def corpus(folder: Path, flips: int = 100, seed: int = 0) -> list[Case]:
    """Write the corpus into ``folder``, one :data:`Case` per file.

    The base is the undamaged file a truncated or flipped one came from: loading the
    same model as it is harmless (a flip in the header's padding); anything else that
    loads is a defect.
    """
    rng = random.Random(seed)
    cases: list[tuple[str, str, str, bytes, Path | None]] = []
    paths = {
        name: ncps_mlx.save(model, folder / f"base_{name}.safetensors")
        for name, model in base_models().items()
    }
    for name, path in paths.items():
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        for cut in (0, 4, 8, 9, 8 + length // 2, 8 + length, 8 + length + 1, len(data) - 1):
            cases.append(("truncation", f"{name}_cut{cut}", LOAD, data[:cut], path))
    for index in range(flips):
        name = rng.choice(sorted(paths))
        data = bytearray(paths[name].read_bytes())
        where = rng.randrange(len(data))
        data[where] = (data[where] + rng.randrange(1, 256)) % 256
        cases.append(("byte_flip", f"{name}_flip{index}_at{where}", LOAD, bytes(data), paths[name]))
    for name, data in _table_cases(paths["cfc"]):
        cases.append(("crafted_header", name, LOAD, data, None))
    for name, base, edit in CONFIGS:
        cases.append(("crafted_config", name, LOAD, sealed(paths[base], edit), None))
    last = training_checkpoint(folder / "run")
    for name, edit in TRAINING:
        cases.append(("crafted_training_state", name, RESUME, sealed(last, edit), None))
    header, data = split(last)
    optimizer = next(
        key for key in header if key.startswith("optimizer.") and key != "optimizer.step"
    )
    crafted = json.loads(json.dumps(header))
    crafted[optimizer]["shape"] = [2**31, 2**31, 4]
    cases.append(("crafted_header", "optimizer_shape_overflow", RESUME, join(crafted, data), None))
    written = []
    for kind, name, how, data, base in cases:
        path = folder / kind / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append((kind, how, str(path), str(base) if base else None))
    return written


def same_model(a: Any, b: Any) -> bool:
    """Whether two loaded models have the same config and bit-identical weights."""
    from mlx.utils import tree_flatten

    if a.get_config() != b.get_config():
        return False
    left, right = dict(tree_flatten(a.parameters())), dict(tree_flatten(b.parameters()))
    return left.keys() == right.keys() and all(
        left[k].dtype == right[k].dtype and np.array_equal(np.array(left[k]), np.array(right[k]))
        for k in left
    )
