import sys, torch, numpy as np, collections
from scipy.stats import spearmanr
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from suite.music.oracle_judge import judge_batch
from suite.models.scorer import MuLanScorer
ev = torch.load("/tmp/exp/eval.pt"); audio = torch.load("/tmp/exp/eval_audio.pt")
path = sys.argv[1]
m = MuLanScorer.from_checkpoint(path).eval()
with torch.no_grad():
    s = torch.cat([m.score(audio[i:i+64], ev["prompt"][i:i+64]) for i in range(0, len(audio), 64)]).float().numpy()
js = judge_batch(ev["tokens"], ev["prompt"])
p = np.array(ev["prompt"])
for attr in ["genre","drums","mood","lead","chords","tempo","key","mode","bass","quality"]:
    rows = np.array([attr in j.adherence for j in js])
    a = np.array([j.adherence.get(attr, np.nan) for j in js])
    pooled = spearmanr(s[rows], a[rows]).statistic
    w = [spearmanr(s[(p==x)], a[(p==x)]).statistic for x in np.unique(p[rows]) if np.std(a[p==x])>0]
    print(f"{attr:8s} n={rows.sum():5d} pooled {pooled:.3f} within {np.nanmean(w):.3f} ({len(w)} prompts)")
