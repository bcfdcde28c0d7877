import sys, torch, numpy as np
from scipy.stats import spearmanr
sys.path.insert(0, "/work/main")
from suite.music.oracle_judge import judge_batch
ev = torch.load("/tmp/exp/eval.pt")
js = judge_batch(ev["tokens"], ev["prompt"])
q = np.array([j.quality for j in js])
for k in js[0].flaws:
    f = np.array([j.flaws[k] for j in js])
    print(f"{k:11s} mean {f.mean():.3f} std {f.std():.3f} spearman(-flaw, q) {spearmanr(-f, q).statistic:.3f}")
np.save("/tmp/exp/eval_flaws.npy", np.array([[j.flaws[k] for k in js[0].flaws] for j in js]))
