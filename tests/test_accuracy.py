"""A CfC with an NCP wiring, trained by fit on a real dataset, reaches published accuracy.

JapaneseVowels (UEA archive, shipped inside aeon): 270 training and 370 test utterances of
9 speakers, 12 LPC cepstrum coefficients over 7 to 29 steps, so the padding masks matter.
Published test accuracies for reference: 1-NN Euclidean 0.924, 1-NN DTW (dependent)
0.949 and (independent) 0.959 in the UEA archive paper (Bagnall et al., 2018); 0.941 for
the dataset authors' own classifier and 0.962 for a 5-state HMM (Kudo et al., 1999).
"""

import mlx.core as mx
import mlx.optimizers as optim
import pytest

from ncps_mlx import CfC
from ncps_mlx.training import fit
from ncps_mlx.wirings import AutoNCP

pytest.importorskip("aeon")

EPOCHS = 60


def test_cfc_ncp_on_japanese_vowels_is_in_line_with_published_results():
    from ncps_mlx.datasets import japanese_vowels

    train, test = japanese_vowels()
    mx.random.seed(0)
    model = CfC(12, AutoNCP(64, 16), return_sequences=False, proj_size=len(train.classes))
    batches = -(-len(train) // 32)
    optimizer = optim.AdamW(optim.cosine_decay(5e-3, EPOCHS * batches), weight_decay=0.01)
    history = fit(
        model, train, loss="cross_entropy", optimizer=optimizer, epochs=EPOCHS,
        batch_size=32, clip_norm=1.0, progress=False, seed=0,
    )  # fmt: skip
    # Evaluated once, after training: the test split played no part in it.
    model.eval()
    logits, _ = model(test.x, mask=test.mask)
    accuracy = (mx.argmax(logits, axis=-1) == mx.array(test.y)).mean().item()
    print(f"JapaneseVowels test accuracy {accuracy:.3f} after {len(history)} epochs")
    assert history["loss"][-1] < 0.1
    assert accuracy >= 0.92  # 1-NN Euclidean 0.924; 1-NN DTW 0.949-0.959; HMM 0.962
