"""Compile the package's C++ kernels against the installed MLX, once, and keep them safe.

An MLX extension links against one MLX build and must share its nanobind ABI, so it
cannot ship prebuilt for every MLX a user may have. Like MLX's own ``mx.compile`` on the
CPU, it is compiled on the machine that runs it, with the system's C++ compiler, and
cached per (sources, MLX, nanobind, Python, platform, CPU, flags) under
``$NCPS_MLX_CACHE`` (default ``~/.cache/ncps_mlx``), in a folder of its own:

- the library, and ``digest``: its SHA-256, recorded at build and checked before every
  load, so a truncated, garbage or swapped library is never loaded: it is rebuilt;
- the cache is code this process will run: its folders are created private (0700), and
  one owned by another user, or writable by group or others, is refused;
- one process builds, the others wait for it (a file lock); the compiler has a time limit
  (``$NCPS_MLX_BUILD_TIMEOUT`` seconds, default 600); a build works in a scratch folder
  that the next build removes if a kill left it behind, and moves the finished library
  into place in one rename;
- the moment a build starts it says so on stderr, with the time the last one took.

``NCPS_MLX_SANITIZE=1`` builds with AddressSanitizer and UndefinedBehaviorSanitizer (a
cache entry of its own; the process must preload the sanitizer runtime, see the testing
guide). ``NCPS_MLX_COVERAGE=1`` builds with gcc's line counting (``--coverage``, another
cache entry of its own): every process that loads it adds the lines it ran to the counts
in the ``coverage`` folder beside the library when it exits (see the testing guide).
"""

import contextlib
import hashlib
import importlib.machinery
import importlib.metadata
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import mlx.core

# MLX's Python module is a nanobind extension in the "mlx" domain: an extension taking
# mx.array arguments must be built in the same domain and with a compatible nanobind.
_NB_DOMAIN = "mlx"
_DIGEST = "digest"
_SCRATCH = "scratch-"
_TIMES = "build_seconds"
_COVERAGE = "coverage"
DEFAULT_TIMEOUT_S = 600
# What the first build is said to take when no build has been timed here yet (a 2-core
# virtual machine: 30-50 s; an Apple M-series chip: a few seconds).
_FIRST_BUILD_GUESS_S = 40


class BuildError(RuntimeError):
    """The kernels cannot be built or loaded here (no compiler, a failed or timed-out
    build, a cache this process must not trust)."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$NCPS_MLX_CACHE/kernels``, else
    ``~/.cache/ncps_mlx/kernels``."""
    root = os.environ.get("NCPS_MLX_CACHE") or Path.home() / ".cache" / "ncps_mlx"
    return Path(root) / "kernels"


def private_dir(path: Path) -> Path:
    """``path``, created private (0700) where missing, once it is checked to be safe to
    load code from: a folder owned by this user and writable by nobody else."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as error:
        raise BuildError(f"cannot create the kernel cache {str(path)!r}: {error}") from error
    _check_trusted(path, info, "folder")
    return path


def _check_trusted(path: Path, info: os.stat_result, kind: str) -> None:
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise BuildError(
            f"the kernel cache {kind} {str(path)!r} belongs to another user: it will not be "
            "loaded from; set NCPS_MLX_CACHE to a folder of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BuildError(
            f"the kernel cache {kind} {str(path)!r} is writable by other users: it will not "
            "be loaded from; make it private (chmod 700) or set NCPS_MLX_CACHE"
        )


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else the first of ``c++``, ``g++``, ``clang++``."""
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")


def sanitized() -> bool:
    """Whether builds carry the sanitizers (``NCPS_MLX_SANITIZE=1``)."""
    return os.environ.get("NCPS_MLX_SANITIZE", "0") not in ("", "0")


def measured() -> bool:
    """Whether builds count the lines they run, for the kernels' coverage report
    (``NCPS_MLX_COVERAGE=1``)."""
    return os.environ.get("NCPS_MLX_COVERAGE", "0") not in ("", "0")


def coverage_dir(library: Path) -> Path:
    """Where a coverage build of ``library`` keeps gcc's notes (``.gcno``, written by the
    build) and its line counts (``.gcda``, added to by each process that loaded it, when
    it exits)."""
    return library.with_name(_COVERAGE)


def _nanobind_root() -> Path:
    try:
        import nanobind
    except ImportError as error:
        raise BuildError("nanobind is not installed (pip install nanobind)") from error
    return Path(nanobind.include_dir()).parent


def _cpu() -> str:
    """This CPU's model and feature flags: a build for it (``-march=native``) must not be
    handed to another kind of CPU that shares the cache."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        return "".join(line for line in cpuinfo if line.startswith(("flags", "Features")))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        brand = ["sysctl", "-n", "machdep.cpu.brand_string"]
        return subprocess.run(brand, capture_output=True, text=True, timeout=5).stdout
    return platform.processor()


def target_flags() -> list[str]:
    """Code generation for this platform: the widest vectors the CPU has where the
    compiler can ask it (``-march=native`` on x86-64, 4.6x faster than SSE2 on an AMD
    EPYC; ``-mcpu=native`` on Linux arm64), the architecture's baseline elsewhere (Apple
    clang has no ``native`` for arm64; NEON is the baseline of every Apple chip)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return ["-march=native"]
    if machine in ("aarch64", "arm64") and platform.system() == "Linux":
        return ["-mcpu=native"]
    return []


def coverage_flags(sources: Path) -> list[str]:
    """gcc's flags for a build that counts the lines it runs in the files of the folder
    ``sources`` (a coverage build's optimisation, with the kernels' folder)."""
    # -O0 keeps each line its own code, so the counts fall on the lines that ran; atomic
    # counters, as the kernels run on several threads; only the files of ``sources`` are
    # counted (not MLX's inline headers, not nanobind). The filter is a POSIX regex.
    own_files = re.escape(str(sources)) + "/[^/]+$"
    return ["-O0", "--coverage", "-fprofile-update=atomic", f"-fprofile-filter-files={own_files}"]


def _optimisation() -> list[str]:
    if sanitized() and measured():
        raise BuildError(
            "NCPS_MLX_SANITIZE and NCPS_MLX_COVERAGE are separate builds: set one of them"
        )
    if measured():
        return coverage_flags(Path(__file__).parent)
    if sanitized():
        return ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                "-fno-sanitize-recover=undefined"]  # fmt: skip
    return ["-O3", "-DNDEBUG", *target_flags()]


def _link_flags(mlx_lib: Path) -> list[str]:
    # A Python extension leaves Python's symbols to the interpreter that loads it.
    python = ["-undefined", "dynamic_lookup"] if platform.system() == "Darwin" else []
    return [f"-L{mlx_lib}", "-lmlx", f"-Wl,-rpath,{mlx_lib}", *python]


def _command(sources: Sequence[Path], target: Path) -> list[str]:
    # mlx is a namespace package: mlx.__path__ may list other "mlx" folders first (MLX's
    # own kernel cache, $TMPDIR/mlx, when run from $TMPDIR). The compiled core is in
    # the installed one.
    mlx_root = Path(mlx.core.__file__).parent
    nanobind = _nanobind_root()
    # fmt: off
    return [
        compiler(), *_optimisation(), "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden",
        "-pthread",
        f"-DNB_DOMAIN={_NB_DOMAIN}",
        f"-I{mlx_root / 'include'}",
        f"-I{nanobind / 'include'}",
        f"-I{nanobind / 'ext' / 'robin_map' / 'include'}",
        f"-I{sysconfig.get_paths()['include']}",
        *(str(path) for path in sources if path.suffix == ".cpp"),
        str(nanobind / "src" / "nb_combined.cpp"),
        *_link_flags(mlx_root / "lib"),
        "-o", str(target),
    ]
    # fmt: on


def _key(sources: Sequence[Path]) -> str:
    versions = [
        importlib.metadata.version("mlx"),
        importlib.metadata.version("nanobind"),
        sys.version,
        sysconfig.get_platform(),
        _cpu(),
        " ".join(_optimisation()),
    ]
    content = b"".join(path.read_bytes() for path in sources) + "|".join(versions).encode()
    return hashlib.sha256(content).hexdigest()[:16]


def library_path(sources: Sequence[Path], module: str) -> Path:
    """Where the build of ``sources`` for this machine is (or would be) cached."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return cache_dir() / _key(sources) / f"{module}{suffix}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def intact(library: Path) -> bool:
    """Whether ``library`` exists, is this user's alone and has the digest recorded
    when it was built (read, not loaded: a damaged library is never loaded)."""
    digest = library.with_name(_DIGEST)
    try:
        _check_trusted(library, library.stat(), "library")
        return digest.read_text().strip() == _sha256(library)
    except (OSError, BuildError):
        return False


@contextlib.contextmanager
def _locked(folder: Path, announce: Callable[[str], None]) -> Iterator[None]:
    """Hold the folder's build lock: other processes wait (and say so) until this build
    is done."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): builds are not shared, just retried
        yield
        return
    with open(folder / "lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            announce(
                "waiting for another process that is compiling the fused kernels "
                f"(about {_expected_seconds()} s)"
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _announce(message: str) -> None:
    print(f"ncps_mlx: {message}", file=sys.stderr, flush=True)


def _expected_seconds() -> int:
    with contextlib.suppress(OSError, ValueError):
        return round(float((cache_dir() / _TIMES).read_text()))
    return _FIRST_BUILD_GUESS_S


def _timeout() -> float:
    try:
        return float(os.environ.get("NCPS_MLX_BUILD_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError as error:
        raise BuildError("NCPS_MLX_BUILD_TIMEOUT must be a number of seconds") from error


def build(
    sources: Sequence[Path], module: str, *, announce: Callable[[str], None] = _announce
) -> Path:
    """The extension ``module`` compiled from ``sources`` (its ``.cpp`` files and the
    headers they include): the cached build if it is intact, else built now (once, under
    the folder's lock).

    Raises:
        BuildError: No compiler, a failed or timed-out build, or an untrusted cache.
    """
    library = library_path(sources, module)
    folder = private_dir(private_dir(cache_dir()) / library.parent.name)
    if intact(library):
        return library
    with _locked(folder, announce):
        if intact(library):  # another process built it while this one waited
            return library
        for leftover in folder.glob(f"{_SCRATCH}*"):  # a build killed midway
            shutil.rmtree(leftover, ignore_errors=True)
        announce(
            f"compiling the fused kernels for this machine, once: about "
            f"{_expected_seconds()} s (cached in {folder})"
        )
        start = time.perf_counter()
        _compile(sources, module, library, folder)
        seconds = time.perf_counter() - start
        announce(f"compiled the fused kernels in {seconds:.0f} s")
        with contextlib.suppress(OSError):
            (cache_dir() / _TIMES).write_text(f"{seconds:.1f}")
    return library


def _compile(sources: Sequence[Path], module: str, library: Path, folder: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=folder))
    try:
        partial = scratch / library.name
        command = [*_command(sources, partial), *_coverage_output(library)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=_timeout())
        except subprocess.TimeoutExpired as error:
            raise BuildError(
                f"the C++ compiler took longer than {error.timeout:.0f} s (NCPS_MLX_BUILD_TIMEOUT)"
            ) from None
        if result.returncode != 0:
            raise BuildError(f"compiling {module} failed:\n{result.stderr[-4000:]}")
        digest = scratch / _DIGEST
        digest.write_text(_sha256(partial))
        # The digest last: until it is in place, the library does not count as built.
        with contextlib.suppress(FileNotFoundError):
            library.with_name(_DIGEST).unlink()
        os.replace(partial, library)
        os.replace(digest, library.with_name(_DIGEST))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _coverage_output(library: Path) -> list[str]:
    """For a coverage build, gcc's flag that puts the notes, and the counts the library
    will write, in [`coverage_dir`][ncps_mlx.kernels.build.coverage_dir] (by default they
    would go to the scratch folder, which is removed); emptied first, as the counts of an
    earlier build do not fit this build's notes."""
    if not measured():
        return []
    folder = coverage_dir(library)
    shutil.rmtree(folder, ignore_errors=True)
    return ["-dumpdir", f"{private_dir(folder)}{os.sep}"]


def _recorded_digest(library: Path) -> str:
    # What `intact` compared with the library's own hash before it was loaded: notes are
    # tied to it, so reading one does not hash the library again.
    return library.with_name(_DIGEST).read_text().strip()


def record(library: Path, name: str, text: str = "") -> None:
    """Note ``text`` about this build of ``library`` beside it (say, its self-check
    passed); a later build replaces the library and its digest, and voids the note."""
    # A name of its own: processes proving the same build at once each write theirs.
    fd, partial = tempfile.mkstemp(prefix=f".{name}.", dir=library.parent)
    with os.fdopen(fd, "w") as file:
        file.write(f"{_recorded_digest(library)}\n{text}")
    os.replace(partial, library.with_name(name))


def recorded(library: Path, name: str) -> str | None:
    """The text of a note [`record`][ncps_mlx.kernels.build.record] left about this very build, else
    ``None``."""
    try:
        digest, _, text = library.with_name(name).read_text().partition("\n")
        return text if digest == _recorded_digest(library) else None
    except OSError:
        return None


def clear() -> list[Path]:
    """Remove every cached build of this user's (the folders under
    [`cache_dir`][ncps_mlx.kernels.build.cache_dir]); returns what was removed."""
    root = cache_dir()
    removed = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        with contextlib.suppress(OSError):
            if entry.is_dir() and entry.stat().st_uid == getattr(os, "getuid", lambda: -1)():
                shutil.rmtree(entry)
                removed.append(entry)
    return removed
