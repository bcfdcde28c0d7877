"""Scratch (session 16): what the MuLan-style scorer's cosine follows WITHIN a prompt.
On the CFG sweep of `python -m suite diagnose` (validation prompts, one seed), per
generation: each scorer's cosine, the oracle's adherence (mean and per attribute) and its
quality. Prints the within-prompt Spearman (prompt means removed) of the cosine with each,
and the share of within-prompt adherence variance each attribute carries.
Usage: within.py SEED SCORER... (one torch thread)."""
import sys, torch, numpy as np
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from scipy.stats import spearmanr
from suite.judge_diagnostics import SWEEP
from suite.models.scorer import MuLanScorer
from suite.music import oracle
from suite.music.prompts import load_prompt_records, prompt_set
from suite.policies.music import MusicPolicy
from suite.rollout import policy_audio
from suite.world_diagnostics import sample_cfg_at

seed, paths = int(sys.argv[1]), sys.argv[2:]
world = MusicPolicy.from_spec("/work/main/artifacts/base_lm-9f34ecb56fe5/model.pt", use_grammar_mask=True)
scorers = [MuLanScorer.from_checkpoint(p).eval() for p in paths]
prompts = [r["prompt"] for r in load_prompt_records(prompt_set("validation", "/work/main"))]
n = 4
rows = [p for p in prompts for _ in range(n)]
attrs = [oracle.parse_prompt(p) for p in rows]
cond = world.encode_text(prompts).repeat_interleave(n)
every = torch.ones(world.seq_len, dtype=torch.bool)
cos = {p: [] for p in paths}
per_attr, quality, adherence, group = [], [], [], []
for c, (name, use_negative, gamma) in enumerate(SWEEP):
    neg = world.encode_text(["Bad audio quality." if use_negative else ""])
    with torch.no_grad():
        tokens = sample_cfg_at(world, cond, neg, gamma, every, 0.99, seed)
        judged = oracle.judge_batch(tokens.reshape(len(rows), -1), attrs)
        audio = policy_audio(world, tokens)
        for p, s in zip(paths, scorers):
            cos[p].append(torch.cat([s.score(audio[i:i + 64], rows[i:i + 64]) for i in range(0, len(rows), 64)]).numpy())
    for i, j in enumerate(judged):
        per_attr.append(j.adherence)
        quality.append(j.quality)
        adherence.append(j.adherence_mean if j.adherence else np.nan)
        group.append(c * len(prompts) + i // n)  # one group per (condition, prompt)
quality, adherence, group = map(np.array, (quality, adherence, group))
known = np.isfinite(adherence)
_, inv = np.unique(group[known], return_inverse=True)


def within(x):
    x = np.asarray(x, dtype=float)[known]
    return x - (np.bincount(inv, x) / np.bincount(inv))[inv]


y = within(adherence)
names = sorted({k for a in per_attr for k in a})
print(f"seed {seed}: {known.sum()} generations, within-prompt adherence variance {y.var():.4f}")
for k in names:
    has = np.array([k in a for a in per_attr])[known]
    v = within([a.get(k, 0.0) for a in per_attr])
    print(f"  attribute {k:8s}: named in {has.mean():.2f} of generations; within-prompt variance "
          f"{v[has].var():.4f}; corr with within-adherence {np.corrcoef(v, y)[0, 1]:.3f}")
for p in paths:
    s = within(np.concatenate(cos[p]))
    print(f"{p}\n  within: cos~adherence {spearmanr(s, y).statistic:.3f}  cos~quality {spearmanr(s, within(quality)).statistic:.3f}")
    for k in names:
        has = np.array([k in a for a in per_attr])[known]
        v = within([a.get(k, 0.0) for a in per_attr])
        if v[has].var() > 0:
            print(f"    cos~{k:8s} {spearmanr(s[has], v[has]).statistic:.3f} (n {has.sum()})")
