"""Scratch (session 19): the text side of an attribute-factorised scorer, learned.

Per attribute a softmax over its values plus "not named", on the frozen MiniLM embedding
of corpus captions (labels: what the oracle's parser reads in the training captions, which
is exactly what `captions.describe` named), trained by AdamW: linear (HEAD=linear) or one
hidden layer (HEAD=mlp, optional dropout DROP). Then the score of a generation =
sum_a sum_v t_a(v) p_a(v) / sum_a (1 - t_a(none)): the expected share of the caption's
named attributes that the audio carries (audio heads as in feasible.py, on all N pieces).
Prints the text heads' agreement with the parser per prompt kind, then the Spearman parts
of the reading, the cosine and their standardised sums on the validation sweep at SEED.
Usage: feasible_text.py SCORER N SEED (after feasible.py with the same; env HEAD, STEPS,
LR, WD, DROP)."""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2); torch.manual_seed(0)
from common import CACHE, NAMES, fit_softmax, load_sweep, report
from suite.models.text_tower import default_tower
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.prompts import load_prompt_records, prompt_set

path, N, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
HEAD, STEPS, WD = os.environ.get("HEAD", "mlp"), int(os.environ.get("STEPS", 1500)), float(os.environ.get("WD", 1e-2))
corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
E = torch.load(f"{CACHE}/corpus_{path.split('/')[-2]}_{N}.pt")
G = load_sweep("validation", seed)
tower = default_tower()

aud = {}  # attribute -> (values, P(value | audio) [generations, V])
for a in NAMES:
    vals = sorted({corpus.attrs[i][a] for i in range(N)})
    w, b = fit_softmax(E, torch.tensor([vals.index(corpus.attrs[i][a]) for i in range(N)]), len(vals))
    aud[a] = (vals, torch.softmax(G["emb"] @ w + b, 1))

# text heads on all 20,000 corpus captions
X = tower.encode(corpus.captions)
parsed = [parse_prompt(c) for c in corpus.captions]
if HEAD == "mlp":
    hid = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 256), torch.nn.GELU(), torch.nn.Dropout(float(os.environ.get("DROP", 0))))
else:
    hid = torch.nn.Identity()
width = 256 if HEAD == "mlp" else X.shape[1]
outs = torch.nn.ModuleDict({a: torch.nn.Linear(width, len(aud[a][0]) + 1) for a in NAMES})
Y = {a: torch.tensor([aud[a][0].index(p[a]) if p.get(a) in aud[a][0] else len(aud[a][0]) for p in parsed]) for a in NAMES}
opt = torch.optim.AdamW(list(hid.parameters()) + list(outs.parameters()), lr=float(os.environ.get("LR", 1e-3)), weight_decay=WD)
for step in range(STEPS):
    idx = torch.randint(0, len(parsed), (256,))
    h = hid(X[idx])
    loss = sum(torch.nn.functional.cross_entropy(outs[a](h), Y[a][idx]) for a in NAMES)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 500 == 0:
        print("text step", step, float(loss), flush=True)

prompts = G["prompts"]
kinds = [r["split"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
hid.eval()
with torch.no_grad():
    hp = hid(tower.encode(prompts))
    T = {a: torch.softmax(outs[a](hp), 1) for a in NAMES}  # [P, V+1]
for a in NAMES:  # the text heads against the oracle's parser, on the validation prompts
    truth = [p.get(a) for p in map(parse_prompt, prompts)]
    pred = [None if int(k) == len(aud[a][0]) else aud[a][0][int(k)] for k in T[a].argmax(1)]
    hit = np.array([t == q for t, q in zip(truth, pred)])
    print({k: float(hit[np.array(kinds) == k].mean()) for k in sorted(set(kinds))})
    print(f"text {a:7s} agreement with parse_prompt on validation prompts {hit.mean():.3f}")
pidx = np.tile(np.repeat(np.arange(len(prompts)), 4), len(G["conditions"]))
num = sum((T[a][pidx, :-1] * aud[a][1]).sum(1) for a in NAMES)
den = sum(1 - T[a][pidx, -1] for a in NAMES)
score = (num / den.clamp_min(1e-6)).numpy()
y, c = G["adh"].numpy(), G["cos"].numpy()
report("learned text + audio heads", score, y, G["rows"])
report("cosine", c, y, G["rows"])
known = np.isfinite(y)
z = lambda x: (x - x[known].mean()) / x[known].std()  # noqa: E731
for wgt in (0.5, 1.0, 2.0):
    report(f"cosine + {wgt} x learned factorised", z(c) + wgt * z(score), y, G["rows"])
