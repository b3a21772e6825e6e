"""Built-in tasks generated on the fly (nothing is downloaded)."""

import numpy as np


def sine_waves(
    num_sequences: int = 16, seq_len: int = 48, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A periodic mapping task: from ``(sin t, cos t)`` predict ``sin 2t``.

    Each sequence starts at a random phase, so the model must learn the frequency
    doubling rather than memorise one curve.

    Returns:
        ``(x, y)`` float32 arrays of shapes (num_sequences, seq_len, 2) and
        (num_sequences, seq_len, 1).
    """
    if num_sequences < 1 or seq_len < 2:
        raise ValueError(
            f"[sine_waves] need num_sequences >= 1 and seq_len >= 2, got {num_sequences}, {seq_len}"
        )
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(num_sequences, 1))
    t = phase + np.linspace(0, 3 * np.pi, seq_len)[None, :]
    x = np.stack([np.sin(t), np.cos(t)], axis=-1)
    y = np.sin(2 * t)[..., None]
    return x.astype(np.float32), y.astype(np.float32)
