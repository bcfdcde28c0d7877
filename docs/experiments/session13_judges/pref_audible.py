"""A preference model's Spearman (validation generations, seed 0) with the scattered wrong
notes only (out-of-key share against the best-fitting key) and with the 'audible' oracle
quality (ook_kind.py), next to the pooled oracle quality. Args: preference model.pt paths."""
import runpy, sys
import numpy as np
import torch
from scipy.stats import spearmanr
argv, sys.argv = sys.argv[1:], sys.argv[:1]
g = runpy.run_path(__file__.replace("pref_audible.py", "ook_kind.py"))
from suite.models.preference import PreferenceModel
audio = torch.load("/tmp/exp/eval_audio.pt")
for path in argv:
    m = PreferenceModel.from_checkpoint(path).eval()
    with torch.no_grad():
        s = torch.cat([m.score(audio[i:i + 128]) for i in range(0, len(audio), 128)]).numpy()
    print(path, f"quality {spearmanr(s, g['q']).statistic:.3f} audible quality {spearmanr(s, g['audible']).statistic:.3f}",
          f"-ook(header key) {spearmanr(s, -g['ook']).statistic:.3f} -ook(best key) {spearmanr(s, -g['best']).statistic:.3f}")
print(f"oracle quality: -ook(header key) {spearmanr(g['q'], -g['ook']).statistic:.3f} -ook(best key) {spearmanr(g['q'], -g['best']).statistic:.3f}")
