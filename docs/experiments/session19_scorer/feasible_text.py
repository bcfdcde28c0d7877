"""Scratch (session 19): the text side of an attribute-factorised scorer, learned.

Per attribute a softmax over its values plus "not named", on the frozen MiniLM embedding
of corpus captions (labels: what the oracle's parser reads in the training captions, which
is exactly what `captions.describe` named), one hidden layer. Then the score of a
generation = sum_a sum_v t_a(v) p_a(v) / sum_a (1 - t_a(none)): the expected share of the
caption's named attributes that the audio carries (audio heads as in feasible.py, read from
its caches). Usage: feasible_text.py SCORER N SEED (after feasible.py with the same)."""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(2); torch.manual_seed(0)
from scipy.stats import spearmanr
from suite.judge_diagnostics import SWEEP
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.prompts import load_prompt_records, prompt_set
from suite.models.text_tower import default_tower

path, N, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tag = path.split("/")[-2]
NAMES = ["genre", "mood", "tempo", "key", "mode", "lead", "chords", "bass", "drums"]
corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
E = torch.load(f"/tmp/s19/corpus_{tag}_{N}.pt")
G = torch.load(f"/tmp/s19/val_{tag}_{seed}.pt")
tower = default_tower()

# audio heads (as feasible.py)
aud = {}
for a in NAMES:
    vals = sorted({corpus.attrs[i][a] for i in range(N)})
    y = torch.tensor([vals.index(corpus.attrs[i][a]) for i in range(N)])
    w = torch.zeros(E.shape[1], len(vals), requires_grad=True); b = torch.zeros(len(vals), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)
    def closure():
        opt.zero_grad(); loss = torch.nn.functional.cross_entropy(E @ w + b, y) + 1e-4 * w.pow(2).sum(); loss.backward(); return loss
    opt.step(closure)
    aud[a] = (vals, torch.softmax(G["emb"] @ w.detach() + b.detach(), 1))

# text heads on all 20,000 corpus captions
caps = corpus.captions
X = tower.encode(caps)
parsed = [parse_prompt(c) for c in caps]
import os
HEAD, STEPS, WD = os.environ.get("HEAD", "mlp"), int(os.environ.get("STEPS", 1500)), float(os.environ.get("WD", 1e-2))
hid = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 256), torch.nn.GELU(), torch.nn.Dropout(float(os.environ.get("DROP", 0)))) if HEAD == "mlp" else torch.nn.Identity()
width = 256 if HEAD == "mlp" else X.shape[1]
outs = torch.nn.ModuleDict({a: torch.nn.Linear(width, len(aud[a][0]) + 1) for a in NAMES})
Y = {a: torch.tensor([aud[a][0].index(p[a]) if a in p and p[a] in aud[a][0] else len(aud[a][0]) for p in parsed]) for a in NAMES}
opt = torch.optim.AdamW(list(hid.parameters()) + list(outs.parameters()), lr=float(os.environ.get('LR', 1e-3)), weight_decay=WD)
for step in range(STEPS):
    idx = torch.randint(0, len(caps), (256,))
    h = hid(X[idx])
    loss = sum(torch.nn.functional.cross_entropy(outs[a](h), Y[a][idx]) for a in NAMES)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 500 == 0:
        print("text step", step, float(loss), flush=True)

prompts = [r["prompt"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
allrows = [p for p in prompts for _ in range(4)] * len(SWEEP)
hid.eval()
with torch.no_grad():
    hp = hid(tower.encode(prompts))
    T = {a: torch.softmax(outs[a](hp), 1) for a in NAMES}  # [P, V+1]
# text-side accuracy on the validation prompts against the oracle's parser
for a in NAMES:
    truth = [p.get(a) for p in map(parse_prompt, prompts)]
    pred = [None if int(k) == len(aud[a][0]) else aud[a][0][int(k)] for k in T[a].argmax(1)]
    kinds = [r["split"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
    by = {k: np.mean([t == q for t, q, kk in zip(truth, pred, kinds) if kk == k]) for k in sorted(set(kinds))}
    print(by)
    print(f"text {a:7s} agreement with parse_prompt on validation prompts {np.mean([t == q for t, q in zip(truth, pred)]):.3f}")
pidx = np.repeat(np.arange(len(prompts)), 4)
pidx = np.tile(pidx, len(SWEEP))
num = sum((T[a][pidx, :-1] * aud[a][1]).sum(1) for a in NAMES)
den = sum(1 - T[a][pidx, -1] for a in NAMES)
score = (num / den.clamp_min(1e-6)).numpy()
y = G["adh"].numpy(); c = G["cos"].numpy()
known = np.isfinite(y)
_, inv = np.unique(np.array(allrows)[known], return_inverse=True)
mean = lambda x: np.bincount(inv, x) / np.bincount(inv)
for label, s in (("learned text + audio heads", score[known]), ("cosine", c[known])):
    yy = y[known]
    print(f"{label}: pooled {spearmanr(s, yy).statistic:.3f} between {spearmanr(mean(s), mean(yy)).statistic:.3f} "
          f"within {spearmanr(s - mean(s)[inv], yy - mean(yy)[inv]).statistic:.3f}  (n={known.sum()})", flush=True)
z = lambda x: (x - x.mean()) / x.std()
for wgt in (0.5, 1.0, 2.0):
    s = z(c[known]) + wgt * z(score[known]); yy = y[known]
    print(f"cosine + {wgt} x learned factorised: pooled {spearmanr(s, yy).statistic:.3f} between {spearmanr(mean(s), mean(yy)).statistic:.3f} "
          f"within {spearmanr(s - mean(s)[inv], yy - mean(yy)[inv]).statistic:.3f}", flush=True)
