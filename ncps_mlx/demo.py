"""The demo job: train a small NCP on a built-in task and save what it produced."""

import json
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from . import datasets, io
from .rnn import CfC
from .training import make_train_step
from .wirings import AutoNCP


def train_demo_model(
    epochs: int = 300, seed: int = 0, log_every: int = 25, log=print
) -> tuple[CfC, list[float]]:
    """Train ``CfC(2, AutoNCP(16, 1))`` on :func:`~ncps_mlx.datasets.sine_waves`."""
    mx.random.seed(seed)
    data = datasets.sine_waves(16, 48, seed=seed)
    x, y = mx.array(data.x), mx.array(data.y)
    model = CfC(2, AutoNCP(16, 1))
    step = make_train_step(model, optim.Adam(learning_rate=0.01), nn.losses.mse_loss)
    losses = []
    for epoch in range(1, epochs + 1):
        losses.append(step(x, y).item())
        if epoch == 1 or epoch % log_every == 0 or epoch == epochs:
            log(f"epoch {epoch:4d}/{epochs}  loss {losses[-1]:.5f}")
    return model, losses


def _plot_losses(losses: list[float], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(np.arange(1, len(losses) + 1), losses)
    ax.set(xlabel="epoch", ylabel="MSE loss", title="CfC + AutoNCP(16, 1) on sine waves")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run_demo(out: str | Path = "ncps_demo", epochs: int = 300, seed: int = 0, log=print) -> dict:
    """Train, save the checkpoint, the loss curve and a metrics file under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"Training CfC with an AutoNCP(16, 1) wiring on sine waves ({mx.default_device()})")
    start = time.perf_counter()
    model, losses = train_demo_model(epochs, seed, log=log)
    seconds = time.perf_counter() - start
    checkpoint = io.save(model, out / "model.safetensors")
    metrics = {
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "epochs": epochs,
        "train_seconds": round(seconds, 2),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {seconds:.1f} s")
    log(f"checkpoint: {checkpoint}")
    if _plot_losses(losses, out / "loss.png"):
        log(f"loss plot:  {out / 'loss.png'}")
    else:
        log("loss plot skipped: install matplotlib (pip install 'ncps-mlx[plot]')")
    return metrics
