"""Trains the model of tests/test_distributed.py; `mlx.launch` runs it on every rank."""

import sys

import mlx.core as mx

from ncps_mlx.training import fit
from tests.test_distributed import BATCH, EPOCHS, data, model

group = mx.distributed.init()
assert group.size() == 2, f"expected 2 ranks, got {group.size()}"
fit(model(), data(), epochs=EPOCHS, batch_size=BATCH, checkpoint_dir=sys.argv[1], progress=False)
print(f"rank {group.rank()} done")
