"""Scratch (session 14): how much of the oracle's adherence an audio-only judge can hear.

Audible adherence: per named attribute, what the rendered audio carries: genre, key, mode,
drums as the CONTENT shows them (full credit instead of half header + half content), mood
from the content's mode family and register, tempo / lead / bass / chords from the header
(the renderer plays them), quality words as the oracle. Prints its Spearman with the
oracle's adherence (the ceiling for an audio judge) and each attribute's share of the
adherence's variance. Reads /tmp/exp/eval.pt (gen_sets.py eval)."""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
from scipy.stats import spearmanr
from suite.music import attributes as A
from suite.music.oracle import judge, recognise, parse_prompt, features
from suite.music.oracle_features import _mean_melody_pitch
from suite.music import composer as C

SET = sys.argv[1] if len(sys.argv) > 1 else "eval"
ev = torch.load(f"/tmp/exp/{SET}.pt")
tok = ev["tokens"].numpy()
adh, aud, per = [], [], {}
for row, p in zip(tok, ev["prompt"]):
    attrs = parse_prompt(p)
    j = judge(row, attrs)
    if not j.adherence:
        continue
    seen = recognise(row)
    f = features(row)
    a = {}
    for name, value in attrs.items():
        if name == "quality":
            a[name] = j.adherence[name]
        elif name in ("genre", "key", "mode", "drums"):
            a[name] = float(seen[name] == value)
        elif name == "mood":
            fam = float(C.MOOD_FAMILY[value] == ("major" if seen["mode"] in A.MAJOR_FAMILY else "minor"))
            m = _mean_melody_pitch(f)
            reg = 0.0 if m is None else max(0.0, 1 - abs(m - C.MOOD_REGISTER[value]) / 12)
            a[name] = 0.5 * fam + 0.5 * reg
        else:
            a[name] = j.adherence[name]
    adh.append(j.adherence_mean)
    aud.append(np.mean(list(a.values())))
    for name, v in j.adherence.items():
        per.setdefault(name, []).append(v)
adh, aud = np.array(adh), np.array(aud)
print(f"{len(adh)} generations; Spearman(audible adherence, oracle adherence) = {spearmanr(aud, adh).statistic:.3f}")
print("mean adherence per attribute (n):", {k: (round(float(np.mean(v)), 3), len(v)) for k, v in per.items()})
print("std per attribute:", {k: round(float(np.std(v)), 3) for k, v in per.items()})

if len(sys.argv) > 2:  # a scorer: its agreement with the oracle's and with the audible adherence
    from suite.models.scorer import MuLanScorer
    torch.set_num_threads(1)
    audio = torch.load(f"/tmp/exp/{SET}_audio.pt")
    m = MuLanScorer.from_checkpoint(sys.argv[2]).eval()
    with torch.no_grad():
        s = torch.cat([m.score(audio[i:i + 64], ev["prompt"][i:i + 64]) for i in range(0, len(audio), 64)]).numpy()
    named = np.array([bool({k for k in parse_prompt(p)}) for p in ev["prompt"]])
    s, p = s[named], np.array(ev["prompt"])[named]
    _, inv = np.unique(p, return_inverse=True)
    def parts(x, y):
        xm, ym = np.bincount(inv, x) / np.bincount(inv), np.bincount(inv, y) / np.bincount(inv)
        return (spearmanr(x, y).statistic, spearmanr(xm, ym).statistic, spearmanr(x - xm[inv], y - ym[inv]).statistic)
    print("scorer vs oracle adherence  pooled/between/within: %.3f %.3f %.3f" % parts(s, adh))
    print("scorer vs audible adherence pooled/between/within: %.3f %.3f %.3f" % parts(s, aud))
    print("audible vs oracle adherence pooled/between/within: %.3f %.3f %.3f" % parts(aud, adh))
    q = ev["quality"].numpy()[named]
    print("scorer vs oracle quality    pooled/between/within: %.3f %.3f %.3f" % parts(s, q))
    print("oracle adherence vs quality pooled/between/within: %.3f %.3f %.3f" % parts(adh, q))
