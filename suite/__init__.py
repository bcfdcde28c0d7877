"""Diversity-rewarded CFG distillation suite (Cideron et al., 2024).

`suite` holds the core library (the policy interface `suite.policies`, the rollout and
sampler, objectives, merging, metrics, models and the embedded music world) and the
command-line entry point `python -m suite`. The core modules know
nothing of Lightning or Hydra; see DESIGN.md section 2.
"""

__version__ = "0.1.0"
