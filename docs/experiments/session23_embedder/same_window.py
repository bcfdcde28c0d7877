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
from common import COMMITTED_E, validation_embeddings  # noqa: E402

from suite.music.attributes import RECORDINGS, TEMPOS  # noqa: E402

draws = []  # the recording drawn for each render, in order (query chunk, then target)


def spy_on_recordings(dm):
    inner = dm._recordings

    def recording_spy(tokens, generator):
        g = torch.Generator()
        g.set_state(generator.get_state())
        draws.append(torch.randint(0, len(RECORDINGS), (tokens.shape[0],), generator=g))
        return inner(tokens, generator)
    dm._recordings = recording_spy


def same_window(dm):
    """Cut the second chunk from the same samples as the first (still from the second,
    independently recorded render)."""
    def chunks(audio, training, other=None):
        clip = round(dm.clip_seconds * 16000)
        return audio[:, :clip], (audio if other is None else other)[:, :clip]
    dm._chunks = chunks


def report(name, A, B, tempo):
    """recall@1 over all pieces, then over the pairs in two different recordings (a pair in
    one recording is the same audio under the same-window protocol), by tempo."""
    hit = ((A @ B.T).argmax(1) == torch.arange(len(A))).numpy()
    differ = (torch.cat(draws[0::2]) != torch.cat(draws[1::2])).numpy()
    draws.clear()
    per = {t: hit[differ & np.array([x == t for x in tempo])].mean() for t, *_ in TEMPOS}
    cells = " ".join(f"{t} {v:.3f}" for t, v in per.items())
    print(f"{name:24s} recall@1 {hit.mean():.3f}; two recordings ({differ.sum()}) "
          f"{hit[differ].mean():.3f} | {cells}")


path = sys.argv[1] if len(sys.argv) > 1 else COMMITTED_E
A, B, tempo, _ = validation_embeddings(path, on_dm=spy_on_recordings)
report("first 3 s vs last 3 s", A, B, tempo)
A, B, tempo, _ = validation_embeddings(path, on_dm=lambda dm: (spy_on_recordings(dm), same_window(dm)))
report("first 3 s vs first 3 s", A, B, tempo)


def training_pieces(dm):
    """The build's protocol on 500 pieces E trained on (val_idx swapped for them)."""
    spy_on_recordings(dm)
    dm.val_idx = dm.train_idx[:500]


A, B, tempo, _ = validation_embeddings(path, on_dm=training_pieces)
report("training pieces", A, B, tempo)
