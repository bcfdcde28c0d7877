"""Scratch (session 19): the factorised reading with audio heads learned from GENERATIONS.

Audio heads (logistic regression per attribute on the scorer's audio embedding) trained on
N of the base model's generations for the TRAINING prompts (the cached CFG sweep of
artifacts/generations/434d1d34bae6ea06.pt), labelled with what the audio carries: genre,
key, mode and drums as the oracle recognises them in the content, the rest from the header
(rendered). Evaluated as feasible.py on the validation sweep (its cache), with the
oracle's parser as the text side (the ceiling) and with corpus heads + generation heads
averaged. Usage: gen_heads.py SCORER N SEED."""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer
from suite.music import tokens as T
from suite.music.oracle import parse_prompt, recognise
from suite.music.prompts import load_prompt_records, prompt_set
from suite.music.render import render

path, N, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tag = path.split("/")[-2]
NAMES = ["genre", "mood", "tempo", "key", "mode", "lead", "chords", "bass", "drums"]
CONTENT = {"genre", "key", "mode", "drums"}
m = MuLanScorer.from_checkpoint(path).eval()
g = torch.load("/work/main/artifacts/generations/434d1d34bae6ea06.pt")
idx = torch.randperm(len(g["tokens"]), generator=torch.Generator().manual_seed(0))[:N]
tok = g["tokens"][idx]
cache = f"/tmp/s19/gen_{tag}_{N}.pt"
if os.path.exists(cache):
    E = torch.load(cache)
else:
    parts = []
    with torch.no_grad():
        for i in range(0, N, 256):
            parts.append(m.embed_audio(render(tok[i:i + 256])))
            print("gen", i, flush=True)
    E = torch.cat(parts); torch.save(E, cache)
labels = []
for row in tok.numpy():
    head = T.decode(row).attrs
    seen = recognise(row)
    labels.append({a: (seen[a] if a in CONTENT else head[a]) for a in NAMES})
G = torch.load(f"/tmp/s19/val_{tag}_{seed}.pt")
prompts = [r["prompt"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
allrows = [p for p in prompts for _ in range(4)] * len(SWEEP)
probs = {}
for a in NAMES:
    vals = sorted({l[a] for l in labels} | {v for p in prompts for k, v in parse_prompt(p).items() if k == a})
    y = torch.tensor([vals.index(l[a]) for l in labels])
    w = torch.zeros(E.shape[1], len(vals), requires_grad=True); b = torch.zeros(len(vals), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)
    tr = torch.arange(N) < int(0.9 * N)
    def closure():
        opt.zero_grad(); loss = torch.nn.functional.cross_entropy(E[tr] @ w + b, y[tr]) + 1e-4 * w.pow(2).sum(); loss.backward(); return loss
    opt.step(closure)
    with torch.no_grad():
        acc = float(((E[~tr] @ w + b).argmax(1) == y[~tr]).float().mean())
        probs[a] = (vals, torch.softmax(G["emb"] @ w + b, 1).numpy())
    print(f"{a:7s} held-out generations acc {acc:.3f}", flush=True)
score = np.full(len(allrows), np.nan)
for i, p in enumerate(allrows):
    ps = [probs[k][1][i, probs[k][0].index(v)] for k, v in parse_prompt(p).items() if k in probs and v in probs[k][0]]
    if ps:
        score[i] = np.mean(ps)
y = G["adh"].numpy(); c = G["cos"].numpy()
known = np.isfinite(y) & np.isfinite(score)
_, inv = np.unique(np.array(allrows)[known], return_inverse=True)
mean = lambda x: np.bincount(inv, x) / np.bincount(inv)
for label, s in (("generation heads, parser text", score[known]), ("cosine", c[known])):
    yy = y[known]
    print(f"{label}: pooled {spearmanr(s, yy).statistic:.3f} between {spearmanr(mean(s), mean(yy)).statistic:.3f} "
          f"within {spearmanr(s - mean(s)[inv], yy - mean(yy)[inv]).statistic:.3f}  (n={known.sum()})", flush=True)
