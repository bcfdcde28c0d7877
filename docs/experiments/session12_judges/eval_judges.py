"""Scratch: per-generation Spearman of judges vs the oracle on the eval set."""
import sys, torch, numpy as np
from scipy.stats import spearmanr
if __name__ == "__main__": torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
if "suite" not in sys.modules: sys.path.insert(0, "/work/main")
from suite.music.render import render
from suite.models.preference import PreferenceModel
from suite.models.scorer import MuLanScorer

def audio_of(tokens):
    return torch.cat([render(tokens[i:i+64]) for i in range(0, len(tokens), 64)])

def within(score, target, groups):
    rs = []
    for g in np.unique(groups):
        m = (groups == g) & np.isfinite(target)
        if m.sum() > 3 and np.std(target[m]) > 0:
            rs.append(spearmanr(score[m], target[m]).statistic)
    return float(np.nanmean(rs))

if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    import os; SET = os.environ.get("SET", "eval"); ev = torch.load(f"/tmp/exp/{SET}.pt")
    try:
        audio = torch.load(f"/tmp/exp/{SET}_audio.pt")
    except FileNotFoundError:
        audio = audio_of(ev["tokens"]); torch.save(audio, f"/tmp/exp/{SET}_audio.pt")
    groups = np.array([hash(p) for p in ev["prompt"]])
    with torch.no_grad():
        if kind == "preference":
            m = PreferenceModel.from_checkpoint(path).eval()
            s = torch.cat([m.score(audio[i:i+64]) for i in range(0, len(audio), 64)]).numpy()
            t = ev["quality"].numpy()
        else:
            m = MuLanScorer.from_checkpoint(path).eval()
            s = torch.cat([m.score(audio[i:i+64], ev["prompt"][i:i+64]) for i in range(0, len(audio), 64)]).float().numpy()
            t = ev["adherence"].numpy()
    k = np.isfinite(t)
    print(f"{kind} {path}: pooled spearman {spearmanr(s[k], t[k]).statistic:.3f}  within-prompt {within(s, t, groups):.3f}  n={k.sum()}")
