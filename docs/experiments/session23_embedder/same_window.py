"""Scratch (session 23): E's held-out recall@1 under the other protocol issue 18's E item
could be read with: both chunks cut from the same 3-s window of the piece (its first 3 s),
each in its own recording, against the build's protocol (first 3 s against last 3 s). At
80 BPM the build's two chunks are bar 1 and bar 2 and share no step; here every piece's two
chunks play the same notes, so what is left is recording invariance plus telling pieces
apart. The team's decision between the two protocols is what this informs. A third row
reads the build's protocol on 500 of E's training pieces: does E fail the slow pieces
because it cannot fit them, or because what it fits does not carry to new pieces?
Usage: same_window.py [E_MODEL_PT]"""
import sys

import numpy as np
import torch

sys.path.insert(0, "/work/main/docs/experiments/session20_embedder")
from common import COMMITTED_E, spy_on_recordings, validation_embeddings  # noqa: E402

from suite.music.attributes import TEMPOS  # noqa: E402


def same_window(dm):
    """Cut the second chunk from the same samples as the first (still from the second,
    independently recorded render)."""
    def chunks(audio, training, other=None):
        clip = round(dm.clip_seconds * 16000)
        return audio[:, :clip], (audio if other is None else other)[:, :clip]
    dm._chunks = chunks


def training_pieces(dm):
    """The build's protocol on 500 pieces E trained on (val_idx swapped for them)."""
    dm.val_idx = dm.train_idx[:500]


def row(name, path, on_dm=lambda dm: None):
    """recall@1 over all pieces, then over the pairs in two different recordings (a pair in
    one recording is the same audio under the same-window protocol), by tempo."""
    draws = []
    A, B, tempo, _ = validation_embeddings(path, lambda dm: on_dm(spy_on_recordings(dm, draws)))
    hit = ((A @ B.T).argmax(1) == torch.arange(len(A))).numpy()
    differ = (torch.cat(draws[0::2]) != torch.cat(draws[1::2])).numpy()
    per = {t: hit[differ & np.array([x == t for x in tempo])].mean() for t, *_ in TEMPOS}
    cells = " ".join(f"{t} {v:.3f}" for t, v in per.items())
    print(f"{name:24s} recall@1 {hit.mean():.3f}; two recordings ({differ.sum()}) "
          f"{hit[differ].mean():.3f} | {cells}")


path = sys.argv[1] if len(sys.argv) > 1 else COMMITTED_E
row("first 3 s vs last 3 s", path)
row("first 3 s vs first 3 s", path, same_window)
row("training pieces", path, training_pieces)
