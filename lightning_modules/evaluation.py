"""Generation and evaluation helpers shared by the student and the merged evaluator.

Paper section 3.1 evaluates a policy by generating N pieces per held-out prompt and
measuring quality (`omega * MuLan + user preference`, omega = 5), pairwise diversity
(mean `1 - cos` of the embedder E's embeddings of a prompt's generations, figure 2),
Vendi (appendix D.4), the KL to the CFG teacher (eq. 2, figure 2 left) and entropy per
token; the embedded world adds the oracle judge's quality and prompt adherence
(DESIGN.md section 5). Everything here is plain functions and one `nn.Module` of
torchmetrics (no Lightning), taking models and prompts and returning tensors, so that a
caller can evaluate the student (plain sampling), the CFG teacher (gamma, negative
condition), a temperature baseline or a merged model with the same code:

    tokens, logits = generate(model, cond, n, temperature=T, gamma=g, neg_cond=neg, allowed=mask)
    audio = render_audio(tokens)                      # [P, N, S]
    emb = embed_audio(embedder, audio)                # [P, N, D]
    metrics.update(tokens, prompts, audio, emb, logits=logits, temperature=T, kl=kl)
    metrics.compute()                                 # {"eval/quality": ..., ...}

Audio length and the embedder. Pieces render to `AUDIO_SAMPLES` = 6 s while E reads
fixed clips (3 s for the tiny E, the paper's 4 s for the paper preset). We feed E the whole
piece and let its own clip rule (`suite.models.vit.split_clips`) decide: 6 s becomes the
clips [0, 3) s and [3, 6) s (or [0, 4) s and [2, 6) s at 4 s) whose features are averaged
before E's projection and normalisation. The training reward
(`lightning_modules.student`) and every evaluation call this same `embed_audio`, so the
diversity that is rewarded is exactly the diversity that is measured, and no second of the
piece is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from suite.metrics import PairwiseDiversity, TokenEntropy, VendiScore
from suite.metrics._base import MeanOfValues
from suite.metrics.entropy import token_entropy
from suite.metrics.scores import MuLanScore, QualityScore
from suite.music import oracle
from suite.music.render import SAMPLE_RATE, render
from suite.objectives import token_kl
from suite.sampling import mask_logits, sample, score

log = logging.getLogger(__name__)

__all__ = [
    "EvalMetrics",
    "MeanValue",
    "embed_audio",
    "frozen",
    "generate",
    "load_audio_judge",
    "one_minus_mean",
    "oracle_scores",
    "policy_entropy",
    "render_audio",
    "save_samples",
    "sequence_log_probs",
    "teacher_logits",
]


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(module: nn.Module | None):
    """Run `module` in eval mode under no_grad, restoring its previous mode afterwards."""
    if module is None:
        with torch.no_grad():
            yield
        return
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _flat(x: torch.Tensor, keep: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Merge the leading dims of x so that `keep` trailing dims remain; return the lead shape."""
    lead = tuple(x.shape[: x.dim() - keep])
    return x.reshape(-1, *x.shape[x.dim() - keep :]), lead


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def generate(
    model: nn.Module,
    cond: torch.Tensor,
    n: int,
    *,
    temperature: float = 1.0,
    gamma: float = 1.0,
    neg_cond: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample n generations per prompt: cond `[P, C]` -> tokens `[P, n, L]`.

    Plain sampling at temperature T with gamma = 1 (the student, a merged model, a
    temperature baseline); CFG (eq. 1) with gamma != 1 and `neg_cond` (`[C]`, `[1, C]` or
    `[P, C]`; zeros = the unconditional prompt) for the teacher baseline. No top-k / top-p:
    samples come from the policy itself (section 3.1). The model's train/eval mode is
    restored by `suite.sampling.sample`.

    Returns `(tokens [P, n, L], logits [P, n, L, V] or None)`: logits are those of the
    sampling policy (CFG-combined and grammar-masked, before temperature).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"generate: n (generations per prompt) must be an int >= 1, got {n!r}")
    if not isinstance(cond, torch.Tensor) or cond.dim() != 2:
        raise ValueError(
            f"generate: cond must be a tensor [P, C], got {getattr(cond, 'shape', cond)}"
        )
    prompts = cond.shape[0]
    rows = cond.repeat_interleave(n, dim=0)  # [P*n, C], prompt-major: rows of a prompt adjacent
    if neg_cond is not None and neg_cond.dim() == 2 and neg_cond.shape[0] == prompts > 1:
        neg_cond = neg_cond.repeat_interleave(n, dim=0)  # [P*n, C]
    if gamma == 1.0:
        neg_cond = None  # CFG at gamma 1 is the conditional policy: skip the negative rows
    out = sample(
        model,
        rows,
        neg_cond=neg_cond,
        gamma=gamma,
        temperature=temperature,
        allowed=allowed,
        generator=generator,
        return_logits=return_logits,
    )
    tokens = out.tokens.view(prompts, n, -1)  # [P, n, L]
    logits = None if out.logits is None else out.logits.view(prompts, n, *out.logits.shape[1:])
    return tokens, logits


def teacher_logits(
    teacher: nn.Module,
    tokens: torch.Tensor,
    cond: torch.Tensor,
    *,
    gamma: float,
    neg_cond: torch.Tensor | None,
    allowed: torch.Tensor | None,
) -> torch.Tensor:
    """Teacher-forced CFG logits of eq. (1) for tokens `[B, L]` and cond `[B, C]` -> `[B, L, V]`.

    The conditional and negative rows go through ONE batched forward (DESIGN.md section 3);
    the grammar mask is applied after the CFG combination. Frozen: eval mode, no gradient.
    """
    if gamma == 1.0:
        neg_cond = None
    with frozen(teacher):
        return score(teacher, tokens, cond, neg_cond=neg_cond, gamma=gamma, allowed=allowed).cfg


def sequence_log_probs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> torch.Tensor:
    """`sum_n log softmax(logits_n / T)[s_n]`: log p_theta(y | x) of section 2, `[B, L, V] -> [B]`.

    `logits` should already be grammar-masked, so that the probabilities are those of the
    policy that sampled `tokens` (masked tokens get probability ~0, sampled ones are allowed).
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [B, L, V]
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(dim=-1)  # [B]


def policy_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy in nats of the policy softmax(logits / T) at each position: `[..., V] -> [...]`."""
    return token_entropy(logits.detach() / temperature)


# --------------------------------------------------------------------------------------------
# Audio: rendering and embedding
# --------------------------------------------------------------------------------------------


def render_audio(tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Render tokens `[..., L]` to audio `[..., S]` in chunks of `batch_size` pieces."""
    flat, lead = _flat(tokens, 1)
    chunks = [render(flat[i : i + batch_size]) for i in range(0, flat.shape[0], batch_size)]
    audio = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return audio.view(*lead, audio.shape[-1])


def embed_audio(embedder: nn.Module, audio: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Embeddings E(audio) `[..., S] -> [..., D]` (frozen, no gradient, chunked).

    The whole piece goes to E, whose clip rule averages its clips (module docstring).
    """
    flat, lead = _flat(audio, 1)
    param = next(embedder.parameters(), None)
    device = param.device if param is not None else flat.device
    with frozen(embedder):
        parts = [
            embedder(flat[i : i + batch_size].to(device)).float()
            for i in range(0, flat.shape[0], batch_size)
        ]
    emb = torch.cat(parts)  # [B, D]
    return emb.view(*lead, emb.shape[-1])


def load_audio_judge(cls, path: str | Path, what: str, owner: str) -> nn.Module:
    """Load a frozen audio model (embedder E, MuLan-style scorer, preference model) from
    `path` with `cls.from_checkpoint`, refused if it does not read the renderer's rate."""
    model = cls.from_checkpoint(path)
    if model.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"{owner}: the {what} {path} expects {model.sample_rate} Hz audio but the "
            f"renderer produces {SAMPLE_RATE} Hz"
        )
    return model.eval().requires_grad_(False)


def one_minus_mean(embeddings: torch.Tensor) -> torch.Tensor:
    """Appendix D.4's "1 - mean" of each prompt's cosine similarity matrix: `[P, N, D] -> [P]`.

    The mean runs over the WHOLE N x N matrix, diagonal included, as table 1 does (its CFG
    row, 0.32, is 7/8 of the 0.37 pairwise diversity of figure 2 at N = 8). It therefore
    equals `(1 - 1/N) * pairwise diversity`, and depends on N: compare it at a fixed N.
    """
    if embeddings.dim() != 3 or embeddings.shape[1] < 2:
        raise ValueError(
            f"one_minus_mean: embeddings must be [P, N >= 2, D], got {tuple(embeddings.shape)}"
        )
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)  # [P, N, D]
    sims = unit @ unit.transpose(1, 2)  # [P, N, N]
    return 1.0 - sims.mean(dim=(1, 2))  # [P]


# --------------------------------------------------------------------------------------------
# Oracle judge (DESIGN.md section 5)
# --------------------------------------------------------------------------------------------


def oracle_scores(tokens: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The oracle's scores of generations `tokens [P, N, L]` for their P prompts.

    Returns float64 tensors `[P, N]`: "quality" (prompt-independent, in [0, 1]) and
    "adherence" (mean over the attributes `oracle.parse_prompt` recognises in the prompt;
    NaN for prompts in which it recognises none, e.g. some free-form prompts, so that
    they do not count as perfectly adhered to).
    """
    if tokens.dim() != 3:
        raise ValueError(f"oracle_scores: tokens must be [P, N, L], got {tuple(tokens.shape)}")
    if len(prompts) != tokens.shape[0]:
        raise ValueError(
            f"oracle_scores: {tokens.shape[0]} prompts of generations but {len(prompts)} prompts"
        )
    n = tokens.shape[1]
    attrs = [oracle.parse_prompt(p) for p in prompts]
    rows = [a for a in attrs for _ in range(n)]
    judged = oracle.judge_batch(tokens.reshape(-1, tokens.shape[-1]), rows)
    quality = torch.tensor([j.quality for j in judged], dtype=torch.float64)
    adherence = torch.tensor(
        [j.adherence_mean if j.adherence else math.nan for j in judged], dtype=torch.float64
    )
    return {"quality": quality.view(-1, n), "adherence": adherence.view(-1, n)}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


class FrozenModels:
    """Mixin for LightningModules that hold frozen models outside their module tree.

    The CFG teacher, the embedder and the scorers must stay out of the optimizer, the
    checkpoint and DDP's gradient sync, so they are kept in `self._frozen` rather than as
    submodules; device and dtype moves of the module still carry them along.
    """

    _frozen: dict[str, nn.Module]

    def _need(self, name: str) -> nn.Module:
        if name not in self._frozen:
            raise RuntimeError(
                f"{type(self).__name__}: the {name} is not loaded; call setup() (the Trainer "
                f"does) first"
            )
        return self._frozen[name]

    def _freeze(self, name: str, module: nn.Module) -> None:
        module.eval().requires_grad_(False)
        self._frozen[name] = module.to(self.device)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for module in self._frozen.values():
            module._apply(fn, *args, **kwargs)
        return self


class MeanValue(MeanOfValues):
    """Streaming mean of given per-item values (NaN items are skipped); DDP-safe states."""

    def update(self, values: torch.Tensor) -> None:
        values = torch.as_tensor(values).detach().reshape(-1)
        self._accumulate(values[~torch.isnan(values)])


class EvalMetrics(nn.Module):
    """The evaluation metrics of section 3.1 as torchmetrics, reduced correctly under DDP.

    Args:
        scorer: MuLan-style scorer (`score(audio, prompts) -> [B]`) or None.
        preference: user-preference model (`score(audio) -> [B]`) or None.
        omega: weight of MuLan in `quality = omega * MuLan + preference` (paper: 5).
        prefix: prefix of the metric names.

    Names from `compute()` (each only when its inputs were given):
        {prefix}quality, {prefix}mulan, {prefix}preference  (scorers; quality needs both),
        {prefix}diversity (PairwiseDiversity on E's embeddings), {prefix}vendi,
        {prefix}oracle_quality, {prefix}oracle_adherence, {prefix}kl_teacher, {prefix}entropy.
    The scorers are frozen judges kept out of the module tree (no weights in checkpoints).
    """

    def __init__(
        self,
        scorer: object | None = None,
        preference: object | None = None,
        omega: float = 5.0,
        prefix: str = "eval/",
    ):
        super().__init__()
        self.prefix = prefix
        self.omega = float(omega)
        self.diversity = PairwiseDiversity()
        self.vendi = VendiScore()
        self.entropy = TokenEntropy()
        self.kl_teacher = MeanValue()
        self.oracle_quality = MeanValue()
        self.oracle_adherence = MeanValue()
        both = scorer is not None and preference is not None
        self.quality = QualityScore(scorer, preference, omega) if both else None
        self.mulan = MuLanScore(scorer) if scorer is not None and preference is None else None
        self.preference = MeanValue() if preference is not None and scorer is None else None
        object.__setattr__(self, "_preference_model", preference)

    def _metrics(self) -> dict[str, nn.Module]:
        return {name: m for name, m in self.named_children() if m is not None}

    @torch.no_grad()
    def update(
        self,
        tokens: torch.Tensor,
        prompts: Sequence[str],
        audio: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        *,
        logits: torch.Tensor | None = None,
        temperature: float = 1.0,
        kl: torch.Tensor | None = None,
    ) -> None:
        """Add P prompts' generations: tokens `[P, N, L]`, audio `[P, N, S]`,
        embeddings `[P, N, D]`, sampling logits `[P, N, L, V]` (entropy of softmax(z / T)),
        per-sequence KL to the teacher `[P, N]`."""
        prompts = list(prompts)
        n = tokens.shape[1]
        judged = oracle_scores(tokens, prompts)
        self.oracle_quality.update(judged["quality"])
        self.oracle_adherence.update(judged["adherence"])
        if embeddings is not None:
            self.diversity.update(embeddings)
            self.vendi.update(embeddings)
        if logits is not None:
            self.entropy.update((logits / temperature).reshape(-1, *logits.shape[-2:]))
        if kl is not None:
            self.kl_teacher.update(kl)
        if audio is not None:
            flat_audio = audio.reshape(-1, audio.shape[-1])  # [P*N, S]
            row_prompts = [p for p in prompts for _ in range(n)]
            if self.quality is not None:
                self.quality.update(flat_audio, row_prompts)
            if self.mulan is not None:
                self.mulan.update(flat_audio, row_prompts)
            if self.preference is not None:
                model = self._preference_model
                with frozen(model if isinstance(model, nn.Module) else None):
                    self.preference.update(model.score(flat_audio))

    def compute(self) -> dict[str, float]:
        """Synchronised means of every metric that saw data (a collective under DDP)."""
        out: dict[str, float] = {}
        for name, metric in self._metrics().items():
            if name == "quality":
                comps = metric.compute_components() if int(_synced_count(metric)) else None
                if comps is not None:
                    for key, value in comps.items():
                        out[f"{self.prefix}{key}"] = float(value)
                continue
            if int(_synced_count(metric)) == 0:
                continue  # e.g. adherence when no prompt names an attribute
            out[f"{self.prefix}{name}"] = float(metric.compute())
        return out

    def reset(self) -> None:
        for metric in self._metrics().values():
            metric.reset()


def _synced_count(metric: MeanOfValues) -> torch.Tensor:
    """The metric's item count summed over processes (so every rank skips or computes alike)."""
    count = metric.count.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        count = count.to(metric.total.device)
        torch.distributed.all_reduce(count)
    return count


# --------------------------------------------------------------------------------------------
# Listening samples: WAV + MIDI
# --------------------------------------------------------------------------------------------


def save_samples(
    directory: str | Path,
    tokens: torch.Tensor,
    audio: torch.Tensor,
    prompts: Sequence[str],
    stem: str = "sample",
) -> list[Path]:
    """Write tokens `[K, L]` / audio `[K, S]` as `{stem}{k}.wav` + `{stem}{k}.mid` and an
    index `{stem}_prompts.tsv` (sample name, prompt); returns the written paths.

    WAV (16-bit PCM at the renderer's rate) and MIDI via `suite.music.midi`, which writes
    each file atomically.
    """
    from suite.music.midi import write_midi, write_wav

    if not (tokens.shape[0] == audio.shape[0] == len(prompts)):
        raise ValueError(
            f"save_samples: {tokens.shape[0]} token rows, {audio.shape[0]} clips and "
            f"{len(prompts)} prompts must match"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    lines = []
    for k in range(tokens.shape[0]):
        paths.append(write_wav(audio[k], directory / f"{stem}{k}.wav", SAMPLE_RATE))
        paths.append(write_midi(tokens[k].detach().cpu(), directory / f"{stem}{k}.mid"))
        lines.append(f"{stem}{k}\t{prompts[k]}")
    index = directory / f"{stem}_prompts.tsv"
    index.write_text("\n".join(lines) + "\n")
    paths.append(index)
    return paths


def masked(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """`mask_logits` when a grammar mask is given, else the logits unchanged."""
    return logits if allowed is None else mask_logits(logits, allowed)


def kl_to_teacher(
    student_logits: torch.Tensor,
    teacher_cfg_logits: torch.Tensor,
    temperature: float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sequence reverse KL(student || CFG teacher) of eq. (2), summed over positions, `[B]`.

    Both logits `[B, L, V]` are grammar-masked with the same `allowed` so the support matches.
    """
    return token_kl(
        masked(student_logits, allowed),
        masked(teacher_cfg_logits, allowed),
        temperature=temperature,
        kind="reverse",
        reduce="sum",
    )
