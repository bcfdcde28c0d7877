"""Scratch (session 20): session 19's `cos + lam * f` with the text side read by
lexicon.py (saved text distributions) instead of the linear text heads; the audio heads
exactly as session 19's combine.py (FEAT=emb, the first N=8,000 corpus pieces, cached).
Usage: combine_lex.py SPLIT SEEDS LEXFILE"""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, "/work/main/docs/experiments/session19_scorer")
torch.set_num_threads(int(os.environ.get("THREADS", 1))); torch.manual_seed(0)
from common import CACHE, NAMES, fit_softmax, load_sweep, reading, spearman_parts
from suite.music import corpus as C
from suite.report_tables import mean_interval

split, seeds, lexfile = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3]
N = 8000
LAMS = (0.0, 0.25, 0.5, 1.0, 2.0, float("inf"))
corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
X = torch.load(f"{CACHE}/corpus_scorer-bf8bddcc6a22_{N}.pt")
mu, sd = X.mean(0), X.std(0) + 1e-6
VALS = {a: sorted({corpus.attrs[i][a] for i in range(len(corpus))}) for a in NAMES}
audio_heads = {a: fit_softmax((X - mu) / sd, torch.tensor([VALS[a].index(corpus.attrs[i][a]) for i in range(N)]), len(VALS[a])) for a in NAMES}
L = torch.load(lexfile)
results = {}
for seed in seeds:
    S = load_sweep(split, seed)
    prompts = S["prompts"]; n_cond = len(S["conditions"])
    order = [L["prompts"].index(p) for p in prompts]
    tp = {a: L["t"][a][order] for a in NAMES}
    pidx = np.tile(np.repeat(np.arange(len(prompts)), 4), n_cond)
    feats = (S["emb"] - mu) / sd
    f = reading(tp, audio_heads, feats, pidx)
    cos, y = S["cos"].numpy(), S["adh"].numpy()
    for lam in LAMS:
        r = spearman_parts(f if lam == float("inf") else cos + lam * f, y, S["rows"])
        results.setdefault(lam, []).append(r)
for lam, rs in results.items():
    mi = mean_interval([r[0] for r in rs], 0.95)
    print(f"{split} {os.path.basename(lexfile)} lam {lam}: pooled {mi[0]:.3f} [{mi[1]:.3f}, {mi[2]:.3f}] over seeds {seeds} "
          f"({', '.join(f'{r[0]:.3f}' for r in rs)}); between {np.mean([r[1] for r in rs]):.3f} within {np.mean([r[2] for r in rs]):.3f}", flush=True)
