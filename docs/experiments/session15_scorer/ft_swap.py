"""Scratch (session 15): fine-tune the WHOLE committed scorer (audio trunk included) with
attribute-swapped negative captions (swapneg.py's loss and captions, /tmp/exp/swapneg.pt),
on corpus pieces rendered on the fly with the build's noise augmentation. HEADS: start from
swapneg.py's re-aligned heads (a file) or from the committed ones ("none"). Every 100 steps
the Spearman with the oracle's adherence on the validation generations.
Usage: ft_swap.py STEPS LR HEADS NEG_WEIGHT. One torch thread."""
import sys, time, torch, numpy as np
import torch.nn.functional as F
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.music.oracle import judge_batch
from suite.music.render import render
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower
from datamodules.audio import _load_default_corpus, add_noise

steps, lr, heads, NEG_W = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
torch.manual_seed(0); gen = torch.Generator().manual_seed(0)
m = MuLanScorer.from_checkpoint("/work/main/artifacts/scorer-683919e68587/model.pt")
if heads != "none":
    h = torch.load(heads)
    m.audio_proj.load_state_dict(h["audio_proj"]); m.text_proj.load_state_dict(h["text_proj"])
    m.logit_scale.data.copy_(h["logit_scale"])
tower = default_tower()
c_tok, _ = _load_default_corpus(20000, 0, "/work/main")
s = torch.load("/tmp/exp/swapneg.pt"); table, pos_i, neg_i = s["table"], s["pos"], s["neg"]
ev = torch.load("/tmp/exp/eval.pt"); ev_audio = torch.load("/tmp/exp/eval_audio.pt")
ev_adh = np.array([j.adherence_mean if j.adherence else np.nan for j in judge_batch(ev["tokens"], ev["prompt"])])
ev_p = np.array(ev["prompt"]); keep = np.isfinite(ev_adh)
_, inv = np.unique(ev_p[keep], return_inverse=True)
ev_cond = tower.encode(list(ev_p))


def evaluate(step):
    m.eval()
    with torch.no_grad():
        sc = torch.cat([m.score_embeddings(ev_audio[i:i + 64], ev_cond[i:i + 64]) for i in range(0, len(ev_audio), 64)]).numpy()
    m.train()
    sc, a = sc[keep], ev_adh[keep]
    sm = np.bincount(inv, sc) / np.bincount(inv); am = np.bincount(inv, a) / np.bincount(inv)
    print(f"step {step}: pooled {spearmanr(sc, a).statistic:.3f} between {spearmanr(sm, am).statistic:.3f} "
          f"within {spearmanr(sc - sm[inv], a - am[inv]).statistic:.3f}", flush=True)


opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.05)
evaluate(0); t0 = time.time()
for step in range(1, steps + 1):
    for grp in opt.param_groups:
        grp["lr"] = lr * min(1.0, step / 20)
    i = torch.randint(0, len(c_tok) - 500, (64,), generator=gen)
    k = torch.randint(0, pos_i.shape[1], (64,), generator=gen)
    with torch.no_grad():
        audio = render(c_tok[i])
        audio = add_noise(audio, 10 + 30 * torch.rand(len(audio), generator=gen), gen)
    a = m.embed_audio(audio)  # [B, J]
    pi, ni = pos_i[i, k], neg_i[i, k]  # [B], [B, S]
    t = m.embed_text(table[pi])
    tn = m.embed_text(table[ni.clamp(min=0)].flatten(0, 1)).view(*ni.shape, -1)  # [B, S, J]
    scale = m.clamped_logit_scale().exp()
    same = (pi[:, None] == pi[None, :]).float()
    logits = scale * a @ t.T
    nl = (scale * (a[:, None] * tn).sum(-1) + np.log(NEG_W)).masked_fill(ni < 0, float("-inf"))
    a2t = -(same / same.sum(1, keepdim=True) * torch.cat([logits, nl], 1).log_softmax(1)[:, :64]).sum(1).mean()
    t2a = -(same / same.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
    loss = 0.5 * (a2t + t2a)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 25 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    if step % 100 == 0:
        evaluate(step)
m.save(f"/tmp/exp/scorer_ftswap_{heads != 'none'}_{lr}.pt")
