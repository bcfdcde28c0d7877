"""Scratch (session 14): does the scorer's AUDIO embedding carry each attribute?

Linear probes (multinomial logistic regression, 5-fold by prompt) on the committed scorer's
audio embeddings of the validation generations, predicting what the audio carries: tempo,
lead, chords, bass (header, rendered) and genre, key, mode, drums (as the content shows
them). Next to each: the zero-shot accuracy of the scorer itself (the value whose one-line
caption has the highest cosine) and the majority-class rate. Reads /tmp/exp/eval.pt and
eval_audio.pt (docs/experiments/session12_judges/eval_judges.py writes the audio)."""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from suite.music.oracle import recognise
from suite.models.scorer import MuLanScorer
from suite.models.text_tower import default_tower

path = sys.argv[1]
ev = torch.load("/tmp/exp/eval.pt"); audio = torch.load("/tmp/exp/eval_audio.pt")
m = MuLanScorer.from_checkpoint(path).eval()
with torch.no_grad():
    emb = torch.cat([m.embed_audio(audio[i:i + 64]) for i in range(0, len(audio), 64)])
seen = [recognise(r) for r in ev["tokens"].numpy()]
prompts = np.array(ev["prompt"]); u, group = np.unique(prompts, return_inverse=True)
fold = group % 5
tower = default_tower()
words = {"tempo": "{} tempo", "lead": "music led by {}", "chords": "with {} chords",
         "bass": "over {} bass", "genre": "a {} piece", "key": "in {}", "mode": "in {} mode",
         "drums": "with {} drums"}
heard = {}
for name, frame in words.items():
    y_str = np.array([s[name] for s in seen]); vals = sorted(set(y_str))
    y = torch.tensor([vals.index(v) for v in y_str])
    correct, pred = 0, torch.zeros(len(y), dtype=torch.long)
    for k in range(5):
        tr, te = torch.tensor(fold != k), torch.tensor(fold == k)
        w = torch.zeros(emb.shape[1], len(vals), requires_grad=True); b = torch.zeros(len(vals), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200)
        def closure():
            opt.zero_grad(); loss = torch.nn.functional.cross_entropy(emb[tr] @ w + b, y[tr]) + 1e-3 * w.pow(2).sum(); loss.backward(); return loss
        opt.step(closure)
        pred[te] = (emb[te] @ w + b).argmax(1)
        correct += int((pred[te] == y[te]).sum())
    with torch.no_grad():
        t = m.embed_text(tower.encode([frame.format(v) for v in vals]))
        zs = float(((emb @ t.T).argmax(1) == y).float().mean())
    major = float(np.bincount(y.numpy()).max() / len(y))
    heard[name] = [vals[i] for i in pred.tolist()]
    print(f"{name:7s} values {len(vals):2d}  probe {correct / len(y):.3f}  zero-shot {zs:.3f}  majority {major:.3f}")

# Adherence as the probes hear it (attributes other than mood and quality), against the
# oracle's adherence on the same attributes: the ceiling of this audio embedding if the
# text side matched it perfectly.
from scipy.stats import spearmanr
from suite.music.oracle import judge, parse_prompt
probe_adh, oracle_adh, rows = [], [], []
for i, (row, p) in enumerate(zip(ev["tokens"].numpy(), ev["prompt"])):
    attrs = {k: v for k, v in parse_prompt(p).items() if k in words}
    if not attrs:
        continue
    j = judge(row, attrs)
    oracle_adh.append(j.adherence_mean)
    probe_adh.append(np.mean([heard[k][i] == v for k, v in attrs.items()]))
    rows.append(i)
probe_adh, oracle_adh = np.array(probe_adh), np.array(oracle_adh)
_, inv = np.unique(prompts[rows], return_inverse=True)
mean = lambda x: (np.bincount(inv, x) / np.bincount(inv))
print("probe-heard vs oracle adherence (no mood), pooled / between / within: %.3f %.3f %.3f" % (
    spearmanr(probe_adh, oracle_adh).statistic, spearmanr(mean(probe_adh), mean(oracle_adh)).statistic,
    spearmanr(probe_adh - mean(probe_adh)[inv], oracle_adh - mean(oracle_adh)[inv]).statistic))
