"""The kernels' build, cache and self-check: built once, under a lock, within a time
limit, from a cache that is checked before anything is loaded from it.

Most cases need no real compilation: a stand-in "compiler" writes a small file, so the
cache's own logic (digests, locks, scratch folders, ownership) is exercised in
milliseconds. The real library is built, loaded and proven by the last tests.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import pytest

from ncps_mlx import LTC, kernels
from ncps_mlx.kernels import build, library, selfcheck
from ncps_mlx.wirings import FullyConnected
from tests.kernel_checks import needs_kernels

ROOT = Path(__file__).parents[1]
SOURCES = library.SOURCES


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty cache of its own, and no library loaded, so the next use builds."""
    monkeypatch.setenv("NCPS_MLX_CACHE", str(tmp_path))
    monkeypatch.setattr(library, "_library", None)
    monkeypatch.setattr(library, "_failure", None)
    return tmp_path / "kernels"


def fake_compiler(monkeypatch, body: str = "open(sys.argv[1], 'wb').write(b'library')"):
    """Compile with a Python script instead: ``body`` gets the target as ``sys.argv[1]``."""
    script = f"import sys, time, pathlib; {body}"
    monkeypatch.setattr(
        build, "_command", lambda sources, target: [sys.executable, "-c", script, str(target)]
    )


def test_a_build_records_its_digest_and_is_then_reused(cache, monkeypatch):
    fake_compiler(monkeypatch)
    said = []
    path = build.build(SOURCES, "_fake", announce=said.append)
    assert path.read_bytes() == b"library" and build.intact(path)
    assert said[0].startswith("compiling the fused kernels for this machine, once: about ")
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"  # created private
    fake_compiler(monkeypatch, "raise SystemExit('must not compile again')")
    assert build.build(SOURCES, "_fake", announce=said.append) == path
    assert len(said) == 2  # "compiling", "compiled": nothing for the cached build


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"lib"),
        lambda p: p.write_bytes(b"\x7fELF garbage"),
        lambda p: p.write_bytes(b""),
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_a_damaged_library_is_rebuilt_without_being_loaded(cache, monkeypatch, damage):
    fake_compiler(monkeypatch)
    path = build.build(SOURCES, "_fake", announce=lambda _: None)
    damage(path)
    assert not build.intact(path)  # read and hashed, never loaded
    assert build.build(SOURCES, "_fake", announce=lambda _: None) == path
    assert path.read_bytes() == b"library" and build.intact(path)


def test_a_cache_others_can_write_to_is_refused(cache, monkeypatch):
    fake_compiler(monkeypatch)
    path = build.build(SOURCES, "_fake", announce=lambda _: None)
    cache.chmod(0o777)  # a shared folder: anyone could have planted the library
    with pytest.raises(build.BuildError, match="writable by other users"):
        build.build(SOURCES, "_fake")
    cache.chmod(0o700)
    path.chmod(0o666)
    assert not build.intact(path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_a_library_planted_by_another_user_is_refused(cache, monkeypatch):
    fake_compiler(monkeypatch)
    path = build.build(SOURCES, "_fake", announce=lambda _: None)
    os.chown(path.parent, 65534, 65534)  # as if another user made the folder
    with pytest.raises(build.BuildError, match="belongs to another user"):
        build.build(SOURCES, "_fake")


def test_a_failing_or_hanging_compiler_is_a_build_error_and_leaves_nothing(cache, monkeypatch):
    fake_compiler(monkeypatch, "sys.exit('syntax error')")
    with pytest.raises(build.BuildError, match="compiling _fake failed:\nsyntax error"):
        build.build(SOURCES, "_fake", announce=lambda _: None)
    fake_compiler(monkeypatch, "time.sleep(60)")
    monkeypatch.setenv("NCPS_MLX_BUILD_TIMEOUT", "0.5")
    with pytest.raises(build.BuildError, match="longer than 0 s .NCPS_MLX_BUILD_TIMEOUT"):
        build.build(SOURCES, "_fake", announce=lambda _: None)
    leftovers = [p.name for p in cache.rglob("*") if p.name not in ("lock",) and p.is_file()]
    assert leftovers == [] and not list(cache.rglob("scratch-*"))


def test_the_scratch_folder_of_a_killed_build_is_removed(cache, monkeypatch):
    fake_compiler(monkeypatch)
    folder = build.library_path(SOURCES, "_fake").parent
    folder.mkdir(parents=True, mode=0o700)
    (folder / "scratch-killed").mkdir()
    (folder / "scratch-killed" / "_fake.so").write_bytes(b"half")
    build.build(SOURCES, "_fake", announce=lambda _: None)
    assert not (folder / "scratch-killed").exists()


def test_an_unwritable_cache_is_a_build_error(cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(build.BuildError, match="cannot create the kernel cache .*Read-only"):
        build.build(SOURCES, "_fake")


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_first_uses_compile_once(cache, processes):
    # Each process compiles with a slow stand-in that counts its runs.
    runs = cache.parent / "runs"
    program = textwrap.dedent(
        f"""
        import sys
        from ncps_mlx.kernels import build, library
        script = "import sys, time, pathlib; time.sleep(1); "
        script += "open({str(runs)!r}, 'a').write('x'); open(sys.argv[1], 'wb').write(b'lib')"
        build._command = lambda sources, target: [sys.executable, "-c", script, str(target)]
        print(build.build(library.SOURCES, "_fake", announce=lambda _: None))
        """
    )
    env = {**os.environ, "NCPS_MLX_CACHE": str(cache.parent)}
    started = [
        subprocess.Popen(
            [sys.executable, "-c", program], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    paths = {process.communicate(timeout=120)[0].strip() for process in started}
    assert all(process.returncode == 0 for process in started)
    assert len(paths) == 1 and runs.read_text() == "x"  # one build, the rest waited


def test_no_compiler_is_a_build_error(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.BuildError, match="no C\\+\\+ compiler found"):
        build.compiler()


def test_flags_fit_the_platform(monkeypatch):
    for system, machine, expected in [
        ("Linux", "x86_64", ["-march=native"]),
        ("Linux", "aarch64", ["-mcpu=native"]),
        ("Darwin", "arm64", []),  # Apple clang: no -march=native for arm64
    ]:
        monkeypatch.setattr(build.platform, "system", lambda system=system: system)
        monkeypatch.setattr(build.platform, "machine", lambda machine=machine: machine)
        assert build.target_flags() == expected
    assert build._link_flags(Path("/mlx/lib"))[-2:] == ["-undefined", "dynamic_lookup"]


def test_the_coverage_build_counts_the_kernels_lines_in_a_cache_entry_of_its_own(
    cache, monkeypatch
):
    monkeypatch.delenv("NCPS_MLX_SANITIZE", raising=False)
    monkeypatch.delenv("NCPS_MLX_COVERAGE", raising=False)
    usual = build.library_path(SOURCES, "_fake")
    monkeypatch.setenv("NCPS_MLX_COVERAGE", "1")
    flags = build._optimisation()
    # Unoptimised, counted with atomic counters, nothing of the usual or sanitized builds.
    assert flags[:3] == ["-O0", "--coverage", "-fprofile-update=atomic"] and len(flags) == 4
    counted = re.compile(flags[3].removeprefix("-fprofile-filter-files="))
    assert all(counted.search(str(path)) for path in SOURCES)  # the kernels' own files
    mlx_header = Path(mx.__file__).parent / "include" / "mlx" / "array.h"
    nanobind = build._nanobind_root() / "src" / "nb_combined.cpp"
    assert not counted.search(str(mlx_header)) and not counted.search(str(nanobind))
    path = build.library_path(SOURCES, "_fake")
    assert path.parent != usual.parent  # never mixed with the usual build
    # The notes and counts go beside the library, not into the scratch folder the build
    # removes; counts of an earlier build are removed with it.
    stale = build.coverage_dir(path) / "ltc.gcda"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier build's counts")
    fake_compiler(monkeypatch, "open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))")
    assert build.build(SOURCES, "_fake", announce=lambda _: None) == path
    assert path.read_text() == f"-dumpdir {build.coverage_dir(path)}{os.sep}"
    assert not stale.exists() and oct(stale.parent.stat().st_mode & 0o777) == "0o700"
    monkeypatch.setenv("NCPS_MLX_SANITIZE", "1")
    with pytest.raises(build.BuildError, match="separate builds: set one of them"):
        build.library_path(SOURCES, "_fake")


# --- the real library: built, loaded, proven --------------------------------------------


def copy_real_build(cache: Path, monkeypatch) -> Path:
    """The library this machine built in its usual cache (building it there if needed),
    copied into ``cache``."""
    with monkeypatch.context() as usual:
        usual.setenv("NCPS_MLX_CACHE", os.environ.get("NCPS_MLX_USUAL_CACHE", ""))
        source = build.build(SOURCES, library.NAME)
    target = build.library_path(SOURCES, library.NAME)
    target.parent.mkdir(parents=True, mode=0o700)
    for name in (source.name, "digest"):
        shutil.copy2(source.with_name(name), target.with_name(name))
    return target


@needs_kernels
def test_a_failed_build_warns_once_and_the_cells_fall_back(cache, monkeypatch):
    fake_compiler(monkeypatch, "sys.exit('no compiler here')")
    with pytest.warns(RuntimeWarning, match="could not use the fused kernels: compiling"):
        assert "no compiler here" in kernels.unavailable_reason()
    assert kernels.unavailable_reason().startswith("could not use")  # no second warning
    model = LTC(3, FullyConnected(4))
    assert kernels.graph_stepper(model.rnn_cell) is None
    y, _ = model(mx.ones((2, 5, 3)))
    assert y.shape == (2, 5, 4)
    with pytest.raises(RuntimeError, match=r"\[cfc_step\] could not use"):
        kernels.cfc_step(
            mx.ones((1, 4)), mx.ones((1, 1)), mx.ones((1, 1)), [mx.ones((1, 4))], [(1, 0)]
        )


@needs_kernels
def test_a_library_that_fails_its_self_check_stays_off(cache, monkeypatch):
    copy_real_build(cache, monkeypatch)
    monkeypatch.setattr(selfcheck, "TOLERANCE", -1.0)  # nothing agrees closely enough
    with pytest.warns(RuntimeWarning, match="failed their self-check on this machine: ltc_step"):
        assert kernels.unavailable_reason() is not None
    assert kernels.graph_stepper(LTC(3, 4).rnn_cell) is None
    # The verdict is recorded for this build: a new process does not run the check again.
    monkeypatch.setattr(library, "_failure", None)
    monkeypatch.setattr(selfcheck, "run", lambda: pytest.fail("the check ran again"))
    with pytest.warns(RuntimeWarning, match="failed their self-check"):
        kernels.unavailable_reason()
    assert library.status()["self-check"].startswith("ltc_step, masked differs from MLX operations")


@needs_kernels
def test_a_proven_library_loads_and_runs(cache, monkeypatch):
    copy_real_build(cache, monkeypatch)
    assert kernels.unavailable_reason() is None
    assert library.status()["self-check"] == "passed"
    model = LTC(3, FullyConnected(4))
    assert kernels.graph_stepper(model.rnn_cell) is not None


@needs_kernels
def test_the_kernels_command_reports_builds_and_clears(cache, monkeypatch, capsys):
    from ncps_mlx import cli

    copy_real_build(cache, monkeypatch)
    assert cli.main(["kernels", "status"]) == 0
    printed = capsys.readouterr().out
    assert f"cache:       {cache}" in printed and "built:       True" in printed
    assert "self-check:  passed" in printed and "in use:      yes" in printed
    assert cli.main(["kernels", "clear"]) == 0
    assert "removed 1 cached build(s)" in capsys.readouterr().out
    assert not any(cache.iterdir())
