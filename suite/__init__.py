"""Diversity-rewarded CFG distillation suite (Cideron et al., 2024).

`suite` holds the core library (music world, models, sampling, objectives, merging,
metrics) and the command-line entry point `python -m suite`. The core modules know
nothing of Lightning or Hydra; see DESIGN.md section 2.
"""

__version__ = "0.1.0"
