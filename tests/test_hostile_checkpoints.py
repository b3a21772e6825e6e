"""Hostile checkpoints: each is refused with a CheckpointError within a time bound.

The corpus (:mod:`tests.hostile_checkpoints`: truncations, random single-byte flips,
crafted safetensors headers, crafted configs and training states sealed with a valid
digest) is loaded by a worker process (:mod:`tests.checkpoint_worker`), so a case that
crashes the process or hangs fails by its name instead of taking the test run down.
"""

import json
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.hostile_checkpoints import corpus

ROOT = Path(__file__).parents[1]
#: Seconds within which every hostile file must be refused (the slowest measured: ~0.1 s).
TIME_BOUND = 5.0
#: Seconds after which a case is taken as hung and its worker killed.
HANG = 60.0


class Worker:
    """The worker process, restarted after a crash or a hang."""

    def __init__(self):
        self.process = None

    def run(self, case: tuple) -> dict:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.checkpoint_worker"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        start = time.perf_counter()
        line = self._line()
        return json.loads(line) if line is not None else self._lost(start)

    def _line(self) -> str | None:
        # One line per case: nothing is left in the pipe's buffer for select to miss.
        ready, _, _ = select.select([self.process.stdout], [], [], HANG)
        line = self.process.stdout.readline() if ready else ""
        return line or None

    def _lost(self, start: float) -> dict:
        hung = self.process.poll() is None
        self.process.kill()
        code = self.process.wait()
        self.process = None
        outcome = "hang" if hung else f"crash (exit {code})"
        return {"outcome": outcome, "seconds": time.perf_counter() - start}

    def close(self):
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    cases = corpus(tmp_path_factory.mktemp("hostile"))
    worker = Worker()
    try:
        results = [(case, worker.run(case)) for case in cases]
    finally:
        worker.close()
    counts: dict[str, Counter] = {}
    for (kind, *_), result in results:
        counts.setdefault(kind, Counter())[result["outcome"]] += 1
    slowest = max(result["seconds"] for _, result in results)
    print(f"\nhostile checkpoints: {len(results)} files, slowest {slowest:.3f} s")
    for kind, counter in sorted(counts.items()):
        print(f"  {kind}: " + ", ".join(f"{o} {n}" for o, n in counter.most_common()))
    return results


def _failures(outcomes, accept) -> list[str]:
    return [
        f"{Path(case[2]).name}: {result['outcome']} in {result['seconds']:.2f} s"
        for case, result in outcomes
        if not accept(result)
    ]


def test_every_hostile_file_is_refused_or_harmless(outcomes):
    allowed = {"CheckpointError", "identical"}
    assert _failures(outcomes, lambda r: r["outcome"] in allowed) == []


def test_every_hostile_file_is_decided_within_the_time_bound(outcomes):
    assert _failures(outcomes, lambda r: r["seconds"] < TIME_BOUND) == []


def test_the_corpus_has_every_kind(outcomes):
    kinds = Counter(case[0] for case, _ in outcomes)
    assert kinds["byte_flip"] == 100 and kinds["truncation"] == 32
    assert min(kinds.values()) >= 14
