"""torchmetrics metrics of the paper's evaluation (section 3.1, appendices C, D.4, E, F, G).

- `PairwiseDiversity`: mean `1 - cos` among each prompt's generations (figure 2).
- `VendiScore`: Friedman and Dieng's Vendi score of each prompt's generations (D.4).
- `FrechetAudioDistance`: FAD between reference and generated embeddings (G), + `fad_inf`.
- `WinRate`: side-by-side win rate with t-test, Wilcoxon and sign-test p-values (E).
- `MuLanScore`, `QualityScore`: text adherence and `omega * MuLan + preference` (3.1).
- `TokenEntropy`: mean entropy per generated token.

Stateless formulas are in `suite.metrics.functional`. None of this imports Lightning.
"""

from suite.metrics.diversity import PairwiseDiversity
from suite.metrics.entropy import TokenEntropy
from suite.metrics.fad import FadInf, FrechetAudioDistance
from suite.metrics.scores import MuLanScore, QualityScore
from suite.metrics.vendi import VendiScore
from suite.metrics.winrate import WinRate

__all__ = [
    "FadInf",
    "FrechetAudioDistance",
    "MuLanScore",
    "PairwiseDiversity",
    "QualityScore",
    "TokenEntropy",
    "VendiScore",
    "WinRate",
]
