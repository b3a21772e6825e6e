"""A monitored run's records: saving, loading, summaries, plots and Prometheus text."""

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write

RECORD_TYPES = ("meta", "sample", "step", "event")
# Keys that are bookkeeping, not figures to average.
_NOT_FIGURES = {"time_s", "step", "type", "event", "message"}


class Summary(dict):
    """A run's summary: a plain dict that prints as a table."""

    def __str__(self) -> str:
        lines = [f"{key}: {value}" for key, value in self.items() if not isinstance(value, dict)]
        figures = {key: value for key, value in self.items() if isinstance(value, dict)}
        if figures:
            lines.append(f"{'figure':<34} {'mean':>12} {'max':>12}")
            for key, stats in figures.items():
                lines.append(
                    f"{key:<34} {_fmt(stats.get('mean')):>12} {_fmt(stats.get('max')):>12}"
                )
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": sum(ordered) / len(ordered),
        "median": ordered[len(ordered) // 2],
        "max": ordered[-1],
    }


def _numeric(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            if key in _NOT_FIGURES or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                columns.setdefault(key, []).append(float(value))
    return columns


@dataclass
class Run:
    """Everything a [`Monitor`][ncps_mlx.monitor.Monitor] recorded."""

    meta: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    # -- files -----------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every record, each with its ``type``: the meta record first."""
        rows = [{"type": "meta", **self.meta}]
        for kind, records in (
            ("sample", self.samples),
            ("step", self.steps),
            ("event", self.events),
        ):
            rows.extend({"type": kind, **record} for record in records)
        return rows

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.jsonl`` (one JSON object per line) or ``.csv`` (by suffix), atomically.

        Each record carries its ``type`` (meta, sample, step, event). A CSV has one
        column per key of any record; an empty cell reads back as an absent figure.
        """
        path = Path(path)
        if path.suffix not in (".jsonl", ".csv"):
            raise ValueError(f"[Monitor] save to a .jsonl or .csv file, got {str(path)!r}")
        rows = self.records()
        writer = _write_jsonl if path.suffix == ".jsonl" else _write_csv
        return atomic_write(path, lambda tmp: writer(tmp, rows), suffix=path.suffix)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Run":
        """Read a run saved by [`save`][ncps_mlx.monitor.Run.save]."""
        path = Path(path)
        rows = _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)
        run = cls()
        targets = {"sample": run.samples, "step": run.steps, "event": run.events}
        for row in rows:
            kind = row.pop("type", None)
            if kind == "meta":
                run.meta = row
            elif kind in targets:
                targets[kind].append(row)
            else:
                raise ValueError(f"{str(path)!r}: record of unknown type {kind!r}")
        return run

    # -- figures ---------------------------------------------------------------------
    def summary(self) -> Summary:
        """Duration, step statistics, and mean/median/max of every sampled figure.

        The first step is reported on its own (it includes compilation) and left out of
        the step statistics when there are more.
        """
        summary = Summary(
            duration_s=self.samples[-1]["time_s"] if self.samples else 0.0,
            steps=len(self.steps),
            samples=len(self.samples),
            backends=", ".join(self.meta.get("backends", [])),
            chip=self.meta.get("chip"),
        )
        if self.steps:
            summary["first_step_time_s"] = self.steps[0]["step_time_s"]
        steady = self.steps[1:] if len(self.steps) > 1 else self.steps
        kinds = [e["event"] for e in self.events if e.get("event") != "validation"]
        summary["health_events"] = ", ".join(f"{k}: {kinds.count(k)}" for k in sorted(set(kinds)))
        for key, values in {**_numeric(steady), **_numeric(self.samples)}.items():
            summary[key] = _stats(values)
        return summary

    def latest(self) -> dict[str, Any]:
        """The last sample merged with the last step record."""
        latest = dict(self.samples[-1]) if self.samples else {}
        if self.steps:
            latest.update({k: v for k, v in self.steps[-1].items() if k != "time_s"})
        return latest

    def prometheus(self, prefix: str = "ncps_mlx_") -> str:
        """The latest figures as Prometheus text exposition (for a textfile collector)."""
        lines = []
        for key, value in self.latest().items():
            if (
                key in _NOT_FIGURES
                or not isinstance(value, (int, float))
                or isinstance(value, bool)
            ):
                continue
            name = prefix + key
            lines += [f"# TYPE {name} gauge", f"{name} {float(value)!r}"]
        lines += [f"# TYPE {prefix}steps_total counter", f"{prefix}steps_total {len(self.steps)}"]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike) -> Path:
        """Utilization, bandwidth, memory and step time over time, as one image."""
        from .plot import plot_run

        return plot_run(self, Path(path))


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return [
            {key: _parse_cell(value) for key, value in row.items() if value != ""}
            for row in csv.DictReader(handle)
        ]
