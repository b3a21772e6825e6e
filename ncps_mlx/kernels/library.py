"""The compiled kernel library: built on first use, checked, and whether it may run here."""

import contextlib
import importlib.util
import os
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mlx.core as mx

from ..cells.activations import ACTIVATIONS
from ..cells.cfc import MODES
from ..errors import see
from . import build
from .build import BuildError

_SOURCES = tuple(
    Path(__file__).with_name(name)
    for name in ("common.h", "dense.h", "ltc.cpp", "cfc.cpp", "lstm.cpp", "module.cpp")
)
_NAME = "_ncps_kernels"
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


def _load() -> ModuleType:
    path = build.build(_SOURCES, _NAME)
    spec = importlib.util.spec_from_file_location(_NAME, path)
    library = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(library)
    _check_codes(library)
    # One tiny step each: a library built against an MLX whose nanobind ABI differs loads
    # but does not recognise mx.array arguments.
    one, index = mx.ones((1, 1)), mx.zeros((1,), dtype=mx.int32)
    mx.eval(library.ltc_step(one, one, one, one, index, index, *[one[0]] * 4, 1))
    mx.eval(library.cfc_step(mx.ones((1, 4)), one, one, [mx.ones((1, 4))], [1, 0], 0, 0))
    return library


def unavailable_reason() -> str | None:
    """Why the fused kernels cannot be used in this process, or ``None`` if they can.

    The first call builds them if needed (a few seconds, once per installation).
    """
    global _library, _failure
    if os.environ.get("NCPS_MLX_KERNELS", "1") == "0":
        return "disabled by NCPS_MLX_KERNELS=0"
    if platform.system() != "Linux":
        return f"built and verified on Linux only, not on {platform.system()}"
    if _library is None and _failure is None:
        try:
            _library = _load()
        except (BuildError, ImportError, OSError, TypeError) as error:
            _failure = f"could not build the fused kernels: {error}"
            warnings.warn(
                f"ncps_mlx: {_failure}; the cells use the slower MLX graph on the CPU\n"
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
    the library built, and not inside :func:`disabled`."""
    return (
        not _disabled
        and dtype == mx.float32
        and mx.default_device().type == mx.cpu
        and unavailable_reason() is None
    )
