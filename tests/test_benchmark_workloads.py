"""The benchmark workloads' helper that is not timing: pinning every thread to one core."""

import os
import threading

import pytest

from benchmarks.workloads import one_core

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux only"
)


def _affinities() -> dict[int, set[int]]:
    """Each thread of this process and the cores it may run on."""
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")}


def test_one_core_pins_every_thread_then_restores_each_own_set():
    stop = threading.Event()
    waiting = threading.Thread(target=stop.wait)
    waiting.start()
    try:
        before = _affinities()
        seen_inside: list[set[int]] = []
        with one_core() as core:
            assert core == min(before[threading.get_native_id()])
            assert all(found == {core} for found in _affinities().values())
            started = threading.Thread(target=lambda: seen_inside.append(os.sched_getaffinity(0)))
            started.start()
            started.join()
        assert seen_inside == [{core}]
        after = _affinities()
        assert {tid: after[tid] for tid in before.keys() & after.keys()} == {
            tid: before[tid] for tid in before.keys() & after.keys()
        }
        assert after[waiting.native_id] == before[waiting.native_id]
    finally:
        stop.set()
        waiting.join()
