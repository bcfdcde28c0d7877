"""Scratch (session 16): which attributes a scorer tells apart in a caption. For the 500
held-out corpus pieces (the scorer job's split), one caption per piece and its
attribute-swapped twins (`suite.music.swaps`, seed 123, never a training draw); per
attribute, the share of pieces whose clean render scores its true caption above the twin.
Chance is 0.5. Usage: swap_accuracy.py SCORER... (one torch thread)."""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from datamodules.audio import _load_default_corpus, held_out_split
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower
from suite.music.render import render
from suite.music.swaps import SWAPPABLE, swap_table

tokens, captions, attrs = _load_default_corpus(20000, 0, None, with_attrs=True)
_, val = held_out_split(np.arange(len(tokens)), 500, 0)
val = val.tolist()
texts, negatives = swap_table([attrs[i] for i in val], 1, seed=123)
audio = torch.cat([render(tokens[val[i:i + 50]]) for i in range(0, len(val), 50)])
for path in sys.argv[1:]:
    m = MuLanScorer.from_checkpoint(path).eval()
    with torch.no_grad():
        a = torch.cat([m.embed_audio(audio[i:i + 50]) for i in range(0, len(val), 50)])  # [N, J]
        tower = default_tower()
        t = m.embed_text(tower.encode(texts))  # [N, J]
        own = (a * t).sum(-1)
        line = []
        for k, name in enumerate(SWAPPABLE):
            rows = [i for i, n in enumerate(negatives) if n[k] is not None]
            s = m.embed_text(tower.encode([negatives[i][k] for i in rows]))
            wins = (own[rows] > (a[rows] * s).sum(-1)).float().mean().item()
            line.append(f"{name} {wins:.3f} (n {len(rows)})")
    print(path, "|", "; ".join(line), flush=True)
