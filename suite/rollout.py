"""What training and evaluation share: sample, score, KL, log-probs, render, embed.

A training step of diversity-rewarded CFG distillation reads "rollout, then objectives":

    tokens, logits = generate(policy, cond, n, temperature=T)          # on-policy, [P, n, K, L]
    t_logits = teacher_logits(teacher, flat, rows, gamma=g, neg_cond=neg, allowed=mask)  # eq. 1
    kl = kl_to_teacher(s_logits, t_logits, T, mask)                    # eq. 2, [B]
    logp = sequence_log_probs(s_logits, flat, T)                       # log p_theta(y | x), eq. 4
    audio = policy_audio(policy, tokens)                               # [P, n, S]
    emb = embed_audio(embedder, audio)                                 # E of section 2.2

and evaluation (the student's, the merged evaluator's, pretraining's, the benchmarks') calls
the same functions, so the diversity that is rewarded is exactly the diversity that is
measured. Everything here knows a generator only through `suite.policies.Policy`, and
nothing here knows Lightning.

Audio length and the embedder. A piece may be longer than E's clip (the music world's
6 s against the tiny E's 3 s): the whole piece goes to E and E's own clip rule
(`suite.models.vit.split_clips`) averages its clips, so no second of the piece is ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from suite.metrics.entropy import token_entropy
from suite.objectives import token_kl
from suite.policies.base import Policy, TextCond, eval_mode
from suite.sampling import mask_logits, sample, score

__all__ = [
    "chunked_scores",
    "embed_audio",
    "frozen",
    "generate",
    "kl_to_teacher",
    "masked",
    "one_minus_mean",
    "policy_audio",
    "policy_entropy",
    "save_samples",
    "sequence_log_probs",
    "teacher_logits",
]


@contextlib.contextmanager
def frozen(module: nn.Module | None):
    """Run `module` in eval mode under no_grad, restoring its previous mode afterwards."""
    if module is None:
        with torch.no_grad():
            yield
        return
    with eval_mode(module), torch.no_grad():
        yield


def _flat(x: torch.Tensor, keep: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Merge the leading dims of x so that `keep` trailing dims remain; return the lead shape."""
    lead = tuple(x.shape[: x.dim() - keep])
    return x.reshape(-1, *x.shape[x.dim() - keep :]), lead


# --------------------------------------------------------------------------------------------
# Generation and teacher scores
# --------------------------------------------------------------------------------------------


def generate(
    policy: Policy,
    cond: TextCond,
    n: int,
    *,
    temperature: float = 1.0,
    gamma: float = 1.0,
    neg_cond: TextCond | None = None,
    allowed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample n generations per prompt: P condition rows -> tokens `[P, n, K, L]`.

    Plain sampling at temperature T with gamma = 1 (the student, a merged model, a
    temperature baseline); CFG (eq. 1) with gamma != 1 and `neg_cond` (1 or P rows; the
    null prompt "" for unconditional CFG) for the teacher baseline. No top-k / top-p:
    samples come from the policy itself (section 3.1).

    Returns `(tokens [P, n, K, L], logits [P, n, K, L, V] or None)`: the logits of the
    sampling policy (CFG-combined and masked, before temperature).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"generate: n (generations per prompt) must be an int >= 1, got {n!r}")
    if not isinstance(cond, TextCond):
        raise TypeError(f"generate: cond must be a TextCond, got {type(cond).__name__}")
    prompts = cond.batch_size
    rows = cond.repeat_interleave(n)  # [P*n] rows, prompt-major: a prompt's rows adjacent
    if neg_cond is not None and neg_cond.batch_size == prompts > 1:
        neg_cond = neg_cond.repeat_interleave(n)
    if gamma == 1.0:
        neg_cond = None  # CFG at gamma 1 is the conditional policy: skip the negative rows
    out = sample(
        policy, rows, neg_cond=neg_cond, gamma=gamma, temperature=temperature, allowed=allowed,
        generator=generator, return_logits=return_logits,
    )  # fmt: skip
    tokens = out.tokens.view(prompts, n, *out.tokens.shape[1:])  # [P, n, K, L]
    logits = None if out.logits is None else out.logits.view(prompts, n, *out.logits.shape[1:])
    return tokens, logits


def teacher_logits(
    teacher: Policy,
    tokens: torch.Tensor,
    cond: TextCond,
    *,
    gamma: float,
    neg_cond: TextCond | None,
    allowed: torch.Tensor | None,
) -> torch.Tensor:
    """Teacher-forced CFG logits of eq. (1): tokens `[B, K, L]` -> `[B, K, L, V]`.

    The conditional and negative rows go through ONE batched forward (DESIGN.md section 3);
    the validity mask is applied after the CFG combination. Frozen: eval mode, no gradient.
    """
    if gamma == 1.0:
        neg_cond = None
    with frozen(teacher):
        return score(teacher, tokens, cond, neg_cond=neg_cond, gamma=gamma, allowed=allowed).cfg


def masked(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """`mask_logits` when a validity mask is given, else the logits unchanged."""
    return logits if allowed is None else mask_logits(logits, allowed)


def sequence_log_probs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log p_theta(y | x) of section 2: `sum` over codebooks and steps, `[B, K, L, V] -> [B]`.

    `logits` should already be masked, so that the probabilities are those of the policy
    that sampled `tokens` (masked tokens get probability ~0, sampled ones are allowed).
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [B, K, L, V]
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, K, L]
    return chosen.reshape(chosen.shape[0], -1).sum(dim=-1)  # [B]


def kl_to_teacher(
    student_logits: torch.Tensor,
    teacher_cfg_logits: torch.Tensor,
    temperature: float,
    allowed: torch.Tensor | None = None,
    *,
    kind: str = "reverse",
    reduce: str = "sum",
    jsd_beta: float = 0.5,
) -> torch.Tensor:
    """Per-sequence KL(student || CFG teacher) of eq. (2), summed over codebooks and steps, `[B]`.

    Both logits `[B, K, L, V]` are masked with the same `allowed` so the support matches;
    the K codebooks' positions count as K * L positions of `suite.objectives.token_kl`.
    """
    s = masked(student_logits, allowed)
    t = masked(teacher_cfg_logits, allowed)
    B, V = s.shape[0], s.shape[-1]
    return token_kl(
        s.reshape(B, -1, V), t.reshape(B, -1, V), temperature=temperature, kind=kind,
        jsd_beta=jsd_beta, reduce=reduce,
    )  # fmt: skip


def chunked_scores(
    student: Policy,
    teacher: Policy,
    tokens: torch.Tensor,
    cond: TextCond,
    *,
    gamma: float,
    neg_cond: TextCond | None,
    temperature: float,
    allowed: torch.Tensor | None,
    chunk: int,
    kind: str = "reverse",
    reduce: str = "sum",
    jsd_beta: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The KL of eq. (2), log p_theta(y | x) and the mean entropy, `chunk` positions at a time.

    Equal (up to float summation order) to `kl_to_teacher` / `sequence_log_probs` /
    `policy_entropy` on whole-sequence logits, for a policy that `splits_forward`: the
    transformer runs once over the sequence (student with gradient, teacher's conditional
    and negative rows in one batched forward without), then the output heads, the CFG
    combination and the per-position terms run on `chunk` positions at a time inside
    activation checkpointing, so the backward pass recomputes a chunk's logits instead of
    keeping them. Peak memory of the logits, with R = rows, K codebooks, V vocabulary:
    about 6 * R * K * L * V * 4 bytes whole (student logits and their log-softmax, the
    teacher's conditional, negative and CFG logits and log-softmax), about
    6 * R * K * chunk * V * 4 bytes chunked, plus the hidden states 3 * R * L * D * 4 bytes.

    Returns `(kl [R], log_probs [R], mean entropy per token (a detached scalar))`.
    """
    from torch.utils.checkpoint import checkpoint

    from suite.objectives import cfg_logits

    R, K, L = tokens.shape
    use_neg = neg_cond is not None and gamma != 1.0
    with frozen(teacher):
        if use_neg:
            both = teacher.hidden(torch.cat([tokens, tokens]), TextCond.cat([cond, neg_cond.expand(R)]))
            h_cond, h_neg = both[:R], both[R:]  # [R, L, D] each
        else:
            h_cond, h_neg = teacher.hidden(tokens, cond), None
    with eval_mode(student):
        h_student = student.hidden(tokens, cond)  # [R, L, D], with gradient

    def part(h_s, h_c, h_n, start: int, end: int):
        with torch.no_grad():
            z_t = teacher.head(h_c)
            if h_n is not None:
                z_t = cfg_logits(z_t, teacher.head(h_n), gamma)
            z_t = masked(z_t, None if allowed is None else allowed[:, start:end])  # [R, K, l, V]
        z_s = masked(student.head(h_s), None if allowed is None else allowed[:, start:end])
        V = z_s.shape[-1]
        kl = token_kl(z_s.reshape(R, -1, V), z_t.reshape(R, -1, V), temperature=temperature,
                      kind=kind, jsd_beta=jsd_beta, reduce="sum")  # fmt: skip
        logp = sequence_log_probs(z_s, tokens[:, :, start:end], temperature)
        return kl, logp, policy_entropy(z_s, temperature).sum()

    kl = logp = entropy = None
    for start in range(0, L, chunk):
        end = min(L, start + chunk)
        args = (h_student[:, start:end], h_cond[:, start:end],
                None if h_neg is None else h_neg[:, start:end], start, end)  # fmt: skip
        k, lp, ent = checkpoint(part, *args, use_reentrant=False)
        kl, logp = (k, lp) if kl is None else (kl + k, logp + lp)
        entropy = ent if entropy is None else entropy + ent
    if reduce == "mean":
        kl = kl / (K * L)
    return kl, logp, entropy / (R * K * L)


def policy_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy in nats of the policy softmax(logits / T) at each position: `[..., V] -> [...]`."""
    return token_entropy(logits.detach() / temperature)


# --------------------------------------------------------------------------------------------
# Audio: rendering and embedding
# --------------------------------------------------------------------------------------------


def policy_audio(policy: Policy, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The policy's audio of tokens `[..., K, L]` -> `[..., S]`, in chunks of `batch_size`."""
    flat, lead = _flat(tokens, 2)
    chunks = [policy.to_audio(flat[i : i + batch_size])[0] for i in range(0, flat.shape[0], batch_size)]
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
# Listening samples
# --------------------------------------------------------------------------------------------


def save_samples(
    directory: str | Path,
    policy: Policy,
    tokens: torch.Tensor,
    audio: torch.Tensor,
    prompts: Sequence[str],
    stem: str = "sample",
) -> list[Path]:
    """Write tokens `[M, K, L]` / audio `[M, S]` as `{stem}{m}.wav` (+ the policy's extras,
    e.g. MIDI) and an index `{stem}_prompts.tsv` (sample name, prompt); returns the paths."""
    from suite.audio_files import write_wav

    if not (tokens.shape[0] == audio.shape[0] == len(prompts)):
        raise ValueError(
            f"save_samples: {tokens.shape[0]} token rows, {audio.shape[0]} clips and "
            f"{len(prompts)} prompts must match"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    lines = []
    for m in range(tokens.shape[0]):
        paths.append(write_wav(audio[m], directory / f"{stem}{m}.wav", policy.sample_rate))
        paths.extend(policy.write_extras(tokens[m], directory / f"{stem}{m}"))
        lines.append(f"{stem}{m}\t{prompts[m]}")
    index = directory / f"{stem}_prompts.tsv"
    index.write_text("\n".join(lines) + "\n")
    paths.append(index)
    return paths
