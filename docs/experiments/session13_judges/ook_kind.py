"""Out-of-key notes in the validation generations (seed 0): scattered wrong notes, or a whole
piece in another (consistent) key than its header declares? Compares the oracle's out-of-key
share (against the header's key) with the share against the best-fitting key and mode."""
import sys
import numpy as np
import torch
sys.path.insert(0, "/work/main"); torch.set_num_threads(1)
from suite.music import attributes as A, composer as C, tokens as T
from suite.music.oracle_features import features
F = np.load("/tmp/exp/eval_flaws.npy"); ook = F[:, 0]
ev = torch.load("/tmp/exp/eval.pt"); toks = ev["tokens"].reshape(len(ook), -1)
print("out-of-key share percentiles 10/25/50/75/90/95/99:", np.percentile(ook, [10, 25, 50, 75, 90, 95, 99]).round(3))
print(f"none {np.mean(ook == 0):.3f}, in (0, 0.1] {np.mean((ook > 0) & (ook <= 0.1)):.3f}, > 0.2 {np.mean(ook > 0.2):.3f}")
scales = [set(C.scale_pitch_classes(k, m)) for k in A.KEYS for m in A.MODES]
best = []
for t in toks:
    f = features(t)
    pitches = [p for _, _, p in f.melody_notes + f.bass_notes]
    for _, _, c in f.chord_spans:
        pitches += T.chord_pitches(c)
    pcs = np.array(pitches) % 12
    best.append(min(1 - np.isin(pcs, list(s)).mean() for s in scales) if len(pcs) else 0.0)
best = np.array(best)
print(f"mean out-of-key share: header key {ook.mean():.4f}, best-fitting key {best.mean():.4f}; "
      f"share of the out-of-key mass a consistent other key explains {1 - best.sum() / ook.sum():.3f}")
# The oracle quality an audio-only judge could at best recover: the out-of-key factor taken
# against the best-fitting key instead of the header's (which is a token, not rendered).
q = ev["quality"].numpy().reshape(-1)
audible = q * np.where(ook < 1, ((1 - best) / np.maximum(1 - ook, 1e-9)) ** 3, 1.0)
from scipy.stats import spearmanr
print(f"Spearman(oracle quality, the same with the best-fitting key) {spearmanr(q, audible).statistic:.3f}")
