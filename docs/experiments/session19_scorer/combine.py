"""Scratch (session 19): the in-use scorer's cosine plus an attribute-factorised reading,
all learned from the corpus, on cached CFG sweeps (sweep_cache.py).

- audio heads: per attribute a multinomial logistic regression on the in-use scorer's audio
  features (FEAT=emb: the 128-d joint embedding; FEAT=trunk: the ViT trunk's output) of the
  first N corpus pieces, labels = the pieces' attributes;
- text heads: per attribute a linear softmax over its values + "not named" on the frozen
  MiniLM embedding of the 20,000 corpus captions, labels = what each caption names (the
  oracle's parser reads training captions exactly as captions.describe named them);
- f(audio, prompt) = sum_a sum_v t_a(v) p_a(v) / sum_a (1 - t_a(none)): the expected share
  of the named attributes the audio carries; with TEXT=parser the oracle's parser names them
  (the text side's ceiling, not a learnable judge);
- score = cos + lam * f; the Spearman of each with the oracle's adherence, pooled / between
  / within prompts, per cached seed, then mean and 95 % t-interval over seeds.
Usage: combine.py SPLIT SEEDS [N]  (env FEAT, TEXT: learned | parser | knn (K, TEMP),
TL2: the text heads' L2 weight, 1e-4 by default, chosen on validation)."""
import os, sys, torch, numpy as np
sys.path.insert(0, "/work/main")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(int(os.environ.get("THREADS", 1))); torch.manual_seed(0)
from common import CACHE, NAMES, fit_softmax, load_sweep, reading, spearman_parts
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower
from suite.music import corpus as C
from suite.music.oracle import parse_prompt
from suite.music.render import render
from suite.report_tables import mean_interval

split, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
FEAT, TEXT = os.environ.get("FEAT", "emb"), os.environ.get("TEXT", "learned")
LAMS = (0.0, 0.25, 0.5, 1.0, 2.0, float("inf"))
corpus = C.load("/work/main/artifacts/music_corpus/v4-seed0-n20000")
m = MuLanScorer.from_checkpoint("/work/main/artifacts/scorer-bf8bddcc6a22/model.pt").eval()
cache = f"{CACHE}/corpus_{FEAT}_{N}.pt"
if os.path.exists(cache):
    X = torch.load(cache)
elif FEAT == "emb" and os.path.exists(f"{CACHE}/corpus_scorer-bf8bddcc6a22_{N}.pt"):  # feasible.py's
    X = torch.load(f"{CACHE}/corpus_scorer-bf8bddcc6a22_{N}.pt")
else:
    parts = []
    with torch.no_grad():
        for i in range(0, N, 256):
            f = m.audio_encoder(render(torch.as_tensor(corpus.tokens[i:min(N, i + 256)])))
            parts.append(f if FEAT == "trunk" else torch.nn.functional.normalize(m.audio_proj(f), dim=-1))
    X = torch.cat(parts); torch.save(X, cache)
mu, sd = X.mean(0), X.std(0) + 1e-6

VALS = {a: sorted({corpus.attrs[i][a] for i in range(len(corpus))}) for a in NAMES}
audio_heads = {a: fit_softmax((X - mu) / sd, torch.tensor([VALS[a].index(corpus.attrs[i][a]) for i in range(N)]), len(VALS[a])) for a in NAMES}
tower = default_tower()
T = tower.encode(corpus.captions)
parsed = [parse_prompt(c) for c in corpus.captions]
# what each caption names: the value's index, or len(values) for "not named"
NAMED = {a: torch.tensor([VALS[a].index(p[a]) if p.get(a) in VALS[a] else len(VALS[a]) for p in parsed]) for a in NAMES}
text_heads = {a: fit_softmax(T, NAMED[a], len(VALS[a]) + 1, 500, float(os.environ.get("TL2", 1e-4))) for a in NAMES}

results = {}
for seed in seeds:
    S = load_sweep(split, seed)
    prompts = S["prompts"]; n_cond = len(S["conditions"])
    pidx = np.tile(np.repeat(np.arange(len(prompts)), 4), n_cond)
    feats = (S[FEAT] - mu) / sd
    if TEXT == "parser":
        tp = {a: torch.zeros(len(prompts), len(VALS[a]) + 1) for a in NAMES}
        for j, p in enumerate(prompts):
            named = parse_prompt(p)
            for a in NAMES:
                tp[a][j, VALS[a].index(named[a]) if named.get(a) in VALS[a] else -1] = 1.0
    elif TEXT == "knn":  # the K nearest training captions vote (MiniLM cosine, softmax weights)
        K, temp = int(os.environ.get("K", 20)), float(os.environ.get("TEMP", 0.05))
        te = tower.encode(prompts)
        sim, nn_idx = (te @ T.T).topk(K, dim=1)  # [P, K]
        wts = torch.softmax(sim / temp, 1)
        tp = {}
        for a in NAMES:
            onehot = torch.nn.functional.one_hot(NAMED[a][nn_idx], len(VALS[a]) + 1).float()  # [P, K, V+1]
            tp[a] = (wts[..., None] * onehot).sum(1)
    else:
        te = tower.encode(prompts)
        tp = {a: torch.softmax(te @ w + b, 1) for a, (w, b) in text_heads.items()}
    f = reading(tp, audio_heads, feats, pidx)
    cos, y = S["cos"].numpy(), S["adh"].numpy()
    for lam in LAMS:
        r = spearman_parts(f if lam == float("inf") else cos + lam * f, y, S["rows"])
        results.setdefault(lam, []).append(r)
        print(f"{split} seed {seed} FEAT={FEAT} TEXT={TEXT} lam {lam}: pooled {r[0]:.3f} between {r[1]:.3f} within {r[2]:.3f}", flush=True)
for lam, rs in results.items():
    mi = mean_interval([r[0] for r in rs], 0.95)
    print(f"{split} FEAT={FEAT} TEXT={TEXT} lam {lam}: pooled {mi[0]:.3f} [{mi[1]:.3f}, {mi[2]:.3f}] over seeds {seeds}; "
          f"between {np.mean([r[1] for r in rs]):.3f} within {np.mean([r[2] for r in rs]):.3f}", flush=True)
