"""Scratch (session 19): the factorised reading with audio heads learned from GENERATIONS.

Audio heads (logistic regression per attribute on the scorer's audio embedding) trained on
N of the base model's generations for the TRAINING prompts (the cached CFG sweep of
artifacts/generations/434d1d34bae6ea06.pt), labelled with what the audio carries: genre,
key, mode and drums as the oracle recognises them in the content, the rest from the header
(rendered). Evaluated as feasible.py on the validation sweep (sweep_cache.py's draw at
SEED), with the oracle's parser as the text side (the ceiling). Usage: gen_heads.py SCORER N SEED."""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)
from common import CACHE, NAMES, fit_softmax, load_sweep, report
from suite.models.scorer import MuLanScorer
from suite.music import tokens as T
from suite.music.oracle import parse_prompt, recognise
from suite.music.render import render

path, N, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CONTENT = {"genre", "key", "mode", "drums"}
m = MuLanScorer.from_checkpoint(path).eval()
g = torch.load("/work/main/artifacts/generations/434d1d34bae6ea06.pt")
idx = torch.randperm(len(g["tokens"]), generator=torch.Generator().manual_seed(0))[:N]
tok = g["tokens"][idx]
cache = f"{CACHE}/gen_{path.split('/')[-2]}_{N}.pt"
if os.path.exists(cache):
    E = torch.load(cache)
else:
    with torch.no_grad():
        E = torch.cat([m.embed_audio(render(tok[i:i + 256])) for i in range(0, N, 256)])
    torch.save(E, cache)
labels = []
for row in tok.numpy():
    head, seen = T.decode(row).attrs, recognise(row)
    labels.append({a: (seen[a] if a in CONTENT else head[a]) for a in NAMES})
G = load_sweep("validation", seed)
probs = {}
tr = torch.arange(N) < int(0.9 * N)
for a in NAMES:
    vals = sorted({l[a] for l in labels} | {v for p in G["prompts"] for k, v in parse_prompt(p).items() if k == a})
    y = torch.tensor([vals.index(l[a]) for l in labels])
    w, b = fit_softmax(E[tr], y[tr], len(vals))
    acc = float(((E[~tr] @ w + b).argmax(1) == y[~tr]).float().mean())
    probs[a] = (vals, torch.softmax(G["emb"] @ w + b, 1).numpy())
    print(f"{a:7s} held-out generations acc {acc:.3f}", flush=True)
score = np.full(len(G["rows"]), np.nan)
for i, p in enumerate(G["rows"]):
    ps = [probs[k][1][i, probs[k][0].index(v)] for k, v in parse_prompt(p).items() if k in probs and v in probs[k][0]]
    if ps:
        score[i] = np.mean(ps)
report("generation heads, parser text", score, G["adh"].numpy(), G["rows"])
report("cosine", G["cos"].numpy(), G["adh"].numpy(), G["rows"])
