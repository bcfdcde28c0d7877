"""Scratch: preference model trained on base-model generations judged by the oracle."""
import sys, time, argparse, torch, numpy as np
from scipy.stats import spearmanr
sys.path.insert(0, "/tmp/exp")
from suite.music.render import render
from suite.models.preference import PreferenceModel, PREFERENCE_PRESETS, bradley_terry_loss
from lightning_modules.pretrain import cosine_with_warmup
from eval_judges import within

ap = argparse.ArgumentParser()
ap.add_argument("--data", nargs="+", default=["/tmp/exp/train1000.pt"])
ap.add_argument("--steps", type=int, default=1000)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--margin", type=float, default=0.05)
ap.add_argument("--init", default="")
ap.add_argument("--config", default="")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--out", default="/tmp/exp/pref_gen.pt")
ap.add_argument("--eval_every", type=int, default=250)
a = ap.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
sets = [torch.load(f) for f in a.data]
tokens = torch.cat([s["tokens"] for s in sets]); q = torch.cat([s["quality"] for s in sets]).float()
print(len(tokens), "generations, quality mean", float(q.mean()), "std", float(q.std()), flush=True)
ev = torch.load("/tmp/exp/eval.pt"); ev_audio = torch.load("/tmp/exp/eval_audio.pt")
groups = np.array([hash(p) for p in ev["prompt"]])
import json
from suite.models.preference import PreferenceConfig
cfg = PreferenceConfig.from_dict(json.loads(a.config)) if a.config else PREFERENCE_PRESETS["tiny"]
model = PreferenceModel.from_checkpoint(a.init) if a.init else PreferenceModel(cfg)
print(model.config, flush=True)
decay = [p for p in model.parameters() if p.ndim >= 2]; other = [p for p in model.parameters() if p.ndim < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}], lr=a.lr)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, 50, a.steps, 0.05))
gen = torch.Generator().manual_seed(0)

def evaluate(step):
    model.eval()
    with torch.no_grad():
        s = torch.cat([model.score(ev_audio[i:i+128]) for i in range(0, len(ev_audio), 128)]).numpy()
    t = ev["quality"].numpy()
    print(f"step {step}: eval pooled spearman {spearmanr(s, t).statistic:.3f} within-prompt {within(s, t, groups):.3f}", flush=True)
    model.train()

t0 = time.time(); run = 0.0
for step in range(a.steps):
    i = torch.randint(0, len(q), (a.batch * 3,), generator=gen); j = torch.randint(0, len(q), (a.batch * 3,), generator=gen)
    keep = ((q[i] - q[j]).abs() >= a.margin).nonzero()[:, 0][: a.batch]
    i, j = i[keep], j[keep]
    w = torch.where(q[i] >= q[j], i, j); l = torch.where(q[i] >= q[j], j, i)
    audio = render(torch.cat([tokens[w], tokens[l]]))
    r = model(audio)
    loss = bradley_terry_loss(r[: len(w)], r[len(w):])
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    run = 0.98 * run + 0.02 * float(loss) if step else float(loss)
    if step % 50 == 0:
        print(f"step {step} loss {run:.3f} {time.time()-t0:.0f}s", flush=True)
    if (step + 1) % a.eval_every == 0:
        evaluate(step + 1)
model.save(a.out)
print("saved", a.out, f"{time.time()-t0:.0f}s")
