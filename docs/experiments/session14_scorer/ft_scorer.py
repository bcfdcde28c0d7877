"""Scratch (session 14): fine-tune the committed MuLan-style scorer on a caption source and
track its Spearman with the oracle's adherence on the validation generations.

MODE corpus: the corpus pieces and their captions (the build's data, more steps);
MODE mix: half corpus, half the base model's generations on the TRAINING prompts
(gen_sets.py train 1000: the CFG sweep, 6,144 pieces) captioned from what the oracle
recognises in them (`oracle.recognise` -> `captions.describe`, a fresh caption per draw);
MODE gen: generations only; MODE rich: corpus pieces with a fresh caption per draw from
their attributes that must mention each of mood, tempo and lead with odds 1/2 (the corpus
captions name genre 92 % of the time and the rest rarely). Usage: ft_scorer.py MODE STEPS [LR]. One torch thread."""
import sys, time, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.music.captions import describe
from suite.music.oracle import recognise, judge_batch
from suite.music.render import render
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower
from datamodules.audio import _load_default_corpus, add_noise

mode, steps = sys.argv[1], int(sys.argv[2])
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 3e-4
torch.manual_seed(0); rng = np.random.default_rng(0); gen = torch.Generator().manual_seed(0)
m = MuLanScorer.from_checkpoint("/work/main/artifacts/scorer-683919e68587/model.pt")
tower = default_tower()
c_tok, c_cap = _load_default_corpus(20000, 0, "/work/main")
from suite.music.corpus import build_corpus
corpus = build_corpus(0, 20000, "/work/main", progress=False)
g = torch.load("/tmp/exp/train1000.pt")
g_tok = g["tokens"]; g_seen = [recognise(r) for r in g_tok.numpy()]
ev = torch.load("/tmp/exp/eval.pt"); ev_audio = torch.load("/tmp/exp/eval_audio.pt")
ev_adh = np.array([j.adherence_mean if j.adherence else np.nan for j in judge_batch(ev["tokens"], ev["prompt"])])
ev_p = np.array(ev["prompt"]); keep = np.isfinite(ev_adh)
_, inv = np.unique(ev_p[keep], return_inverse=True)
ev_cond = tower.encode(list(ev_p))

def evaluate(step):
    m.eval()
    with torch.no_grad():
        s = torch.cat([m.score_embeddings(ev_audio[i:i + 64], ev_cond[i:i + 64]) for i in range(0, len(ev_audio), 64)]).numpy()
    m.train()
    s, a = s[keep], ev_adh[keep]
    sm = np.bincount(inv, s) / np.bincount(inv); am = np.bincount(inv, a) / np.bincount(inv)
    print(f"step {step}: pooled {spearmanr(s, a).statistic:.3f} between {spearmanr(sm, am).statistic:.3f} "
          f"within {spearmanr(s - sm[inv], a - am[inv]).statistic:.3f}", flush=True)

n_gen = {"corpus": 0, "mix": 32, "gen": 64, "rich": 0}[mode]

def rich(i):
    req = tuple(a for a in ("mood", "tempo", "lead") if rng.random() < 0.5)
    return describe(rng, corpus.attrs[i], corpus.flaws[i], require=("genre",) + req)
opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.05)
evaluate(0); t0 = time.time()
for step in range(1, steps + 1):
    for grp in opt.param_groups:
        grp["lr"] = lr * min(1.0, step / 20)
    ci = torch.randint(0, len(c_tok), (64 - n_gen,), generator=gen)
    gi = torch.randint(0, len(g_tok), (n_gen,), generator=gen)
    toks = torch.cat([c_tok[ci], g_tok[gi]])
    caps = [(rich(i) if mode == "rich" else c_cap[i]) for i in ci.tolist()] + [describe(rng, g_seen[i], None, quality=False) for i in gi.tolist()]
    with torch.no_grad():
        audio = render(toks)
        audio = add_noise(audio, 10 + 30 * torch.rand(len(audio), generator=gen), gen)
        cond = tower.encode(caps)
    loss = m.loss(audio, cond)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 25 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    if step % 100 == 0:
        evaluate(step)
m.save(f"/tmp/exp/scorer_{mode}.pt")
