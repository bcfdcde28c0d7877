"""Scratch (session 19): what moves the oracle's musical diversity across the CFG sweep,
where E's and the oracle's rankings disagree (diagnostics row
spearman_E_vs_oracle_diversity_cfg_sweep). The diagnostics' sweep on the validation
prompts (base model, 6 conditions x 96 prompts x 4, as `python -m suite diagnose` draws it;
sweep_cache.py of session19_scorer caches it);
per condition the mean within-prompt pair value of each term of `oracle.distance` (header
0.3, melody 0.3, harmony 0.15, bass 0.1, drums 0.15), E's diversity, oracle quality and
the flaw rates. Usage: decompose.py SPLIT SEEDS."""
import sys, itertools, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(2)
from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.oracle_distance import _interval_hist, _onsets
from suite.music.oracle_features import features, jaccard
from suite.music.oracle import distance, judge

split, seeds = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
n = 4
def terms(a, b):
    fa, fb = features(a), features(b)
    ha, hb = fa.decoded.attrs, fb.decoded.attrs
    fifths = (7 * (A.KEYS.index(ha["key"]) - A.KEYS.index(hb["key"]))) % 12
    head = {"genre": ha["genre"] != hb["genre"], "mood": ha["mood"] != hb["mood"],
            "tempo": abs(A.TEMPO_NAMES.index(ha["tempo"]) - A.TEMPO_NAMES.index(hb["tempo"])) / 5,
            "key": min(fifths, 12 - fifths) / 6, "mode": ha["mode"] != hb["mode"],
            "instr": np.mean([ha[k] != hb[k] for k in ("lead", "chords", "bass")]), "drumstyle": ha["drums"] != hb["drums"]}
    mel_iv = 0.5 * np.abs(_interval_hist(fa.melody_notes) - _interval_hist(fb.melody_notes)).sum()
    mel_on = 1.0 - jaccard(_onsets(fa.melody_notes), _onsets(fb.melody_notes))
    bass = 1.0 - jaccard(_onsets(fa.bass_notes), _onsets(fb.bass_notes))
    def harmony(f, attrs):
        tonic = A.KEYS.index(attrs["key"]); out = []
        for slot in range(4):
            code = next((c for s, e, c in f.chord_spans if s <= slot * 8 < e), None)
            out.append((-1, -1) if code is None else ((code // len(T.CHORD_QUALITIES) - tonic) % 12, code % len(T.CHORD_QUALITIES)))
        return out
    harm = np.mean([x != y for x, y in zip(harmony(fa, ha), harmony(fb, hb))])
    da, db = np.array(fa.decoded.drums), np.array(fb.decoded.drums)
    bits = lambda x: (x[:, None] >> np.arange(len(A.DRUM_PARTS))) & 1
    drums = float(np.mean(bits(da) != bits(db)))
    return {"harmony": harm, "drum_parts": drums, **{f"h_{k}": float(v) for k, v in head.items()}, "mel_intervals": mel_iv, "mel_onsets": mel_on,
            "bass_onsets": bass, "total": distance(a, b)}

COLS = ["h_genre", "h_mood", "h_tempo", "h_key", "h_mode", "h_instr", "h_drumstyle", "mel_intervals",
        "mel_onsets", "bass_onsets", "harmony", "drum_parts"]
for seed in seeds:
    S = torch.load(f"/tmp/s19/sweep_{split}_{seed}.pt")
    P = len(S["prompts"])
    print(f"{split} seed {seed}")
    print("condition        E_div  o_div  " + " ".join(f"{k[:9]:>9s}" for k in COLS) + "  quality out_of_key timing detune dropout recording", flush=True)
    for c, name in enumerate(S["conditions"]):
        block = slice(c * P * n, (c + 1) * P * n)
        emb = S["E"][block].view(P, n, -1)
        sims = emb @ emb.transpose(1, 2)
        e_div = float((1 - sims[:, ~torch.eye(n, dtype=torch.bool)]).mean())
        rows = S["tokens"][block].numpy().reshape(P, n, -1)
        acc = {}
        for g in rows:
            for i, j in itertools.combinations(range(n), 2):
                for k, v in terms(g[i], g[j]).items():
                    acc.setdefault(k, []).append(v)
        js = [judge(r) for r in rows.reshape(-1, rows.shape[-1])]
        fl = {k: np.mean([j.flaws[k] for j in js]) for k in ("out_of_key", "timing", "detune", "dropout", "recording")}
        q = np.mean([j.quality for j in js])
        print(f"{name:16s} {e_div:.3f}  {np.mean(acc['total']):.3f}  " + " ".join(f"{np.mean(acc[k]):9.3f}" for k in COLS)
              + f"  {q:.3f} " + " ".join(f"{fl[k]:.3f}" for k in fl), flush=True)
