"""One LightningModule per job of the suite (DESIGN.md section 2).

- `pretrain.PretrainLM`: the music world's base TokenLM theta_init (next-token CE).
- `embedder.EmbedderJob`, `scorer.ScorerJob`, `preference.PreferenceJob`: the audio
  judges (E of the diversity reward, the MuLan-style scorer, the preference model).
- `policy_job.PolicyJob`: the base of the two jobs that hold a generator behind
  `suite.policies.Policy`: `student.DistillStudent` (eq. 5) and
  `merged_eval.MergedEvaluator` (eq. 6 merges and the CFG / temperature baselines).
- `artifacts`: builds the cached artifacts on demand; `tracking`: the jobs' one way into
  MLflow; `checks`: argument checks; `callbacks`: the finite-loss guard.

Jobs take typed plain arguments; only `suite.run` and `conf/` know Hydra.
"""
