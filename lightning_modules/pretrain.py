"""Pretraining of the base model theta_init (paper section 3 setup, appendix B).

The paper starts every experiment from a pretrained text-conditioned music LM on which CFG
(eq. 1) with the negative prompt "Bad audio quality." raises quality and lowers diversity
(figure 6). `PretrainLM` trains the suite's `TokenLM` on the corpus with:

- next-token cross-entropy under teacher forcing;
- condition dropout: a share `cond_dropout` (default 0.2) of rows gets the all-zero null
  condition, so the same weights also learn m(. | y_<n, "") and CFG has an unconditional
  model to use (Ho & Salimans 2022);
- AdamW (no weight decay on biases, norms, positions and the null prefix) and a linear
  warmup + cosine learning-rate schedule stepped per optimizer step;
- validation: token cross-entropy on held-out corpus batches and, on prompt batches
  (`{"prompt", "cond", "index"}`), generations per prompt at each evaluation gamma, scored
  by a pluggable `judge(tokens [B, L], prompts) -> dict of floats` (the oracle judge) plus
  pairwise token-level diversity (mean normalised Hamming distance between generations
  of the same prompt).

The architecture arguments are saved as hyperparameters, so `load_lm(ckpt)` (from
`suite.models.lm`, re-exported here) rebuilds the TokenLM without Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from suite.models.lm import COND_DIM, TokenLM
from suite.models.lm_checkpoint import load_lm
from suite.policies.music import TokenLMPolicy
from suite.rollout import generate

__all__ = ["PretrainLM", "cosine_with_warmup", "load_lm", "token_hamming_diversity"]

Judge = Callable[[torch.Tensor, list], dict]


def cosine_with_warmup(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier after `step` optimizer steps: linear warmup, then cosine to min_lr_ratio.

    step < warmup: (step + 1) / warmup (never 0, so the first step already learns);
    then 0.5 * (1 + cos(pi * progress)) scaled into [min_lr_ratio, 1]; flat after max_steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def token_hamming_diversity(tokens: torch.Tensor) -> torch.Tensor:
    """Per-prompt diversity [P] of tokens [P, N, L]: mean over pairs i < j of the share of
    positions where generations i and j differ (normalised Hamming distance)."""
    if tokens.dim() != 3 or tokens.shape[1] < 2:
        raise ValueError(
            f"token_hamming_diversity: tokens must be [P, N >= 2, L], got {tuple(tokens.shape)}"
        )
    N = tokens.shape[1]
    dist = (tokens[:, :, None, :] != tokens[:, None, :, :]).float().mean(-1)  # [P, N, N]
    # The diagonal is 0 and the matrix symmetric: the sum counts every pair twice.
    return dist.sum(dim=(1, 2)) / (N * (N - 1))


def oracle_judge(tokens: torch.Tensor, prompts: list) -> dict:
    """The oracle judge as a `judge` for generation evals: mean quality and adherence.

    tokens [B, L] with one prompt per row; adherence averages only over prompts in which the
    oracle recognises an attribute (see `suite.policies.music.MusicOracle`).
    """
    from suite.policies.music import MusicOracle

    scores = MusicOracle().scores(tokens[:, None, None, :], list(prompts))  # [B, 1] each
    return {
        "oracle_quality": float(scores["quality"].mean()),
        "oracle_adherence": float(torch.nanmean(scores["adherence"])),
    }


def _check(name: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"PretrainLM: {name} must be {expected}, got {value!r}")


class PretrainLM(L.LightningModule):
    """LightningModule pretraining a `TokenLM` on corpus batches `{"tokens", "cond"}`.

    Model args are those of `TokenLM`. Optimisation: lr, weight_decay, betas, warmup_steps,
    max_steps (cosine horizon), min_lr_ratio. cond_dropout in [0, 1): share of training rows
    mapped to the null condition. Evaluation on prompt batches: eval_samples_per_prompt
    generations (>= 2, for diversity) at each of eval_gammas with eval_temperature, the
    negative condition eval_neg_cond ([C] embedding of e.g. "Bad audio quality."; default the
    null condition, i.e. unconditional CFG), the grammar mask `allowed` [L, V], and `judge`.
    judge / eval_neg_cond / allowed are objects, not hyperparameters: pass them again to
    `load_from_checkpoint` if needed. From a config, pass eval_negative_prompt (text, encoded
    in setup) and use_grammar_mask instead, and `oracle_judge` as the judge.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        d_model: int = 128,
        n_layers: int = 3,
        n_heads: int = 4,
        d_ff: int = 512,
        cond_dim: int = COND_DIM,
        n_prefix: int = 2,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 200,
        max_steps: int = 5000,
        min_lr_ratio: float = 0.1,
        cond_dropout: float = 0.2,
        eval_samples_per_prompt: int = 2,
        eval_gammas: Sequence[float] = (1.0,),
        eval_temperature: float = 1.0,
        eval_seed: int = 0,
        judge: Judge | None = None,
        eval_neg_cond: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
        eval_negative_prompt: str | None = None,
        use_grammar_mask: bool = False,
    ):
        super().__init__()
        betas = tuple(float(b) for b in betas)
        eval_gammas = [float(g) for g in eval_gammas]
        _check("lr", lr, lr > 0, "> 0")
        _check("weight_decay", weight_decay, weight_decay >= 0, ">= 0")
        _check(
            "betas",
            betas,
            len(betas) == 2 and all(0 <= b < 1 for b in betas),
            "two values in [0, 1)",
        )
        _check("warmup_steps", warmup_steps, warmup_steps >= 0, ">= 0")
        _check("max_steps", max_steps, max_steps >= 1, ">= 1")
        _check("min_lr_ratio", min_lr_ratio, 0 <= min_lr_ratio <= 1, "in [0, 1]")
        _check("cond_dropout", cond_dropout, 0 <= cond_dropout < 1, "in [0, 1)")
        _check(
            "eval_samples_per_prompt", eval_samples_per_prompt, eval_samples_per_prompt >= 2, ">= 2"
        )
        _check("eval_gammas", eval_gammas, all(g >= 0 for g in eval_gammas), "all >= 0")
        _check("eval_temperature", eval_temperature, eval_temperature > 0, "> 0")
        self.save_hyperparameters(ignore=["judge", "eval_neg_cond", "allowed"], logger=False)
        self.hparams["betas"] = betas
        self.hparams["eval_gammas"] = eval_gammas
        self.model = TokenLM(
            vocab_size=vocab_size,
            seq_len=seq_len,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            d_ff=d_ff,
            cond_dim=cond_dim,
            n_prefix=n_prefix,
            dropout=dropout,
            tie_embeddings=tie_embeddings,
        )
        self.judge = judge
        neg = torch.zeros(cond_dim) if eval_neg_cond is None else torch.as_tensor(eval_neg_cond)
        _check(
            "eval_neg_cond",
            tuple(neg.shape),
            tuple(neg.shape) == (cond_dim,),
            f"shape [{cond_dim}]",
        )
        # Non-persistent: they follow the module's device but stay out of the state dict, so
        # checkpoints hold exactly the TokenLM's weights.
        self.register_buffer("eval_neg_cond", neg.float(), persistent=False)
        if allowed is None and use_grammar_mask:
            from suite.music.tokens import allowed_mask

            allowed = allowed_mask()
        self.register_buffer("allowed", allowed, persistent=False)

    def setup(self, stage: str | None = None) -> None:
        # A negative prompt given as text is encoded once here (not in __init__, which
        # must stay cheap); an explicit eval_neg_cond tensor wins.
        prompt = self.hparams.get("eval_negative_prompt")
        if prompt and not self.eval_neg_cond.any():
            from suite.models.text_tower import default_tower

            self.eval_neg_cond = default_tower().encode([prompt])[0].float().to(self.device)

    # ------------------------------------------------------------------ training
    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model(tokens, cond)

    def _ce(self, batch: dict) -> torch.Tensor:
        tokens, cond = batch["tokens"], batch["cond"]  # [B, L], [B, C]
        logits = self.model(tokens, cond)  # [B, L, V]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cond = batch["cond"]
        if self.hparams.cond_dropout > 0:
            drop = torch.rand(cond.shape[0], device=cond.device) < self.hparams.cond_dropout
            cond = cond.masked_fill(drop[:, None], 0.0)  # zero row = null condition
        loss = self._ce({"tokens": batch["tokens"], "cond": cond})
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"PretrainLM: non-finite training loss ({loss.item()}) at global step "
                f"{self.global_step}, batch {batch_idx}; stopping. Lower lr or check the data; "
                "the last checkpoint on disk predates this step."
            )
        bs = cond.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return loss

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            # Matrices decay; biases, norms, positions and the null prefix do not.
            if p.ndim >= 2 and name not in ("pos_emb", "null_prefix"):
                decay.append(p)
            else:
                no_decay.append(p)
        hp = self.hparams
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": hp.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=hp.lr,
            betas=tuple(hp.betas),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: cosine_with_warmup(s, hp.warmup_steps, hp.max_steps, hp.min_lr_ratio),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "tokens" in batch:
            loss = self._ce(batch)
            self.log(
                "val/ce", loss, prog_bar=True, batch_size=batch["tokens"].shape[0],
                add_dataloader_idx=False,
            )  # fmt: skip
        elif "prompt" in batch:
            for name, value in self.generation_eval(
                batch["cond"], list(batch["prompt"]), batch_idx
            ).items():
                self.log(name, value, batch_size=len(batch["prompt"]), add_dataloader_idx=False)
        else:
            raise ValueError(
                f"PretrainLM.validation_step: batch needs 'tokens' (corpus) or 'prompt' "
                f"(prompt set) keys, got {sorted(batch)}"
            )

    def generation_eval(self, cond: torch.Tensor, prompts: list[str], seed_offset: int = 0) -> dict:
        """Generate eval_samples_per_prompt pieces per prompt at each eval gamma; return
        `{"val/g{gamma}/token_diversity": ..., "val/g{gamma}/<judge key>": ...}` (floats)."""
        hp = self.hparams
        N, P = hp.eval_samples_per_prompt, cond.shape[0]
        policy = TokenLMPolicy(self.model, self.allowed)
        rows = policy.cond_from_vectors(cond)  # [P] rows; generate repeats each N times
        neg = policy.cond_from_vectors(self.eval_neg_cond[None])  # [1] row
        row_prompts = [p for p in prompts for _ in range(N)]
        gen = torch.Generator(device=cond.device).manual_seed(hp.eval_seed + seed_offset)
        out: dict[str, float] = {}
        for gamma in hp.eval_gammas:
            tokens, _ = generate(
                policy, rows, N, neg_cond=neg, gamma=gamma, temperature=hp.eval_temperature,
                allowed=policy.allowed_mask(), generator=gen,
            )  # [P, N, 1, L]  # fmt: skip
            tokens = tokens[:, :, 0].reshape(P * N, -1)  # [P*N, L]
            tag = f"val/g{gamma:g}"
            div = token_hamming_diversity(tokens.view(P, N, -1)).mean()
            out[f"{tag}/token_diversity"] = float(div)
            if self.judge is not None:
                scores = self.judge(tokens, row_prompts)
                if not isinstance(scores, dict):
                    raise TypeError(
                        f"PretrainLM: judge must return a dict of floats, got {type(scores).__name__}"
                    )
                for key, value in scores.items():
                    out[f"{tag}/{key}"] = float(torch.as_tensor(value, dtype=torch.float64).mean())
        return out
