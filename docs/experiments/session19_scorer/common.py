"""Scratch (session 19): what the session-19 scripts share: a cached sweep
(sweep_cache.py's file), a per-attribute softmax fitted by L-BFGS, and the Spearman of a
score with the oracle's adherence pooled / between prompts (prompt means) / within prompts
(both centred on their prompt's mean), over the generations whose adherence is known."""
import numpy as np
import torch
from scipy.stats import spearmanr

CACHE = "/tmp/s19"
NAMES = ["genre", "mood", "tempo", "key", "mode", "lead", "chords", "bass", "drums"]


def load_sweep(split: str, seed: int) -> dict:
    """sweep_cache.py's draw, plus `rows`: each generation's prompt, in the cached order."""
    S = torch.load(f"{CACHE}/sweep_{split}_{seed}.pt")
    S["rows"] = np.array([p for p in S["prompts"] for _ in range(4)] * len(S["conditions"]))
    return S


def fit_softmax(x: torch.Tensor, y: torch.Tensor, k: int, steps: int = 300, l2: float = 1e-4):
    """Multinomial logistic regression `x [N, D] -> k` classes: (w [D, k], b [k])."""
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def reading(tp: dict, audio_heads: dict, feats: torch.Tensor, pidx) -> np.ndarray:
    """f per generation: sum_a sum_v t_a(v) p_a(v) / sum_a (1 - t_a(none)), from the
    prompts' text distributions `tp[a] [P, V+1]` (last = not named), the audio heads
    `(w, b)` per attribute on standardised features `[G, D]` and each generation's prompt."""
    num = sum((tp[a][pidx, :-1] * torch.softmax(feats @ w + b, 1)).sum(1) for a, (w, b) in audio_heads.items())
    den = sum(1 - tp[a][pidx, -1] for a in audio_heads)
    return (num / den.clamp_min(1e-3)).numpy()


def spearman_parts(score, adherence, rows) -> tuple[float, float, float]:
    """(pooled, between, within) Spearman over the entries where both are finite."""
    score, adherence, rows = np.asarray(score), np.asarray(adherence), np.asarray(rows)
    known = np.isfinite(score) & np.isfinite(adherence)
    s, y = score[known], adherence[known]
    _, inv = np.unique(rows[known], return_inverse=True)
    mean = lambda x: np.bincount(inv, x) / np.bincount(inv)  # noqa: E731
    return (spearmanr(s, y).statistic, spearmanr(mean(s), mean(y)).statistic,
            spearmanr(s - mean(s)[inv], y - mean(y)[inv]).statistic)


def report(label: str, score, adherence, rows) -> tuple[float, float, float]:
    r = spearman_parts(score, adherence, rows)
    print(f"{label}: pooled {r[0]:.3f} between {r[1]:.3f} within {r[2]:.3f}", flush=True)
    return r
