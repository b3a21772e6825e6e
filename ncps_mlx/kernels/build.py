"""Compile the package's C++ kernels against the installed MLX, once, on first use.

An MLX extension links against one MLX build and must share its nanobind ABI, so it
cannot ship prebuilt for every MLX a user may have. Like MLX's own ``mx.compile`` on the
CPU, it is compiled on the machine that runs it: a few seconds with the system's C++
compiler, cached per (source, MLX, nanobind, Python, CPU) in ``$NCPS_MLX_CACHE`` (default
``~/.cache/ncps_mlx``). A finished module is moved into place in one rename, so a failed
or concurrent build never leaves a half-written library behind.
"""

import hashlib
import importlib.machinery
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlx.core

# MLX's Python module is a nanobind extension in the "mlx" domain: an extension taking
# mx.array arguments must be built in the same domain and with a compatible nanobind.
_NB_DOMAIN = "mlx"


class BuildError(RuntimeError):
    """A kernel could not be compiled here (no compiler, no nanobind, a build failure)."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$NCPS_MLX_CACHE``, else ``~/.cache/ncps_mlx``."""
    root = os.environ.get("NCPS_MLX_CACHE") or Path.home() / ".cache" / "ncps_mlx"
    return Path(root) / "kernels"


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else the first of ``c++``, ``g++``, ``clang++``."""
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")


def _nanobind_root() -> Path:
    try:
        import nanobind
    except ImportError as error:
        raise BuildError("nanobind is not installed (pip install nanobind)") from error
    return Path(nanobind.include_dir()).parent


def _cpu_features() -> str:
    """The CPU's feature flags: the build targets this CPU (``-march=native``), so a cache
    shared between machines must not hand its module to another kind of CPU."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions() -> str:
    return "|".join(
        [
            importlib.metadata.version("mlx"),
            importlib.metadata.version("nanobind"),
            sys.version,
            sysconfig.get_platform(),
            _cpu_features(),
        ]
    )


def _command(sources: Sequence[Path], target: Path) -> list[str]:
    # mlx is a namespace package: mlx.__path__ may list other "mlx" folders first (MLX's
    # own kernel cache, $TMPDIR/mlx, when run from $TMPDIR). The compiled core is in
    # the installed one.
    mlx_root = Path(mlx.core.__file__).parent
    nanobind = _nanobind_root()
    # fmt: off
    # -march=native: the batch loops vectorise with the widest vectors this CPU has
    # (AVX-512 or AVX2 instead of SSE2: 4.6x faster on an AMD EPYC).
    return [
        compiler(), "-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden",
        "-DNDEBUG", f"-DNB_DOMAIN={_NB_DOMAIN}",
        f"-I{mlx_root / 'include'}",
        f"-I{nanobind / 'include'}",
        f"-I{nanobind / 'ext' / 'robin_map' / 'include'}",
        f"-I{sysconfig.get_paths()['include']}",
        *(str(path) for path in sources if path.suffix == ".cpp"),
        str(nanobind / "src" / "nb_combined.cpp"),
        f"-L{mlx_root / 'lib'}", "-lmlx", f"-Wl,-rpath,{mlx_root / 'lib'}",
        "-o", str(target),
    ]
    # fmt: on


def build(sources: Sequence[Path], module: str) -> Path:
    """The extension ``module`` compiled from ``sources`` (its ``.cpp`` files and the
    headers they include), built now unless a build of the same sources for the same
    versions is cached."""
    content = b"".join(path.read_bytes() for path in sources)
    digest = hashlib.sha256(content + _versions().encode()).hexdigest()[:16]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    target = cache_dir() / digest / f"{module}{suffix}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        result = subprocess.run(_command(sources, partial), capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"compiling {module} failed:\n{result.stderr[-4000:]}")
        os.replace(partial, target)
    return target
