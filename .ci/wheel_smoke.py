"""Smoke tests of an installed ncps_mlx, run from outside the source tree.

``.ci/package`` builds the sdist and the wheel, installs the wheel into a fresh virtual
environment and runs this file there with that environment's Python: it proves that the
wheel carries what a user needs (the package, the kernels' C++ sources, the command line)
and that its basic paths work, without anything from the repository on ``sys.path``.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

import ncps_mlx
from ncps_mlx import LTC, CfC, kernels
from ncps_mlx.datasets import sine_waves
from ncps_mlx.training import fit
from ncps_mlx.wirings import AutoNCP


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"wheel smoke test failed: {what}")
    print(f"ok  {what}")


def main() -> None:
    installed = Path(ncps_mlx.__file__).resolve()
    check("site-packages" in installed.parts, f"ncps_mlx imported from the install ({installed})")
    sources = sorted(p.name for p in (installed.parent / "kernels").glob("*.cpp"))
    check(
        {"cfc.cpp", "ltc.cpp", "module.cpp"} <= set(sources), f"kernel sources packaged {sources}"
    )
    version = subprocess.run(["ncps-mlx", "--version"], capture_output=True, text=True)
    check(version.returncode == 0 and ncps_mlx.__version__ in version.stdout, "ncps-mlx --version")

    x = mx.random.normal((2, 5, 3))
    for model in (CfC(3, AutoNCP(12, 2)), LTC(3, AutoNCP(12, 2))):
        y, _ = model(x)
        check(y.shape == (2, 5, 2) and bool(mx.isfinite(y).all()), f"{type(model).__name__} call")
    with tempfile.TemporaryDirectory() as folder:
        model = CfC(2, 8, backbone_units=8, proj_size=1)
        history = fit(model, sine_waves(16, 10, seed=1), epochs=2, batch_size=8,
                      checkpoint_dir=folder, progress=False)  # fmt: skip
        check(len(history) == 2 and np.isfinite(history["loss"]).all(), "fit two epochs")
        loaded = ncps_mlx.load(Path(folder) / "last.safetensors")
        same = np.array_equal(np.array(loaded(x[..., :2])[0]), np.array(model(x[..., :2])[0]))
        check(same, "a checkpoint loads the same model")
    check(kernels.usable(mx.float32), "the fused kernels build and pass their self-check")


if __name__ == "__main__":
    main()
