"""Scratch (session 14): re-align the committed scorer's joint space on its frozen audio
trunk, with large contrastive batches (LiT-style: Zhai et al. 2022 lock one tower; here the
audio ViT trunk is locked, its linear head and the text MLP train).

Step 1 (cached in /tmp/exp/trunk.pt): the trunk features of every corpus piece (rendered
clean of added noise) and MiniLM embeddings of its caption plus CAPS fresh captions drawn
from its attributes. Step 2: InfoNCE on batches of BATCH pieces, each with one of its
captions, for STEPS steps; every 250 steps the Spearman with the oracle's adherence on the
validation generations (pooled / between / within prompts)."""
import sys, time, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
from pathlib import Path
from scipy.stats import spearmanr
from suite.music.captions import describe
from suite.music.corpus import build_corpus
from suite.music.oracle import judge_batch
from suite.music.render import render
from suite.models.scorer import MuLanScorer, info_nce
from suite.models.text_tower import default_tower

STEPS, BATCH, LR = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
CAPS = 4
m = MuLanScorer.from_checkpoint("/work/main/artifacts/scorer-683919e68587/model.pt").eval()
tower = default_tower()
cache = Path("/tmp/exp/trunk.pt")
if not cache.exists():
    corpus = build_corpus(0, 20000, "/work/main", progress=False)
    tok = torch.as_tensor(np.asarray(corpus.tokens)).long()
    t0, feats = time.time(), []
    with torch.no_grad():
        for i in range(0, len(tok), 64):
            feats.append(m.audio_encoder(render(tok[i:i + 64])))
            if i % 2560 == 0:
                print("trunk", i, f"{time.time() - t0:.0f}s", flush=True)
    rng = np.random.default_rng(0)
    caps = [[c] + [describe(rng, a, f) for _ in range(CAPS)] for c, a, f in zip(corpus.captions, corpus.attrs, corpus.flaws)]
    flat = [c for cs in caps for c in cs]
    text = tower.encode(flat).view(len(caps), CAPS + 1, -1)
    ev = torch.load("/tmp/exp/eval.pt"); audio = torch.load("/tmp/exp/eval_audio.pt")
    with torch.no_grad():
        ev_feat = torch.cat([m.audio_encoder(audio[i:i + 64]) for i in range(0, len(audio), 64)])
    torch.save({"feat": torch.cat(feats), "text": text, "ev_feat": ev_feat, "ev_text": tower.encode(ev["prompt"]),
                "ev_prompt": ev["prompt"], "ev_tokens": ev["tokens"]}, cache)
d = torch.load(cache)
SPARSE = len(sys.argv) > 5 and sys.argv[5] == "sparse"
if SPARSE:  # + captions naming 1-2 of genre / mood / tempo / lead, so each gets its own direction
    sparse_cache = Path("/tmp/exp/trunk_sparse.pt")
    if not sparse_cache.exists():
        corpus = build_corpus(0, 20000, "/work/main", progress=False)
        rng = np.random.default_rng(1)
        names = ("genre", "mood", "tempo", "lead")
        def sparse(a):
            pick = tuple(rng.choice(names, size=int(rng.integers(1, 3)), replace=False))
            return describe(rng, {k: a[k] for k in pick}, None, quality=False, require=pick)
        caps = [sparse(a) for a in corpus.attrs for _ in range(2)]
        print(caps[:6], flush=True)
        torch.save(tower.encode(caps).view(len(corpus.attrs), 2, -1), sparse_cache)
    d["text"] = torch.cat([d["text"], torch.load(sparse_cache)], dim=1)  # [N, 1 + CAPS + 2, 384]
    CAPS = d["text"].shape[1] - 1
adh = np.array([j.adherence_mean if j.adherence else np.nan for j in judge_batch(d["ev_tokens"], d["ev_prompt"])])
keep = np.isfinite(adh); _, inv = np.unique(np.array(d["ev_prompt"])[keep], return_inverse=True)

def evaluate(step):
    with torch.no_grad():
        a = torch.nn.functional.normalize(m.audio_proj(d["ev_feat"]), dim=-1)
        s = (a * m.embed_text(d["ev_text"])).sum(-1).numpy()[keep]
    mean = lambda x: np.bincount(inv, x) / np.bincount(inv)
    y = adh[keep]
    print(f"step {step}: pooled {spearmanr(s, y).statistic:.3f} between {spearmanr(mean(s), mean(y)).statistic:.3f} "
          f"within {spearmanr(s - mean(s)[inv], y - mean(y)[inv]).statistic:.3f}", flush=True)

val = torch.arange(len(d["feat"]))[-500:]  # the held-out tail: a retrieval check
params = list(m.audio_proj.parameters()) + list(m.text_proj.parameters()) + [m.logit_scale]
opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.05)
gen = torch.Generator().manual_seed(0)
evaluate(0)
for step in range(1, STEPS + 1):
    i = torch.randint(0, len(d["feat"]) - 500, (BATCH,), generator=gen)
    k = torch.randint(0, CAPS + 1, (BATCH,), generator=gen)
    t = d["text"][i, k]
    a = torch.nn.functional.normalize(m.audio_proj(d["feat"][i]), dim=-1)
    loss = info_nce(a, m.embed_text(t), m.clamped_logit_scale(), text_key=t)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 0:
        print(f"step {step} loss {loss.item():.3f} tau {m.temperature:.4f}", flush=True)
        evaluate(step)
