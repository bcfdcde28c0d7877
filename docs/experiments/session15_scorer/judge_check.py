"""Scratch (session 15): the diagnostics' scorer row, `spearman_mulan_vs_oracle_adherence`,
for several scorer files side by side on the same generations: the CFG sweep of
`suite.judge_diagnostics.sweep_measurements` (base model, 6 conditions x prompts x 4, the
same seed for every condition, as `python -m suite diagnose` draws it), the oracle's
adherence per generation, each scorer's cosine; per seed the pooled Spearman (what diagnose
reports) and the between / within-prompt ones; then the mean and 95 % t-interval over seeds.
Usage: judge_check.py SPLIT SEEDS SCORER... (SPLIT: validation | eval (the test prompts);
SEEDS: 0,1,2). One torch thread."""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer
from suite.music.prompts import load_prompt_records, prompt_set
from suite.policies.music import MusicPolicy
from suite.report_tables import mean_interval
from suite.rollout import policy_audio
from suite.world_diagnostics import sample_cfg_at

split, seeds, paths = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3:]
world = MusicPolicy.from_spec("/work/main/artifacts/base_lm-9f34ecb56fe5/model.pt", use_grammar_mask=True)
scorers = [MuLanScorer.from_checkpoint(p).eval() for p in paths]
prompts = [r["prompt"] for r in load_prompt_records(prompt_set(split, "/work/main"))]
n = 4
rows = [p for p in prompts for _ in range(n)]
cond = world.encode_text(prompts).repeat_interleave(n)
every = torch.ones(world.seq_len, dtype=torch.bool)
results = {p: [] for p in paths}
for seed in seeds:
    adh, scores = [], {p: [] for p in paths}
    for name, use_negative, gamma in SWEEP:
        neg = world.encode_text(["Bad audio quality." if use_negative else ""])
        with torch.no_grad():
            tokens = sample_cfg_at(world, cond, neg, gamma, every, 0.99, seed)
            judged = world.oracle.scores(tokens.view(len(prompts), n, *tokens.shape[1:]), prompts)
            audio = policy_audio(world, tokens)
            for p, s in zip(paths, scorers):
                scores[p].append(torch.cat([s.score(audio[i:i + 64], rows[i:i + 64]) for i in range(0, len(rows), 64)]).numpy())
        adh.append(judged["adherence"].reshape(-1).numpy())
    adh = np.concatenate(adh)
    known = np.isfinite(adh)
    _, inv = np.unique(np.array(rows * len(SWEEP))[known], return_inverse=True)
    mean = lambda x: np.bincount(inv, x) / np.bincount(inv)
    for p in paths:
        s, y = np.concatenate(scores[p])[known], adh[known]
        pooled = spearmanr(s, y).statistic
        results[p].append(pooled)
        print(f"{split} seed {seed} {p}: pooled {pooled:.3f} between {spearmanr(mean(s), mean(y)).statistic:.3f} "
              f"within {spearmanr(s - mean(s)[inv], y - mean(y)[inv]).statistic:.3f}", flush=True)
for p in paths:
    m, lo, hi = mean_interval(results[p], 0.95)
    print(f"{split} {p}: {m:.3f} [{lo:.3f}, {hi:.3f}] over seeds {seeds}", flush=True)
