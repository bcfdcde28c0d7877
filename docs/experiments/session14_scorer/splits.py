"""Scratch (session 14): the scorer's Spearman with the oracle's adherence per prompt split
of the validation prompts (unseen combination / unseen phrasing / free-form)."""
import sys, json, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.music.oracle import judge_batch
from suite.models.scorer import MuLanScorer
from suite.music.prompts import load_prompt_records, prompt_set
split = {r["prompt"]: r["split"] for r in load_prompt_records(prompt_set("validation", "/work/main"))}
ev = torch.load("/tmp/exp/eval.pt"); audio = torch.load("/tmp/exp/eval_audio.pt")
m = MuLanScorer.from_checkpoint(sys.argv[1]).eval()
with torch.no_grad():
    s = torch.cat([m.score(audio[i:i + 64], ev["prompt"][i:i + 64]) for i in range(0, len(audio), 64)]).numpy()
a = np.array([j.adherence_mean if j.adherence else np.nan for j in judge_batch(ev["tokens"], ev["prompt"])])
sp = np.array([split[p] for p in ev["prompt"]])
for name in ("unseen_combination", "unseen_phrasing", "freeform"):
    k = (sp == name) & np.isfinite(a)
    print(f"{name:20s} n={k.sum():4d}  Spearman {spearmanr(s[k], a[k]).statistic:.3f}  adherence mean {a[k].mean():.3f} std {a[k].std():.3f}")
