"""Scratch (session 15): the joint-space heads re-aligned on the committed scorer's frozen
audio trunk (as session 14's heads.py) with attribute-swapped negative captions
(NegCLIP-style: Yuksekgonul et al. 2023 add captions that differ from the true one in one
word to CLIP's contrastive pool, so the text side cannot read a caption as a bag of
genre words).

For each corpus piece and each of CAPS draws, a caption from its attributes (genre, mood,
tempo and lead each named with odds 1/2, at least one) and, with the same random stream,
the same caption with ONE named attribute changed to another value (genre, mood, tempo,
lead, drums or mode): the wording is identical but for that attribute. Loss: InfoNCE over
the batch's captions plus, on the audio-to-text side, each piece's own swapped captions.
Every EVAL steps the Spearman with the oracle's adherence on the validation generations
(pooled / between / within prompts). Usage: swapneg.py STEPS BATCH LR THREADS [NEG_WEIGHT]."""
import sys, time, torch, numpy as np
import torch.nn.functional as F
sys.path.insert(0, "/work/main")
torch.set_num_threads(int(sys.argv[4]))
from pathlib import Path
from scipy.stats import spearmanr
from suite.music import attributes as A
from suite.music.captions import describe
from suite.music.corpus import build_corpus
from suite.music.oracle import judge_batch
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower

STEPS, BATCH, LR = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
CAPS, EVAL = 2, 250
SWAP = ("genre", "mood", "tempo", "lead", "drums", "mode")
VALUES = {"genre": A.GENRES, "mood": A.MOODS, "tempo": A.TEMPO_NAMES, "lead": A.LEAD_INSTRUMENTS,
          "drums": A.DRUM_STYLES, "mode": A.MODES}
m = MuLanScorer.from_checkpoint("/work/main/artifacts/scorer-683919e68587/model.pt").eval()
tower = default_tower()
d = torch.load("/tmp/exp/trunk.pt")  # session 14's heads.py cache: trunk features, eval set
cache = Path("/tmp/exp/swapneg.pt")
if not cache.exists():
    corpus = build_corpus(0, 20000, "/work/main", progress=False)
    rng = np.random.default_rng(0)
    pos, neg = [], []  # pos [N * CAPS], neg [N * CAPS][len(SWAP)] (None: not named / same text)
    for attrs in corpus.attrs:
        for _ in range(CAPS):
            req = tuple(a for a in ("genre", "mood", "tempo", "lead") if rng.random() < 0.5) or ("genre",)
            seed = int(rng.integers(2**31))
            text = describe(np.random.default_rng(seed), attrs, None, quality=False, require=req)
            row = []
            for name in SWAP:
                other = [v for v in VALUES[name] if v != attrs.get(name)]
                swapped = dict(attrs, **{name: other[int(rng.integers(len(other)))]})
                alt = describe(np.random.default_rng(seed), swapped, None, quality=False, require=req)
                row.append(alt if alt != text else None)
            pos.append(text); neg.append(row)
    print(pos[:2], neg[:2], flush=True)
    flat = sorted({t for r in neg for t in r if t} | set(pos))
    print(len(flat), "captions to encode", flush=True)
    t0, embs = time.time(), []
    for i in range(0, len(flat), 4096):
        embs.append(tower.encode(flat[i:i + 4096]))
        print("encoded", i + 4096, f"{time.time() - t0:.0f}s", flush=True)
    idx = {t: i for i, t in enumerate(flat)}
    table = torch.cat(embs)
    pos_i = torch.tensor([idx[t] for t in pos]).view(-1, CAPS)
    neg_i = torch.tensor([[idx[t] if t else -1 for t in r] for r in neg]).view(-1, CAPS, len(SWAP))
    torch.save({"table": table, "pos": pos_i, "neg": neg_i}, cache)
s = torch.load(cache)
table, pos_i, neg_i = s["table"], s["pos"], s["neg"]
print("swapped captions per draw:", (neg_i >= 0).float().sum(-1).mean().item(), flush=True)
NEG_W = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
adh = np.array([j.adherence_mean if j.adherence else np.nan for j in judge_batch(d["ev_tokens"], d["ev_prompt"])])
keep = np.isfinite(adh); _, inv = np.unique(np.array(d["ev_prompt"])[keep], return_inverse=True)


def evaluate(step):
    with torch.no_grad():
        a = F.normalize(m.audio_proj(d["ev_feat"]), dim=-1)
        sc = (a * m.embed_text(d["ev_text"])).sum(-1).numpy()[keep]
    mean = lambda x: np.bincount(inv, x) / np.bincount(inv)
    y = adh[keep]
    print(f"step {step}: pooled {spearmanr(sc, y).statistic:.3f} between {spearmanr(mean(sc), mean(y)).statistic:.3f} "
          f"within {spearmanr(sc - mean(sc)[inv], y - mean(y)[inv]).statistic:.3f}", flush=True)


def loss_fn(i, k):
    a = F.normalize(m.audio_proj(d["feat"][i]), dim=-1)  # [B, J]
    pi = pos_i[i, k]  # [B]
    t = m.embed_text(table[pi])  # [B, J]
    scale = m.clamped_logit_scale().exp()
    same = (pi[:, None] == pi[None, :]).float()  # [B, B]: equal captions are both right
    logits = scale * a @ t.T  # [B, B]
    ni = neg_i[i, k]  # [B, S]
    tn = m.embed_text(table[ni.clamp(min=0)].flatten(0, 1)).view(*ni.shape, -1)  # [B, S, J]
    neg_logits = scale * (a[:, None, :] * tn).sum(-1) + torch.log(torch.tensor(NEG_W))  # [B, S]
    neg_logits = neg_logits.masked_fill(ni < 0, float("-inf"))
    a2t_all = torch.cat([logits, neg_logits], dim=1).log_softmax(dim=1)[:, : len(i)]  # [B, B]
    a2t = -(same / same.sum(1, keepdim=True) * a2t_all).sum(1).mean()
    t2a = -(same / same.sum(0, keepdim=True) * logits.log_softmax(dim=0)).sum(0).mean()
    return 0.5 * (a2t + t2a)


params = list(m.audio_proj.parameters()) + list(m.text_proj.parameters()) + [m.logit_scale]
opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.05)
gen = torch.Generator().manual_seed(0)
evaluate(0)
t0 = time.time()
for step in range(1, STEPS + 1):
    i = torch.randint(0, len(d["feat"]) - 500, (BATCH,), generator=gen)
    k = torch.randint(0, CAPS, (BATCH,), generator=gen)
    loss = loss_fn(i, k)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0:
        print(f"step {step} loss {loss.item():.3f} tau {m.temperature:.4f} {time.time() - t0:.0f}s", flush=True)
    if step % EVAL == 0:
        evaluate(step)
torch.save({"audio_proj": m.audio_proj.state_dict(), "text_proj": m.text_proj.state_dict(),
            "logit_scale": m.logit_scale.detach()}, f"/tmp/exp/swapneg_heads_{BATCH}_{NEG_W}.pt")
