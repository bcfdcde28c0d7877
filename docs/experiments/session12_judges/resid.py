import sys, torch, numpy as np
from scipy.stats import spearmanr
sys.path.insert(0, "/work/main"); torch.set_num_threads(1)
from suite.models.preference import PreferenceModel
ev = torch.load("/tmp/exp/eval.pt"); audio = torch.load("/tmp/exp/eval_audio.pt")
F = np.load("/tmp/exp/eval_flaws.npy"); names = ["out_of_key","timing","detune","dropout","recording"]
q = ev["quality"].numpy()
for path in sys.argv[1:]:
    m = PreferenceModel.from_checkpoint(path).eval()
    with torch.no_grad():
        s = torch.cat([m.score(audio[i:i+128]) for i in range(0, len(audio), 128)]).numpy()
    print(path, f"q {spearmanr(s,q).statistic:.3f}", " ".join(f"{n} {spearmanr(s,-F[:,k]).statistic:.3f}" for k,n in enumerate(names)))
print("oracle q", " ".join(f"{n} {spearmanr(q,-F[:,k]).statistic:.3f}" for k,n in enumerate(names)))
