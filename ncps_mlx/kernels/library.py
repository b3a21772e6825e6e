"""The compiled kernel library: built on first use, checked, proven, and whether it may run.

The first use in a process builds the library if needed ([`build`][ncps_mlx.kernels.build]: once per
machine, announced on stderr), loads it, checks that it numbers the CfC modes and
activations as the cells do, and, once per build, runs the self-check of
[`selfcheck`][ncps_mlx.kernels.selfcheck] against the MLX operations. Anything that fails leaves the
kernels off with one warning, and the cells run as MLX operations; ``ncps-mlx kernels status`` says
why.
"""

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mlx.core as mx

from ..cells.activations import ACTIVATIONS
from ..cells.cfc import MODES
from ..errors import see
from . import build, cores, selfcheck
from .build import BuildError

SOURCES = tuple(
    Path(__file__).with_name(name)
    for name in (
        "common.h",
        "dense.h",
        "lstm.h",
        "parallel.h",
        "parallel.cpp",
        "product.cpp",
        "ltc.cpp",
        "cfc.cpp",
        "lstm.cpp",
        "module.cpp",
    )
)
NAME = "_ncps_kernels"
_VERIFIED, _REJECTED = "self-check-passed", "self-check-failed"
_library: ModuleType | None = None
_failure: str | None = None
_disabled = False


def _check_codes(library: ModuleType) -> None:
    """The C++ side numbers the CfC modes and activations as the cells' registries list
    them; a library that disagrees would compute another function."""
    for what, native, cells in (
        ("modes", library.cfc_mode_names(), list(MODES)),
        ("activations", library.cfc_activation_names(), list(ACTIVATIONS)),
    ):
        if native != cells:
            raise BuildError(f"the kernels' CfC {what} {native} are not the cells' {cells}")


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    library = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(library)
    _check_codes(library)
    # One tiny step each: a library built against an MLX whose nanobind ABI differs loads
    # but does not recognise mx.array arguments.
    one, index = mx.ones((1, 1)), mx.zeros((1,), dtype=mx.int32)
    mx.eval(library.ltc_step(one, one, one, one, index, index, *[one[0]] * 4, 1))
    mx.eval(library.cfc_step(mx.ones((1, 4)), one, one, [mx.ones((1, 4))], [1, 0], 0, 0))
    return library


def _prove(library: ModuleType, path: Path) -> None:
    """The self-check, once per build: its outcome is recorded beside the library."""
    global _library
    rejected = build.recorded(path, _REJECTED)
    if rejected is not None:
        raise BuildError(f"the kernels failed their self-check on this machine: {rejected}")
    if build.recorded(path, _VERIFIED) is not None:
        return
    _library = library  # the check runs the kernels through the package's own paths
    try:
        problem = selfcheck.run()
    except Exception as error:  # a kernel that raises or crashes a path fails the check
        problem = f"{type(error).__name__}: {error}"
    finally:
        _library = None
    if problem is not None:
        build.record(path, _REJECTED, problem)
        raise BuildError(f"the kernels failed their self-check on this machine: {problem}")
    build.record(path, _VERIFIED)


def _load() -> ModuleType:
    path = build.build(SOURCES, NAME)
    library = _import(path)
    # Before the self-check, so that it proves the kernels on this machine's threads
    # (the tests show that any count gives the same bits).
    library.set_thread_count(cores.configured())
    _prove(library, path)
    return library


def unavailable_reason() -> str | None:
    """Why the fused kernels cannot be used in this process, or ``None`` if they can.

    The first call builds them if needed (once per installation, announced on stderr)
    and proves them against MLX operations (once per build).
    """
    global _library, _failure
    if os.environ.get("NCPS_MLX_KERNELS", "1") == "0":
        return "disabled by NCPS_MLX_KERNELS=0"
    if _library is None and _failure is None:
        try:
            _library = _load()
        except (BuildError, ImportError, OSError, TypeError, ValueError) as error:
            _failure = f"could not use the fused kernels: {error}"
            warnings.warn(
                f"ncps_mlx: {_failure}; the cells use the slower MLX operations on the CPU\n"
                + see("kernels-build"),
                RuntimeWarning,
                stacklevel=2,
            )
    return _failure


def library(caller: str) -> ModuleType:
    """The loaded library, or a RuntimeError naming ``caller`` and why it is unavailable."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"[{caller}] {reason}")
    return _library


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the cells as MLX operations only, as on the GPU (used to count graph ops)."""
    global _disabled
    previous, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = previous


def usable(dtype: mx.Dtype) -> bool:
    """Whether a step on arrays of ``dtype`` may run fused here and now: the CPU, float32,
    the library built and proven, and not inside [`disabled`][ncps_mlx.kernels.disabled]."""
    return (
        not _disabled
        and dtype == mx.float32
        and mx.default_device().type == mx.cpu
        and unavailable_reason() is None
    )


def status() -> dict[str, object]:
    """What ``ncps-mlx kernels status`` reports: where the build for this machine is
    cached, whether it is built and proven, and whether the kernels run here (building
    them if needed)."""
    path = build.library_path(SOURCES, NAME)
    return {
        "cache": str(path.parent),
        "built": build.intact(path),
        "self-check": "passed"
        if build.recorded(path, _VERIFIED) is not None
        else build.recorded(path, _REJECTED),
        "in use": unavailable_reason() or "yes",
    }
