import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.music.oracle_judge import judge_batch
from suite.models.scorer import MuLanScorer
ev = torch.load("/tmp/exp/eval.pt"); audio = torch.load("/tmp/exp/eval_audio.pt")
m = MuLanScorer.from_checkpoint(sys.argv[1]).eval()
with torch.no_grad():
    s = torch.cat([m.score(audio[i:i+64], ev["prompt"][i:i+64]) for i in range(0, len(audio), 64)]).float().numpy()
js = judge_batch(ev["tokens"], ev["prompt"])
a = np.array([j.adherence_mean if j.adherence else np.nan for j in js]); p = np.array(ev["prompt"])
k = np.isfinite(a); a, s, p = a[k], s[k], p[k]
u, inv = np.unique(p, return_inverse=True)
am = np.array([a[inv == i].mean() for i in range(len(u))]); sm = np.array([s[inv == i].mean() for i in range(len(u))])
print("pooled", spearmanr(s, a).statistic, "between (prompt means)", spearmanr(sm, am).statistic,
      "within-centred pooled", spearmanr(s - sm[inv], a - am[inv]).statistic)
