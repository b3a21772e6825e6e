"""``ncps-mlx policies``: the evaluation table, the exported policies in the loop, the
circuit figures and the latency, reproduced into one folder by one command."""

import importlib.util
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from .._files import atomic_write
from .evaluation import DEFAULT, Imitation, Log, TrainedPolicy, run_evaluation
from .loop import rollout
from .models import LABELS, MODEL_KINDS
from .policy import ModelPolicy

REPORT = "report.md"
"""The report's file name: written last, so a folder holding it holds a finished run."""
NCP_KINDS = ("cfc-ncp", "ltc-ncp")
DEPLOYMENT, FIGURES = "Deployed in the loop", "Inside the circuit"  # the report's titles


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), suffix=path.suffix)


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding a finished run unless ``overwrite``, which clears it."""
    if (out / REPORT).exists() and not overwrite:
        raise ValueError(
            f"[policies] {str(out)!r} already holds a run: --overwrite replaces it, or "
            "choose another --out"
        )
    if overwrite:
        for name in ("models", "deployment", "figures"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _save_model(out: Path, policy: TrainedPolicy) -> None:
    io.save(policy.model, out / "models" / f"{policy.task}-{policy.kind}.safetensors")


def _figures(out: Path, policy: TrainedPolicy, log: Log) -> list[str]:
    """The circuit figures of one policy along a clean episode of seed 0."""
    from .circuit import (
        command_attributions,
        plot_attributions,
        plot_circuit_activity,
        plot_traces,
        record_activity,
    )
    from .policy import model_inputs

    acting = ModelPolicy(policy.model, policy.task)
    episode = rollout(acting, acting.task, 0)
    x = model_inputs(policy.model, acting.task.encode(episode.seen), episode.timespans)
    folder = out / "figures"
    activity = record_activity(policy.model, x, episode.timespans)
    steps = _eventful_steps(activity.states)
    plot_circuit_activity(policy.model, activity, steps, path=folder / "circuit.png")
    plot_traces(activity, path=folder / "traces.png")
    attributions = command_attributions(policy.model, x, episode.timespans)
    plot_attributions(attributions, path=folder / "attributions.png")
    log(f"figures of the {policy.task} {LABELS[policy.kind]} in {folder}")
    return ["circuit.png", "traces.png", "attributions.png"]


def _eventful_steps(states: np.ndarray, count: int = 6) -> list[int]:
    """``count`` steps spread over the part of an episode where the neurons still move
    (until their largest change per step falls below 1% of its peak): a balanced
    pendulum's last hundred steps all look alike."""
    change = np.abs(np.diff(states, axis=0)).max(axis=1)
    moving = np.flatnonzero(change >= 0.01 * change.max()) if change.size else []
    last = int(moving[-1]) + 1 if len(moving) else len(states) - 1
    return sorted({int(round(s)) for s in np.linspace(0, last, count)})


def run_policies(
    out: str | Path = "ncps_policies",
    *,
    tasks: Sequence[str] = ("pendulum", "cartpole"),
    kinds: Sequence[str] = MODEL_KINDS,
    seeds: Sequence[int] = range(20),
    train_seed: int = 0,
    settings: Imitation = DEFAULT,
    export: bool = True,
    figures: bool = True,
    latency: bool = True,
    overwrite: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Train, evaluate, deploy and inspect policies; write everything under ``out``.

    Writes ``evaluation.md`` and ``evaluation.json`` (every return, with the seeds and
    settings), the trained models under ``models/``, and, as asked: the exported CfC-NCP
    of each task run in the loop (``deployment/``, needs coremltools), the circuit figures
    of the first task's CfC-NCP (``figures/``, needs matplotlib), the per-step latency
    against the reference ``ncps`` model (needs the ``interop`` extra, else said so), and
    last ``report.md`` with all of it.

    Returns:
        What the report shows, as a dictionary (also in ``results.json``).
    """
    out = Path(out)
    prepare_folder(out, overwrite)
    missing = _missing_parts(export, figures)
    for title, reason in missing.items():  # said before the training, not after it
        log(f"{title.lower()}: skipped, {reason}")
    trained: dict[tuple[str, str], TrainedPolicy] = {}

    def keep(policy: TrainedPolicy) -> None:
        trained[policy.task, policy.kind] = policy
        _save_model(out, policy)

    evaluation = run_evaluation(
        tasks, kinds, seeds=seeds, train_seed=train_seed, settings=settings, log=log, trained=keep
    )
    _write_text(out / "evaluation.md", evaluation.markdown() + "\n")
    _write_text(out / "evaluation.json", evaluation.to_json() + "\n")
    results: dict[str, Any] = {"evaluation": json.loads(evaluation.to_json())}
    sections = ["## Returns\n", _returns_intro(evaluation), evaluation.markdown()]
    ncps = [(task, kind) for (task, kind) in trained if kind in NCP_KINDS]
    sections += [f"## {title}\n\nSkipped: {reason}\n" for title, reason in missing.items()]
    if export and ncps and DEPLOYMENT not in missing:
        sections += _deployment(out, trained, ncps, seeds, results, log)
    if figures and ncps and FIGURES not in missing:
        names = _figures(out, trained[ncps[0]], log)
        sections += [f"## {FIGURES}\n"] + [f"![{n}](figures/{n})\n" for n in names]
    if latency and ncps:
        sections += _latency(trained, ncps, results, log)
    _write_text(out / "results.json", json.dumps(results, indent=1, default=_plain) + "\n")
    _write_text(out / REPORT, "# Neural circuit policies\n\n" + "\n".join(sections) + "\n")
    log(f"report in {out / REPORT}")
    return results


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else str(value)


def _returns_intro(evaluation: Any) -> str:
    seeds = evaluation.seeds
    conditions = [
        name if name == p.name else f"{name} ({p.name})"
        for name, p in evaluation.conditions.items()
    ]
    return (
        f"Mean ± standard deviation of the return over {len(seeds)} episodes (seeds "
        f"{seeds[0]}..{seeds[-1]}); every model trained with seed {evaluation.train_seed} by "
        f"behaviour cloning and DAgger on the expert. Conditions: {', '.join(conditions)}.\n"
    )


def _missing_parts(export: bool, figures: bool) -> dict[str, str]:
    """The report's parts asked for whose optional dependency is missing, by title, with
    how to install it."""
    from ..export.coreml import require_coremltools

    missing = {}
    if export:
        try:
            require_coremltools()
        except ImportError as error:
            missing[DEPLOYMENT] = str(error).splitlines()[0]
    if figures and importlib.util.find_spec("matplotlib") is None:
        missing[FIGURES] = "the figures need matplotlib: pip install 'ncps-mlx[plot]'"
    return missing


def _deployment(out, trained, ncps, seeds, results, log) -> list[str]:
    """The CfC-NCPs exported to Core ML (float16) and run in the loop from the package."""
    from .deploy import check_deployment

    sections = [f"## {DEPLOYMENT}\n"]
    results["deployment"] = {}
    for task, kind in ncps:
        if kind != "cfc-ncp":
            continue
        path = out / "deployment" / f"{task}-{kind}.mlpackage"
        log(f"{task}: exporting the {LABELS[kind]} to Core ML and running the package in the loop")
        check = check_deployment(trained[task, kind].model, task, path, seeds=seeds)
        results["deployment"][task] = check.to_dict()
        sections += [f"### {task}: {LABELS[kind]}\n", check.markdown() + "\n"]
        log(f"{task}: the exported {LABELS[kind]} ran in the loop")
    return sections


def _latency(trained, ncps, results, log) -> list[str]:
    """Per-step latency of each NCP in the loop, against the reference model."""
    from .latency import loop_latency

    sections = ["## Latency in the loop\n"]
    results["latency"] = {}
    for task, kind in ncps:
        log(f"{task}: timing the {LABELS[kind]} in the loop against the reference")
        measured = loop_latency(trained[task, kind].model, task)
        results["latency"][f"{task}-{kind}"] = measured.to_dict()
        sections += [f"### {task}: {LABELS[kind]}\n", measured.markdown() + "\n"]
    return sections
