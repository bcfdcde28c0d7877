"""The student of diversity-rewarded CFG distillation (paper sections 2.1-2.3, 3.2, 3.3).

`DistillStudent` starts from the base model theta_init and keeps a frozen copy of it as the
CFG teacher. Each training step, on a batch of B prompts:

1. samples N generations per prompt from the student at temperature T (on-policy
   distillation, section 2.1; no top-k / top-p, KV cache, no gradient, eval mode);
2. scores them with the teacher: conditional and negative-prompt logits in one batched
   teacher-forced forward, combined by CFG (eq. 1) with gamma, grammar-masked;
3. scores them with the student (teacher-forced, with gradient), masked with the SAME
   grammar mask so both policies have the same support;
4. KL loss of eq. (2): exact full-vocabulary reverse KL per position at temperature T,
   summed over positions, averaged over sequences (`suite.objectives.token_kl`);
5. diversity (section 2.2): render -> embed with the frozen E -> reward each sample with
   the mean `1 - cos` to its siblings (eq. 7) -> REINFORCE surrogate of eq. (4) with a
   baseline from OTHER prompts (batch, gathered across DDP ranks; or EMA);
6. loss of eq. (5): `KL + beta(t) * surrogate` (`joint_loss`; the surrogate is already a
   loss), beta(t) ramped linearly over `beta_warmup_steps` (section 3.2).

All maths is in `suite.objectives`; generation, rendering, embedding and the evaluation
metrics are in `lightning_modules.evaluation` (shared with the merged evaluator).

Frozen models (teacher, embedder E, MuLan-style scorer, preference model) are kept OUT of
the module tree: they are not in `parameters()` (so not in the optimizer nor in DDP's
gradient buckets), not switched to train mode by Lightning, and not in the state dict, so a
checkpoint holds only the student. `setup()` rebuilds them from their specs, which is also
what happens when a run resumes (`ckpt_path=last`); `_apply` moves them with the module.
The checkpoint also carries the student's architecture and the EMA baseline, so resuming
continues the EMA and `load_from_checkpoint` can rebuild the student without setup().
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from lightning_modules.evaluation import (
    EvalMetrics,
    FrozenModels,
    embed_audio,
    generate,
    kl_to_teacher,
    masked,
    policy_entropy,
    render_audio,
    save_samples,
    sequence_log_probs,
    teacher_logits,
)
from suite.models.lm import COND_DIM, TokenLM, load_lm
from suite.music.render import SAMPLE_RATE
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE, allowed_mask
from suite.objectives import (
    beta_schedule,
    diversity_rewards,
    joint_loss,
    reinforce_loss,
    token_kl,
)

__all__ = ["DistillStudent", "resolve_artifact"]

log = logging.getLogger(__name__)

_KL_KINDS = ("reverse", "forward", "jsd")
_REDUCTIONS = ("sum", "mean")
_BASELINES = ("batch", "ema", "none")
_CKPT_KEY = "distill_student"
_FROZEN = ("teacher", "embedder", "scorer", "preference")


def resolve_artifact(kind: str, value: str | dict) -> Path:
    """Path of an artifact: a str is an existing checkpoint, a dict an artifact spec.

    Delegates to `lightning_modules.artifacts.resolve` (which builds dict specs on demand);
    without that module a str path is still checked here, a dict cannot be built.
    """
    try:
        from lightning_modules.artifacts import resolve
    except ImportError:
        resolve = None
    if resolve is not None:
        return Path(resolve(kind, value))
    if isinstance(value, str | Path):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"DistillStudent: {kind} checkpoint not found: {path}")
        return path
    raise ValueError(
        f"DistillStudent: {kind}={value!r} is an artifact spec, but lightning_modules.artifacts "
        f"is not available to build it; pass a checkpoint path instead"
    )


def _plain(value: Any) -> Any:
    """Nested mappings / sequences (e.g. from a config system) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"DistillStudent: {name} must be {expected}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dist_all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Elementwise SUM over DDP ranks (the hook `reinforce_loss` calls once per step)."""
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def _world_reduce() -> Callable[[torch.Tensor], torch.Tensor] | None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _dist_all_reduce_sum
    return None


def _all_ranks_finite(*tensors: torch.Tensor) -> bool:
    """True when every tensor is finite on every DDP rank (a collective under DDP).

    A rank that raised alone would leave the others waiting in the next all-reduce (the
    baseline's or the gradients') until the process-group timeout; agreeing first makes
    all ranks stop together with the same message.
    """
    ok = all(bool(torch.isfinite(t).all()) for t in tensors)
    flag = torch.tensor([1.0 if ok else 0.0], device=tensors[0].device)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


class _Timer:
    """Wall-clock seconds per phase; synchronises CUDA so GPU work is charged to its phase."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                if timer.cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                if timer.cuda:
                    torch.cuda.synchronize()
                timer.seconds[name] = (
                    timer.seconds.get(name, 0.0) + time.perf_counter() - self.start
                )
                return False

        return _Phase()


class DistillStudent(FrozenModels, L.LightningModule):
    """Diversity-rewarded CFG distillation of eq. (5) on prompt batches `{"prompt", "cond", ...}`.

    Args:
        base_lm: theta_init, a TokenLM checkpoint path or an artifact spec (dict).
        embedder: the diversity embedder E (AudioEmbedder checkpoint path or spec).
        scorer: MuLan-style scorer (path / spec) for eval/mulan and eval/quality, or None.
        preference: user-preference model (path / spec) for eval/preference, or None.
        negative_prompt: x- of eq. (1); "" is the null condition (unconditional CFG).
        gamma: CFG guidance of the teacher, >= 0 (paper: 3).
        temperature: T > 0 of sampling and of both policies in the KL (paper: 0.99).
        n_generations: N generations per prompt per step (paper: 2); >= 2 when beta > 0.
        beta: diversity weight of eq. (5), >= 0 (paper: 0, 5, 10, 15).
        beta_warmup_steps: steps of the linear ramp of beta (paper: 1000).
        beta_scale: the objective weighs the surrogate by `beta_scale * beta(t)`, so that the
            configs keep the paper's beta labels (0, 5, 10, 15) while the scale maps them onto
            this model's KL and reward magnitudes (paper: 1; the tiny music world: see
            conf/beta15.yaml, calibrated so that beta 15 reaches the base model's diversity).
        kl_kind: "reverse" (eq. 2), "forward" or "jsd" (generalised JSD, `jsd_beta`).
        kl_reduce: "sum" over positions (eq. 2) or per-token "mean".
        jsd_beta: the JSD's own beta in (0, 1).
        baseline: REINFORCE baseline, "batch" (leave-one-prompt-out batch mean across ranks),
            "ema" (EMA of past batch means, `ema_decay`) or "none".
        lr, weight_decay, betas: AdamW on the student only (paper: lr 1.5e-4).
        eval_every: evaluation period in training steps (paper: 500). The run task sets
            `trainer.val_check_interval` from it; the module only records it.
        n_eval_generations: generations per eval prompt (>= 2, for diversity).
        n_audio_samples: WAV (+ MIDI) samples logged per evaluation to MLflow.
        omega: quality = omega * MuLan + preference (paper: 5).
        eval_seed: seed of the evaluation generations (the same draws at every evaluation).
        use_grammar_mask: mask every position to its token type, for teacher and student.
        base_lm_config: expected architecture of base_lm (TokenLM config keys); a checkpoint
            that differs is refused.
        export_path: where `on_train_end` writes the fine-tuned TokenLM (for LERP and the
            merged evaluator); None writes nothing.
    """

    def __init__(
        self,
        base_lm: str | dict,
        embedder: str | dict,
        scorer: str | dict | None = None,
        preference: str | dict | None = None,
        negative_prompt: str = "Bad audio quality.",
        gamma: float = 3.0,
        temperature: float = 0.99,
        n_generations: int = 2,
        beta: float = 15.0,
        beta_warmup_steps: int = 1000,
        beta_scale: float = 1.0,
        kl_kind: str = "reverse",
        kl_reduce: str = "sum",
        jsd_beta: float = 0.5,
        baseline: str = "batch",
        ema_decay: float = 0.99,
        lr: float = 1.5e-4,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        eval_every: int = 500,
        n_eval_generations: int = 2,
        n_audio_samples: int = 4,
        omega: float = 5.0,
        eval_seed: int = 0,
        use_grammar_mask: bool = True,
        base_lm_config: dict | None = None,
        export_path: str | None = None,
    ):
        super().__init__()
        specs = {}
        for name, value, required in (
            ("base_lm", base_lm, True),
            ("embedder", embedder, True),
            ("scorer", scorer, False),
            ("preference", preference, False),
        ):
            if value is None and not required:
                specs[name] = None
                continue
            if isinstance(value, Path):
                value = str(value)
            if not isinstance(value, str | Mapping) or (isinstance(value, str) and not value):
                raise TypeError(
                    f"DistillStudent: {name} must be a checkpoint path (str) or an artifact "
                    f"spec (mapping){'' if required else ' or None'}, got {value!r}"
                )
            specs[name] = _plain(value)
        if not isinstance(negative_prompt, str):
            raise TypeError(
                f"DistillStudent: negative_prompt must be a str, got {negative_prompt!r}"
            )
        _check("beta", beta, _is_number(beta) and beta >= 0, "a finite number >= 0")
        _check("gamma", gamma, _is_number(gamma) and gamma >= 0, "a finite number >= 0")
        _check("temperature", temperature, _is_number(temperature) and temperature > 0, "> 0")
        _check("n_generations", n_generations, _is_int(n_generations) and n_generations >= 1,
               "an int >= 1")  # fmt: skip
        if beta > 0 and n_generations < 2:
            raise ValueError(
                f"DistillStudent: n_generations={n_generations} with beta={beta} > 0: the "
                f"diversity reward compares generations of the same prompt, so it needs "
                f"n_generations >= 2 (or beta = 0)"
            )
        _check("beta_warmup_steps", beta_warmup_steps,
               _is_int(beta_warmup_steps) and beta_warmup_steps >= 0, "an int >= 0")  # fmt: skip
        _check("beta_scale", beta_scale, _is_number(beta_scale) and beta_scale > 0,
               "a finite number > 0")  # fmt: skip
        _check("kl_kind", kl_kind, kl_kind in _KL_KINDS, f"one of {_KL_KINDS}")
        _check("kl_reduce", kl_reduce, kl_reduce in _REDUCTIONS, f"one of {_REDUCTIONS}")
        _check("jsd_beta", jsd_beta, _is_number(jsd_beta) and 0 < jsd_beta < 1, "in (0, 1)")
        _check("baseline", baseline, baseline in _BASELINES, f"one of {_BASELINES}")
        _check("ema_decay", ema_decay, _is_number(ema_decay) and 0 <= ema_decay < 1, "in [0, 1)")
        _check("lr", lr, _is_number(lr) and lr > 0, "a finite number > 0")
        _check("weight_decay", weight_decay, _is_number(weight_decay) and weight_decay >= 0,
               ">= 0")  # fmt: skip
        betas = tuple(float(b) for b in betas)
        _check("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas),
               "two values in [0, 1)")  # fmt: skip
        _check("eval_every", eval_every, _is_int(eval_every) and eval_every >= 1, "an int >= 1")
        _check("n_eval_generations", n_eval_generations,
               _is_int(n_eval_generations) and n_eval_generations >= 2, "an int >= 2")  # fmt: skip
        _check("n_audio_samples", n_audio_samples,
               _is_int(n_audio_samples) and n_audio_samples >= 0, "an int >= 0")  # fmt: skip
        _check("omega", omega, _is_number(omega), "a finite number")
        _check("eval_seed", eval_seed, _is_int(eval_seed), "an int")
        if base_lm_config is not None and not isinstance(base_lm_config, Mapping):
            raise TypeError(
                f"DistillStudent: base_lm_config must be a dict or None, got {base_lm_config!r}"
            )
        if export_path is not None and not (isinstance(export_path, str) and export_path):
            raise TypeError(
                f"DistillStudent: export_path must be a path or None, got {export_path!r}"
            )
        self.save_hyperparameters()
        self.hparams.update(specs)  # plain str / dict, whatever mapping type came in
        self.hparams["betas"] = betas
        if base_lm_config is not None:
            self.hparams["base_lm_config"] = _plain(base_lm_config)

        # Construction stays cheap: models are loaded in setup() (resolve may build them).
        self.student: TokenLM | None = None
        self._frozen: dict[str, nn.Module] = {}
        self.eval_metrics: EvalMetrics | None = None
        self.ema_baseline: float | None = None
        # Non-persistent buffers follow the module's device but stay out of checkpoints.
        self.register_buffer(
            "allowed", allowed_mask().clone() if use_grammar_mask else None, persistent=False
        )  # [L, V] bool
        self.register_buffer("neg_cond", torch.zeros(COND_DIM), persistent=False)  # [C]
        self._samples: list[tuple[torch.Tensor, torch.Tensor, str]] = []

    # ------------------------------------------------------------------ frozen models
    @property
    def teacher(self) -> TokenLM:
        return self._need("teacher")

    @property
    def reward_embedder(self) -> nn.Module:
        return self._need("embedder")

    # ------------------------------------------------------------------ data and setup
    def prepare_data(self) -> None:
        """Build (or find) every artifact this job needs; runs on one process per node."""
        for kind, value in self._specs():
            resolve_artifact(kind, value)

    def _specs(self) -> list[tuple[str, str | dict]]:
        hp = self.hparams
        specs = [("base_lm", hp.base_lm), ("embedder", hp.embedder)]
        specs += [(k, hp[k]) for k in ("scorer", "preference") if hp[k] is not None]
        return specs

    def setup(self, stage: str | None = None) -> None:
        """Load theta_init as the student (unless restored) and the frozen models."""
        hp = self.hparams
        if "teacher" not in self._frozen:
            path = resolve_artifact("base_lm", hp.base_lm)
            base = self.load_base(path)
            if self.student is None:
                self.student = copy.deepcopy(base).to(self.device).train()
            elif self.student.config != base.config:
                raise ValueError(
                    f"DistillStudent: the restored student ({self.student.config}) and base_lm "
                    f"{path} ({base.config}) are of different architectures"
                )
            self._freeze("teacher", base)
        if "embedder" not in self._frozen:
            from suite.models.vit import AudioEmbedder

            path = resolve_artifact("embedder", hp.embedder)
            self._freeze("embedder", self._audio_model(AudioEmbedder, path, "embedder"))
        if hp.scorer is not None and "scorer" not in self._frozen:
            from suite.models.scorer import MuLanScorer

            path = resolve_artifact("scorer", hp.scorer)
            self._freeze("scorer", self._audio_model(MuLanScorer, path, "scorer"))
        if hp.preference is not None and "preference" not in self._frozen:
            from suite.models.preference import PreferenceModel

            path = resolve_artifact("preference", hp.preference)
            self._freeze("preference", self._audio_model(PreferenceModel, path, "preference"))
        if self.eval_metrics is None:
            self.eval_metrics = EvalMetrics(
                self._frozen.get("scorer"), self._frozen.get("preference"), omega=hp.omega
            ).to(self.device)
        self.neg_cond.copy_(self.encode_negative_prompt(hp.negative_prompt).to(self.neg_cond))

    def load_base(self, path: str | Path) -> TokenLM:
        """theta_init from `path`, refused if it is not a model of the music world / config."""
        base = load_lm(path, expected_config=self.hparams.base_lm_config)
        if base.vocab_size != VOCAB_SIZE or base.seq_len != SEQ_LEN:
            raise ValueError(
                f"DistillStudent: base_lm {path} has vocab_size={base.vocab_size}, "
                f"seq_len={base.seq_len}; the music world needs vocab_size={VOCAB_SIZE}, "
                f"seq_len={SEQ_LEN}"
            )
        if base.cond_dim != COND_DIM:
            raise ValueError(
                f"DistillStudent: base_lm {path} has cond_dim={base.cond_dim}, the text tower "
                f"gives {COND_DIM}"
            )
        return base

    @staticmethod
    def _audio_model(cls, path: Path, what: str) -> nn.Module:
        model = cls.from_checkpoint(path)
        if model.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"DistillStudent: the {what} {path} expects {model.sample_rate} Hz audio but the "
                f"renderer produces {SAMPLE_RATE} Hz"
            )
        return model

    @staticmethod
    def encode_negative_prompt(prompt: str) -> torch.Tensor:
        """x- as a condition `[C]`: the text tower's embedding; "" is the all-zero null row."""
        if prompt.strip() == "":
            return torch.zeros(COND_DIM)
        from suite.models.text_tower import default_tower

        return default_tower().encode([prompt])[0].float().cpu()

    # ------------------------------------------------------------------ checkpoints
    def on_train_end(self) -> None:
        """Export the fine-tuned weights (TokenLM file) for merging and evaluation (eq. 6)."""
        path = self.hparams.get("export_path")
        if path and self.student is not None and self.trainer.is_global_zero:
            self.student.save(path)
            log.info("exported the student to %s", path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[_CKPT_KEY] = {
            "ema_baseline": self.ema_baseline,
            "student_config": None if self.student is None else dict(self.student.config),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get(_CKPT_KEY)
        if extra is None:
            raise ValueError(
                f"DistillStudent: checkpoint has no '{_CKPT_KEY}' entry; it was not written "
                f"by DistillStudent"
            )
        self.ema_baseline = extra["ema_baseline"]
        if self.student is None and extra["student_config"] is not None:
            # Weights are loaded right after this hook; only the architecture is needed.
            self.student = TokenLM.from_config(extra["student_config"]).to(self.device)

    # ------------------------------------------------------------------ training
    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Student logits `[B, L, V]` (teacher forcing)."""
        return self.student(tokens, cond)

    def diversity_surrogate(
        self, logprobs: torch.Tensor, rewards: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        """REINFORCE surrogate (eq. 4) of logprobs `[B, N]` and rewards `[B, N]`.

        Under DDP the batch baseline and the EMA use the global batch (a collective: every
        rank calls this every step). Updates the EMA state when baseline="ema".
        """
        hp = self.hparams
        loss, info = reinforce_loss(
            logprobs,
            rewards,
            baseline=hp.baseline,
            ema_state=self.ema_baseline,
            ema_decay=hp.ema_decay,
            all_reduce_sum=_world_reduce(),
        )
        if info["ema_state"] is not None:
            self.ema_baseline = float(info["ema_state"])
        return loss, info

    def distill_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """One step of eq. (5) on a prompt batch; returns (loss, stats to log)."""
        hp = self.hparams
        cond = batch["cond"].to(device=self.device, dtype=torch.float32)  # [B, C]
        B, N, T = cond.shape[0], hp.n_generations, hp.temperature
        timer = _Timer(self.device)
        with timer("sampling"):
            # Each rank and step draws its own stream: with the global RNG every DDP rank
            # (seeded alike) would draw the same uniforms, correlating the samples of
            # prompt i with the other prompts that make its leave-one-out baseline.
            generator = torch.Generator(device=self.device).manual_seed(
                hp.eval_seed * 1_000_003 + self.global_rank * 7_919 + self.global_step + 1
            )
            tokens, _ = generate(
                self.student, cond, N, temperature=T, allowed=self.allowed, generator=generator
            )
        flat = tokens.reshape(B * N, -1)  # [B*N, L]
        rows = cond.repeat_interleave(N, dim=0)  # [B*N, C], same order as `flat`
        with timer("teacher"):
            t_logits = teacher_logits(
                self.teacher, flat, rows, gamma=hp.gamma, neg_cond=self.neg_cond,
                allowed=self.allowed,
            )  # [B*N, L, V]  # fmt: skip
        with timer("student"):
            # Score in eval mode (gradients still flow): with dropout on, the log-probs and
            # the KL would be those of a perturbed network, not of the policy that sampled.
            was_training = self.student.training
            self.student.eval()
            try:
                s_logits = masked(self.student(flat, rows), self.allowed)  # [B*N, L, V]
            finally:
                self.student.train(was_training)
            kl = token_kl(
                s_logits, t_logits, temperature=T, kind=hp.kl_kind, jsd_beta=hp.jsd_beta,
                reduce=hp.kl_reduce,
            )  # [B*N]  # fmt: skip
            kl_loss = kl.mean()
            logprobs = sequence_log_probs(s_logits, flat, T).view(B, N)  # [B, N]
        stats: dict[str, float] = {}
        if N >= 2:
            with timer("render"):
                audio = render_audio(tokens)  # [B, N, S]
            with timer("embed"):
                emb = embed_audio(self.reward_embedder, audio)  # [B, N, D]
            if not _all_ranks_finite(emb):
                raise FloatingPointError(
                    f"DistillStudent: non-finite reward embeddings at global step "
                    f"{self.global_step} (on this or another rank); stopping before backward"
                )
            rewards = diversity_rewards(emb)  # [B, N]
            surrogate, info = self.diversity_surrogate(logprobs, rewards)
            stats.update(
                {
                    "train/reward_mean": float(info["reward_mean"]),
                    "train/reward_std": float(info["reward_std"]),
                    "train/advantage_std": float(info["advantage_std"]),
                }
            )
        else:  # beta == 0 and a single generation: no reward to compute
            surrogate = torch.zeros((), device=kl_loss.device, dtype=kl_loss.dtype)
        beta_t = beta_schedule(int(self.global_step), float(hp.beta), int(hp.beta_warmup_steps))
        weight = float(hp.get("beta_scale", 1.0)) * beta_t  # checkpoints before beta_scale: 1
        loss = joint_loss(kl_loss, surrogate.to(kl_loss.dtype), weight)
        if not _all_ranks_finite(loss):
            raise FloatingPointError(
                f"DistillStudent: non-finite loss at global step {self.global_step} on this "
                f"or another rank (here: loss={float(loss.detach())}, kl={float(kl_loss.detach())}, "
                f"surrogate={float(surrogate.detach())}, beta_weight={weight}); stopping "
                f"before backward so no poisoned weights are saved. Lower lr or beta."
            )
        stats.update(
            {
                "train/loss": float(loss.detach()),
                "train/kl": float(kl_loss.detach()),
                "train/surrogate": float(surrogate.detach()),
                "train/beta_t": beta_t,
                "train/beta_weight": weight,
                "train/entropy": float(policy_entropy(s_logits, T).mean()),
                "train/logprob": float(logprobs.detach().mean()),
            }
        )
        stats.update({f"time/{k}": v for k, v in timer.seconds.items()})
        return loss, stats

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, stats = self.distill_step(batch)
        size = batch["cond"].shape[0]
        for name, value in stats.items():
            self.log(
                name, value, batch_size=size, prog_bar=name in ("train/kl", "train/reward_mean")
            )
        return loss

    def configure_optimizers(self):
        if self.student is None:
            raise RuntimeError("DistillStudent: configure_optimizers before setup()")
        hp = self.hparams
        return torch.optim.AdamW(
            self.student.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay
        )

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_batch(
        self, cond: torch.Tensor, prompts: list[str], seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate, render, embed and score eval prompts into `eval_metrics`.

        Returns (tokens `[P, n, L]`, audio `[P, n, S]`).
        """
        hp = self.hparams
        cond = cond.to(device=self.device, dtype=torch.float32)  # [P, C]
        P, n, T = cond.shape[0], hp.n_eval_generations, hp.temperature
        gen = torch.Generator(device=self.device).manual_seed(seed)
        tokens, logits = generate(
            self.student, cond, n, temperature=T, allowed=self.allowed, generator=gen,
            return_logits=True,
        )  # [P, n, L], [P, n, L, V]  # fmt: skip
        flat = tokens.reshape(P * n, -1)
        rows = cond.repeat_interleave(n, dim=0)
        t_logits = teacher_logits(
            self.teacher, flat, rows, gamma=hp.gamma, neg_cond=self.neg_cond, allowed=self.allowed
        )  # [P*n, L, V]
        kl = kl_to_teacher(logits.reshape(P * n, *logits.shape[2:]), t_logits, T, self.allowed)
        audio = render_audio(tokens)  # [P, n, S]
        emb = embed_audio(self.reward_embedder, audio)  # [P, n, D]
        self.eval_metrics.update(
            tokens, prompts, audio, emb, logits=logits, temperature=T, kl=kl.view(P, n)
        )
        return tokens, audio

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt" not in batch or "cond" not in batch:
            raise ValueError(
                f"DistillStudent.validation_step: expected a prompt batch with 'prompt' and "
                f"'cond', got keys {sorted(batch)}"
            )
        prompts = list(batch["prompt"])
        # The same seed at every evaluation: the metrics move with the weights, not the draws.
        seed = self.hparams.eval_seed + 100_003 * self.global_rank + batch_idx
        tokens, audio = self.evaluate_batch(batch["cond"], prompts, seed)
        want = self.hparams.n_audio_samples - len(self._samples)
        if want > 0 and self.global_rank == 0 and not self.trainer.sanity_checking:
            for p in range(min(want, tokens.shape[0])):  # the first generation of each prompt
                self._samples.append((tokens[p, 0].cpu(), audio[p, 0].cpu(), prompts[p]))

    def on_validation_epoch_end(self) -> None:
        values = self.eval_metrics.compute()
        self.eval_metrics.reset()
        for name, value in values.items():
            self.log(name, value, sync_dist=False, rank_zero_only=True)
        samples, self._samples = self._samples, []
        if samples:
            self._log_samples(samples)

    def _log_samples(self, samples: list[tuple[torch.Tensor, torch.Tensor, str]]) -> None:
        """WAV + MIDI of a few eval generations as MLflow artifacts `samples/step{step}`."""
        from lightning.pytorch.loggers import MLFlowLogger

        loggers = [lg for lg in self.loggers if isinstance(lg, MLFlowLogger)]
        if not loggers:
            return
        import tempfile

        step = int(self.global_step)
        with tempfile.TemporaryDirectory() as tmp:
            tokens = torch.stack([s[0] for s in samples])
            audio = torch.stack([s[1] for s in samples])
            paths = save_samples(tmp, tokens, audio, [s[2] for s in samples])
            for logger in loggers:
                for path in paths:
                    logger.experiment.log_artifact(
                        logger.run_id, str(path), artifact_path=f"samples/step{step}"
                    )
