"""Scratch (session 21): the CFG sweep's judge rows of `python -m suite diagnose`
(suite.judge_diagnostics: Spearman of the MuLan-style score vs the oracle's adherence, of the
preference score vs the oracle's quality, and of E's diversity vs the oracle's musical
diversity across the six conditions) at more seeds, without the CFG-position rows, and the
E row for other embedders on the same generations.
Usage: more_seeds.py SPLIT SEEDS [EXTRA_E_MODEL_PT ...]   e.g. more_seeds.py test 3,4,5
Prints one line per seed and writes /tmp/s21/judges_{split}_{seed}.json."""
import json, sys, torch
from pathlib import Path
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite import judge_diagnostics as J
from suite.metrics.functional import pairwise_diversity_per_group
from suite.models.preference import PreferenceModel
from suite.models.scorer import MuLanScorer
from suite.models.vit import AudioEmbedder
from suite.music.prompts import load_prompt_records, prompt_set
from suite.policies.music import MusicPolicy

split, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
extra_paths = sys.argv[3:]
art = Path("/work/main/artifacts")
world = MusicPolicy.from_spec(str(art / "base_lm-9f34ecb56fe5/model.pt"))
E = AudioEmbedder.from_checkpoint(art / "embedder-83f0a752d99d/model.pt").eval()
extras = [AudioEmbedder.from_checkpoint(p).eval() for p in extra_paths]
scorer = MuLanScorer.from_checkpoint(art / "scorer-bf8bddcc6a22/model.pt").eval()
pref = PreferenceModel.from_checkpoint(art / "preference-b66d380c7f56/model.pt").eval()
prompts = [r["prompt"] for r in load_prompt_records(prompt_set(split, "/work/main"))]

extra_div: list[list[float]] = []
inner = J.embed_audio
def embed_all(embedder, audio):  # noqa: E306  one call per condition: also the extra E's diversity
    main = inner(embedder, audio)
    extra_div.append([float(pairwise_diversity_per_group(inner(x, audio).view(len(prompts), -1, main.shape[-1])).mean())
                      for x in extras])
    return main
J.embed_audio = embed_all
Path("/tmp/s21").mkdir(exist_ok=True)
for s in seeds:
    extra_div.clear()
    sweep = J.sweep_measurements(world, E, scorer, pref, prompts, "Bad audio quality.", n=4, seed=s)
    rows = {r["name"]: r["value"] for r in J.judge_rows(sweep)}
    o = [v["oracle_diversity"] for v in sweep.values()]
    out = {k: rows[k] for k in ("spearman_mulan_vs_oracle_adherence", "spearman_preference_vs_oracle_quality",
                                "spearman_E_vs_oracle_diversity_cfg_sweep")}
    out["oracle_diversity"] = o
    out["E_diversity"] = [v["E_diversity"] for v in sweep.values()]
    for i, p in enumerate(extra_paths):
        d = [c[i] for c in extra_div]
        out[f"E_diversity[{p}]"] = d
        out[f"spearman_E_vs_oracle[{p}]"] = float(spearmanr(d, o).statistic)
    Path(f"/tmp/s21/judges_{split}_{s}.json").write_text(json.dumps(out, indent=1))
    print(split, s, json.dumps({k: (round(v, 4) if isinstance(v, float) else [round(x, 3) for x in v]) for k, v in out.items()}), flush=True)
