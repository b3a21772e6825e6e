"""What the report says about the NCP against its recurrent baselines, written from the
recorded numbers (``metrics.json``) alone, so every sentence follows the run it reports."""

from typing import Any

#: The error figures compared, as ``metrics.json`` names them and as the report does.
ERRORS = {"mse": "test MSE", "mae": "test MAE"}


def percent_lower(low: float, high: float) -> float:
    """How much lower ``low`` is than ``high``, in percent of ``high``."""
    return 100.0 * (high - low) / high


def _label(baseline: dict[str, Any]) -> str:
    return baseline["description"].split(" ")[0]  # "GRU(21)"


def _error_sentence(figure: str, ncp: float, other: float, label: str) -> tuple[str, str]:
    """``("better" | "worse" | "tie", sentence)`` for one error figure."""
    name = ERRORS[figure]
    if round(ncp, 4) == round(other, 4):
        return "tie", f"{name}: the NCP and the {label} tie at {ncp:.4f}"
    if ncp < other:
        pct = percent_lower(ncp, other)
        return "better", f"{name}: {pct:.1f}% lower than the {label}'s ({ncp:.4f} vs {other:.4f})"
    pct = percent_lower(other, ncp)
    return "worse", (
        f"{name}: the {label}'s is {pct:.1f}% lower than the NCP's ({other:.4f} vs {ncp:.4f})"
    )


def _time_sentence(ncp: float, theirs: float, label: str) -> tuple[str, str]:
    """``("better" | "worse" | "tie", sentence)`` for the training times."""
    if ncp < theirs:
        return "better", (
            f"training time: {theirs / ncp:.1f}x shorter than the {label}'s "
            f"({ncp:.1f} s vs {theirs:.1f} s)"
        )
    if ncp > theirs:
        return "worse", (
            f"training time: the {label}'s is {ncp / theirs:.1f}x shorter "
            f"({theirs:.1f} s vs {ncp:.1f} s)"
        )
    return "tie", f"training time: the NCP and the {label} took {ncp:.1f} s each"


def _notes(metrics: dict[str, Any], timed: bool) -> list[str]:
    """What the figures need beside them to be read right."""
    if not timed:
        return ["training times are not compared: a resumed run times only its resumed part"]
    if metrics["training"].get("fused_kernels"):
        return [
            "training times: the NCP ran on this package's fused CPU kernels, the baselines "
            "on MLX graph operations, so they compare implementations more than architectures"
        ]
    return []


def _by_design(metrics: dict[str, Any]) -> list[str]:
    """What the models' structure gives, stated with the models' own counts."""
    model, baselines = metrics["model"], list(metrics["baselines"].values())
    others = " and ".join(f"the {_label(b)}" for b in baselines)
    neurons = [f"{count} {kind}" for kind, count in model["neurons"].items()]
    layers = ", ".join(neurons[:-1]) + f" and {neurons[-1]}" if len(neurons) > 1 else neurons[0]
    masked = model["parameters"] - model["unmasked_parameters"]
    return [
        "irregular sampling: the NCP takes each step's elapsed time as its timespan, which "
        f"enters its time gates; {others} only see it as one more input feature and must "
        "learn what it means",
        f"structure: the NCP's {sum(model['neurons'].values())} neurons form "
        f"{len(neurons)} layers ({layers} neurons), each reading only the layer before it "
        "and itself, its ff1 and ff2 weights between layers masked to the wiring's "
        f"synapses (wiring.png); {others} are one layer in which every unit feeds every unit",
        f"parameters: matched by construction ({model['parameters']} for the NCP, "
        + ", ".join(f"{b['parameters']} for the {_label(b)}" for b in baselines)
        + f"); the wiring masks {masked} of the NCP's weights to zero, so "
        f"{model['unmasked_parameters']} of them act",
    ]


def compare(metrics: dict[str, Any]) -> dict[str, Any]:
    """The comparison the report states, from ``metrics`` (with its ``baselines``).

    Returns ``best_mse`` (the model with the lowest test MSE and its value), and the
    sentences ``better`` (where the NCP measured better), ``worse`` (where it measured
    worse), ``ties``, ``notes`` (how to read the times) and ``by_design`` (what the
    structures give, not measured here).
    """
    found: dict[str, list[str]] = {"better": [], "worse": [], "tie": []}
    baselines = list(metrics["baselines"].values())
    timed = not metrics["training"].get("resumed") and not any(
        b["training"].get("resumed") for b in baselines
    )
    for figure in ERRORS:
        for baseline in baselines:
            kind, sentence = _error_sentence(
                figure, metrics["test"][figure], baseline["test"][figure], _label(baseline)
            )
            found[kind].append(sentence)
    for baseline in baselines if timed else []:
        seconds = metrics["training"]["seconds"], baseline["training"]["seconds"]
        kind, sentence = _time_sentence(*seconds, _label(baseline))
        found[kind].append(sentence)
    mses = {"NCP": metrics["test"]["mse"]}
    mses.update({_label(b): b["test"]["mse"] for b in metrics["baselines"].values()})
    best = min(mses, key=mses.__getitem__)
    return {
        "best_mse": {"model": best, "mse": mses[best]},
        "better": found["better"],
        "worse": found["worse"],
        "ties": found["tie"],
        "notes": _notes(metrics, timed),
        "by_design": _by_design(metrics),
    }
