"""Scratch (session 21): E's held-out same-piece recall@1 (the build's validation: 500 pieces,
first 3 s against last 3 s, each chunk in its own recording drawn at random) split by the
pair of recordings the two chunks got, and by tempo x (same / different recording).
Usage: by_recording.py [E_MODEL_PT]"""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main/docs/experiments/session20_embedder")
from common import COMMITTED_E, spy_on_recordings, validation_embeddings
from suite.music import attributes as A

path = sys.argv[1] if len(sys.argv) > 1 else COMMITTED_E
draws = []  # recordings drawn per render: query chunk, then target, batch by batch

Ea, Eb, tempo, _ = validation_embeddings(path, lambda dm: spy_on_recordings(dm, draws))
rec_a, rec_b = torch.cat(draws[0::2]).numpy(), torch.cat(draws[1::2]).numpy()
hit = ((Ea @ Eb.T).argmax(1) == torch.arange(len(Ea))).numpy()
print(f"recall@1 {hit.mean():.3f} over {len(Ea)} pieces ({path})")
print("\nby recording of (query chunk, retrieved chunk): recall@1 (pieces)")
names = A.RECORDINGS
print("query \\ target " + " ".join(f"{n:>12s}" for n in names))
for i, n in enumerate(names):
    cells = []
    for j in range(len(names)):
        sel = (rec_a == i) & (rec_b == j)
        cells.append(f"{hit[sel].mean():.2f} ({sel.sum():3d})" if sel.any() else "     -      ")
    print(f"{n:>14s} " + " ".join(f"{c:>12s}" for c in cells))
same = rec_a == rec_b
print(f"\nsame recording {hit[same].mean():.3f} ({same.sum()}), different {hit[~same].mean():.3f} ({(~same).sum()})")
for n in names:
    k = names.index(n)
    sel = (rec_a == k) | (rec_b == k)
    print(f"  pairs with a {n} chunk: {hit[sel].mean():.3f} ({sel.sum()}); without: {hit[~sel].mean():.3f}")
print("\nby tempo: recall@1 same recording / different recording")
tempo = np.array(tempo)
for t in dict.fromkeys(tempo):
    s = tempo == t
    print(f"  {t:10s} {hit[s & same].mean():.3f} ({(s & same).sum()}) / {hit[s & ~same].mean():.3f} ({(s & ~same).sum()})")
