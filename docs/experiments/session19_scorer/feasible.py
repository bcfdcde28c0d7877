"""Scratch (session 19): can an attribute-factorised reading of the scorer's AUDIO embedding
rank generations like the oracle's adherence, when its heads learn only from the corpus?

Per attribute a multinomial logistic regression on the in-use scorer's audio embedding of
N corpus pieces (labels: the pieces' attributes), then on the validation CFG sweep (seed S,
as judge_check.py draws it) the score of a generation = the mean over the prompt's named
attributes (oracle's parse_prompt: the text side's upper bound) of P(named value | audio).
Spearman with the oracle's adherence pooled / between / within prompts, beside the cosine.
Usage: feasible.py SCORER N SEED. Caches in /tmp/s19."""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(2)
from scipy.stats import spearmanr
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.prompts import load_prompt_records, prompt_set
from suite.music.render import render
from suite.policies.music import MusicPolicy
from suite.rollout import policy_audio
from suite.world_diagnostics import sample_cfg_at

path, N, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
NAMES = ["genre", "mood", "tempo", "key", "mode", "lead", "chords", "bass", "drums"]
m = MuLanScorer.from_checkpoint(path).eval()
tag = path.split("/")[-2]

def emb_of(audio):
    with torch.no_grad():
        return torch.cat([m.embed_audio(audio[i:i + 64]) for i in range(0, len(audio), 64)])

cache = f"/tmp/s19/corpus_{tag}_{N}.pt"
corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
if os.path.exists(cache):
    E = torch.load(cache)
else:
    chunks = []
    for i in range(0, N, 256):
        chunks.append(emb_of(render(torch.as_tensor(corpus.tokens[i:min(N, i + 256)]))))
        print("corpus", i, flush=True)
    E = torch.cat(chunks); torch.save(E, cache)

heads = {}
for a in NAMES:
    vals = sorted({corpus.attrs[i][a] for i in range(N)})
    y = torch.tensor([vals.index(corpus.attrs[i][a]) for i in range(N)])
    w = torch.zeros(E.shape[1], len(vals), requires_grad=True); b = torch.zeros(len(vals), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)
    tr = torch.arange(N) < int(0.9 * N)
    def closure():
        opt.zero_grad(); loss = torch.nn.functional.cross_entropy(E[tr] @ w + b, y[tr]) + 1e-4 * w.pow(2).sum(); loss.backward(); return loss
    opt.step(closure)
    with torch.no_grad():
        acc = float(((E[~tr] @ w + b).argmax(1) == y[~tr]).float().mean())
    heads[a] = (vals, w.detach(), b.detach())
    print(f"{a:7s} corpus held-out acc {acc:.3f}", flush=True)

gcache = f"/tmp/s19/val_{tag}_{seed}.pt"
prompts = [r["prompt"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
n = 4
rows = [p for p in prompts for _ in range(n)]
if os.path.exists(gcache):
    G = torch.load(gcache)
else:
    world = MusicPolicy.from_spec("/work/main/artifacts/base_lm-9f34ecb56fe5/model.pt", use_grammar_mask=True)
    cond = world.encode_text(prompts).repeat_interleave(n)
    every = torch.ones(world.seq_len, dtype=torch.bool)
    embs, adh, cos = [], [], []
    for name, use_negative, gamma in SWEEP:
        neg = world.encode_text(["Bad audio quality." if use_negative else ""])
        with torch.no_grad():
            tokens = sample_cfg_at(world, cond, neg, gamma, every, 0.99, seed)
            judged = world.oracle.scores(tokens.view(len(prompts), n, *tokens.shape[1:]), prompts)
            audio = policy_audio(world, tokens)
            embs.append(emb_of(audio))
            cos.append(torch.cat([m.score(audio[i:i + 64], rows[i:i + 64]) for i in range(0, len(rows), 64)]))
        adh.append(judged["adherence"].reshape(-1))
        print("sweep", name, flush=True)
    G = {"emb": torch.cat(embs), "adh": torch.cat(adh), "cos": torch.cat(cos)}
    torch.save(G, gcache)

allrows = rows * len(SWEEP)
score = np.full(len(allrows), np.nan)
probs = {a: torch.softmax(G["emb"] @ w + b, 1).numpy() for a, (vals, w, b) in heads.items()}
for i, p in enumerate(allrows):
    named = {k: v for k, v in parse_prompt(p).items() if k in heads}
    ps = [probs[k][i, heads[k][0].index(v)] for k, v in named.items() if v in heads[k][0]]
    if ps:
        score[i] = np.mean(ps)
y = G["adh"].numpy(); c = G["cos"].numpy()
known = np.isfinite(y) & np.isfinite(score)
_, inv = np.unique(np.array(allrows)[known], return_inverse=True)
mean = lambda x: np.bincount(inv, x) / np.bincount(inv)
for label, s in (("factorised", score[known]), ("cosine", c[known])):
    yy = y[known]
    print(f"{label}: pooled {spearmanr(s, yy).statistic:.3f} between {spearmanr(mean(s), mean(yy)).statistic:.3f} "
          f"within {spearmanr(s - mean(s)[inv], yy - mean(yy)[inv]).statistic:.3f}  (n={known.sum()})", flush=True)
# the cosine and the factorised reading together: a sum of the two, each standardised
from scipy.stats import rankdata
z = lambda x: (x - x.mean()) / x.std()
for wgt in (0.5, 1.0, 2.0):
    s = z(c[known]) + wgt * z(score[known]); yy = y[known]
    print(f"cosine + {wgt} x factorised: pooled {spearmanr(s, yy).statistic:.3f} between {spearmanr(mean(s), mean(yy)).statistic:.3f} "
          f"within {spearmanr(s - mean(s)[inv], yy - mean(yy)[inv]).statistic:.3f}", flush=True)
