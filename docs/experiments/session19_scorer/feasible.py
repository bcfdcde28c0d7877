"""Scratch (session 19): can an attribute-factorised reading of the scorer's AUDIO embedding
rank generations like the oracle's adherence, when its heads learn only from the corpus?

Per attribute a multinomial logistic regression on the scorer's audio embedding of N corpus
pieces (labels: the pieces' attributes; accuracy on the last tenth), then on the validation
CFG sweep (sweep_cache.py's draw at SEED) the score of a generation = the mean over the
prompt's named attributes (the oracle's parse_prompt: the text side's upper bound) of
P(named value | audio). Spearman with the oracle's adherence pooled / between / within
prompts, beside the cosine and their standardised sums.
Usage: feasible.py SCORER N SEED (SCORER: the in-use scorer, whose embedding the sweep holds)."""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2)
from common import CACHE, NAMES, fit_softmax, load_sweep, report
from suite.models.scorer import MuLanScorer
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.render import render

path, N, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = MuLanScorer.from_checkpoint(path).eval()
cache = f"{CACHE}/corpus_{path.split('/')[-2]}_{N}.pt"
corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
if os.path.exists(cache):
    E = torch.load(cache)
else:
    with torch.no_grad():
        E = torch.cat([m.embed_audio(render(torch.as_tensor(corpus.tokens[i:min(N, i + 256)])))
                       for i in range(0, N, 256)])
    torch.save(E, cache)

heads = {}
tr = torch.arange(N) < int(0.9 * N)
for a in NAMES:
    vals = sorted({corpus.attrs[i][a] for i in range(N)})
    y = torch.tensor([vals.index(corpus.attrs[i][a]) for i in range(N)])
    w, b = fit_softmax(E[tr], y[tr], len(vals))
    acc = float(((E[~tr] @ w + b).argmax(1) == y[~tr]).float().mean())
    heads[a] = (vals, w, b)
    print(f"{a:7s} corpus held-out acc {acc:.3f}", flush=True)

G = load_sweep("validation", seed)
score = np.full(len(G["rows"]), np.nan)
probs = {a: torch.softmax(G["emb"] @ w + b, 1).numpy() for a, (vals, w, b) in heads.items()}
for i, p in enumerate(G["rows"]):
    ps = [probs[k][i, heads[k][0].index(v)] for k, v in parse_prompt(p).items() if k in heads and v in heads[k][0]]
    if ps:
        score[i] = np.mean(ps)
y, c = G["adh"].numpy(), G["cos"].numpy()
report("factorised", score, y, G["rows"])
report("cosine", c, y, G["rows"])
# the cosine and the factorised reading together: a sum of the two, each standardised
known = np.isfinite(score) & np.isfinite(y)
z = lambda x: (x - x[known].mean()) / x[known].std()  # noqa: E731
for wgt in (0.5, 1.0, 2.0):
    report(f"cosine + {wgt} x factorised", z(c) + wgt * z(score), y, G["rows"])
