"""A process that loads the hostile checkpoints it is given, one by one.

Run by ``tests/test_hostile_checkpoints.py``: stdin holds JSON lines ``[kind, how, path,
base]``, sent one at a time; for each case it prints one JSON line with the outcome, so a
case that crashes the process or hangs is known by its name (the line never comes).
Outcomes: the exception's class name, ``"identical"`` when the file loads the same model
as its undamaged base, ``"loaded_different"`` when it loads another model (a defect).
"""

import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import ncps_mlx
from tests.hostile_checkpoints import LOAD, same_model, train


def outcome(how: str, path: Path, base: str | None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a file without a digest is part of the corpus
        try:
            if how == LOAD:
                model = ncps_mlx.load(path)
                return (
                    "identical"
                    if base and same_model(model, ncps_mlx.load(base))
                    else ("loaded_different")
                )
            with tempfile.TemporaryDirectory() as folder:
                shutil.copy(path, Path(folder) / "last.safetensors")
                train(Path(folder), epochs=2, resume=True)
            return "resumed"
        except Exception as error:  # the outcome is the exception's kind
            return type(error).__name__


def main() -> None:
    for line in sys.stdin:
        kind, how, path, base = json.loads(line)
        start = time.perf_counter()
        result = outcome(how, Path(path), base)
        seconds = time.perf_counter() - start
        print(json.dumps({"outcome": result, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
