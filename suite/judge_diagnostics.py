"""Do the world's learned judges measure what the oracle measures? (DESIGN.md section 5)

The paper's evaluations rest on learned judges: E's diversity (eq. 3), the MuLan score for
text adherence and a user-preference model for acoustic quality (section 3.1), and on the
pattern of appendix B (negative-prompt CFG raises quality more than unconditional CFG, and
lowers diversity). On the embedded world an oracle knows the truth, so the base model
samples the held-out prompts across a CFG sweep (`SWEEP`: no CFG, negative prompt at
gamma 1.5 / 3 / 5, unconditional at gamma 3 / 5; CFG at every position, eq. 1) and this
module reports, as `{name, value, limit, verdict}` rows:

- appendix B: oracle quality at negative-prompt gamma 3 over no CFG, and over
  unconditional gamma 3; E's diversity at gamma 3 below no CFG;
- Spearman across the sweep's conditions between E's diversity (1 - mean pairwise cosine)
  and the oracle's musical diversity (mean pairwise `oracle.distance`);
- Spearman over every generation between the MuLan-style score and the oracle's
  adherence, and between the preference score and the oracle's quality;
- the omega of `quality = omega * MuLan + preference` at which both terms have the same
  spread (std of the conditions' means) across the sweep: the paper's reason for omega = 5.

(The world issue also asks for E vs oracle diversity across the beta students: that needs
trained students and is read from the evaluator's `runs.csv`, not from here.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from suite.metrics.functional import pairwise_diversity_per_group
from suite.policies.music import MusicPolicy
from suite.rollout import embed_audio, policy_audio

# (name, negative prompt? (else the null prompt ""), gamma); gamma 1 is plain conditional.
SWEEP: tuple[tuple[str, bool, float], ...] = (
    ("no_cfg", True, 1.0),
    ("negative_g1.5", True, 1.5),
    ("negative_g3", True, 3.0),
    ("negative_g5", True, 5.0),
    ("unconditional_g3", False, 3.0),
    ("unconditional_g5", False, 5.0),
)


@torch.no_grad()
def sweep_measurements(policy: MusicPolicy, embedder: nn.Module, scorer, preference: nn.Module,
                       prompts: Sequence[str], negative: str, *, n: int = 4,
                       temperature: float = 0.99, seed: int = 0) -> dict[str, dict]:  # fmt: skip
    """Per condition of `SWEEP`: oracle quality / adherence / musical diversity, E's
    diversity, and per generation the learned and oracle scores (flat numpy arrays)."""
    from suite.world_diagnostics import sample_cfg_at

    prompts = list(prompts)
    cond = policy.encode_text(prompts).repeat_interleave(n)
    out: dict[str, dict] = {}
    every = torch.ones(policy.seq_len, dtype=torch.bool)
    rows = [p for p in prompts for _ in range(n)]
    for name, use_negative, gamma in tqdm(SWEEP, desc="CFG sweep", unit="condition"):
        neg = policy.encode_text([negative if use_negative else ""])
        tokens = sample_cfg_at(policy, cond, neg, gamma, every, temperature, seed)  # [P*n, 1, L]
        grouped = tokens.view(len(prompts), n, *tokens.shape[1:])  # [P, n, 1, L]
        judged = policy.oracle.scores(grouped, prompts)
        audio = policy_audio(policy, tokens)  # [P*n, S]
        emb = embed_audio(embedder, audio).view(len(prompts), n, -1)  # [P, n, D]
        chunks = range(0, len(rows), 64)  # the scorers see 64 clips at a time
        mulan = torch.cat([scorer.score(audio[i : i + 64], rows[i : i + 64]) for i in chunks])
        pref = torch.cat([preference.eval().score(audio[i : i + 64]) for i in chunks])
        out[name] = {
            "oracle_quality": float(judged["quality"].mean()),
            "oracle_diversity": float(policy.oracle.pair_distances(grouped).mean()),
            "E_diversity": float(pairwise_diversity_per_group(emb).mean()),  # eval/diversity's
            "gen_oracle_quality": judged["quality"].reshape(-1).numpy(),
            "gen_oracle_adherence": judged["adherence"].reshape(-1).numpy(),
            "gen_mulan": mulan.float().numpy(),
            "gen_preference": pref.float().numpy(),
        }
    return out


def judge_rows(sweep: dict[str, dict]) -> list[dict]:
    """The rows of the module docstring from `sweep_measurements`' output."""
    from suite.world_diagnostics import _verdict

    q = {k: v["oracle_quality"] for k, v in sweep.items()}
    rows = [{"name": f"{what}_{k}", "value": v[what], "limit": "", "verdict": "info"}
            for what in ("oracle_quality", "E_diversity", "oracle_diversity")
            for k, v in sweep.items()]  # fmt: skip
    neg_gain = q["negative_g3"] - q["no_cfg"]
    rows.append(_verdict({"name": "appendixB_negative_g3_quality_gain", "value": neg_gain,
                          "limit": "> 0.02"}))  # fmt: skip
    rows.append(_verdict({"name": "appendixB_unconditional_g3_gain_share_of_negative",
                          "value": (q["unconditional_g3"] - q["no_cfg"]) / neg_gain if neg_gain > 1e-9 else float("nan"),
                          "limit": "<= 0.75"}))  # fmt: skip
    drop = sweep["no_cfg"]["E_diversity"] - sweep["negative_g3"]["E_diversity"]
    rows.append(_verdict({"name": "appendixB_negative_g3_E_diversity_drop", "value": drop,
                          "limit": "> 0"}))  # fmt: skip
    e = [v["E_diversity"] for v in sweep.values()]
    o = [v["oracle_diversity"] for v in sweep.values()]
    rows.append(_verdict({"name": "spearman_E_vs_oracle_diversity_cfg_sweep",
                          "value": float(spearmanr(e, o).statistic), "limit": ">= 0.7"}))  # fmt: skip

    def flat(key: str) -> np.ndarray:
        return np.concatenate([v[key] for v in sweep.values()])

    adherence, mulan = flat("gen_oracle_adherence"), flat("gen_mulan")
    known = np.isfinite(adherence)  # free-form prompts name no attribute the oracle knows
    rows.append(_verdict({"name": "spearman_mulan_vs_oracle_adherence",
                          "value": float(spearmanr(mulan[known], adherence[known]).statistic),
                          "limit": ">= 0.6"}))  # fmt: skip
    rows.append(_verdict({"name": "spearman_preference_vs_oracle_quality",
                          "value": float(spearmanr(flat("gen_preference"), flat("gen_oracle_quality")).statistic),
                          "limit": ">= 0.6"}))  # fmt: skip
    # eq. "quality = omega * MuLan + preference" (section 3.1): the omega at which both
    # terms spread equally across the sweep's conditions (the paper's reason for omega = 5)
    m = np.array([v["gen_mulan"].mean() for v in sweep.values()])
    p = np.array([v["gen_preference"].mean() for v in sweep.values()])
    rows.append({"name": "omega_equal_spread_cfg_sweep",
                 "value": float(p.std() / m.std()) if m.std() > 0 else float("nan"),
                 "limit": "", "verdict": "info"})  # fmt: skip
    return [_verdict(r) for r in rows]
