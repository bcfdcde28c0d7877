"""The student of diversity-rewarded CFG distillation (paper sections 2.1-2.3, 3.2, 3.3).

`DistillStudent` starts from the base policy theta_init and keeps a frozen copy of it as
the CFG teacher. It knows its generator only through `suite.policies.Policy`, so the music
world's TokenLM and any other backbone train through the same step. On a batch of B
prompts, a step reads "rollout, then objectives":

1. rollout (`suite.rollout`): N generations per prompt from the student at temperature T
   (on-policy, section 2.1; no top-k / top-p); the teacher's conditional and negative
   logits in one batched teacher-forced forward, combined by CFG (eq. 1), masked; the
   student's teacher-forced logits (with gradient) under the SAME validity mask;
2. KL loss of eq. (2): exact full-vocabulary KL per position at temperature T, summed over
   codebooks and positions, averaged over sequences (`suite.objectives.token_kl`);
3. diversity (section 2.2): the policy's audio -> the frozen E -> each sample rewarded with
   the mean `1 - cos` to its siblings (eq. 7) -> REINFORCE surrogate of eq. (4) with a
   baseline from OTHER prompts (batch, gathered across DDP ranks; or EMA);
4. loss of eq. (5): `KL + scale * beta(t) * surrogate`, beta(t) ramped linearly over
   `beta_warmup_steps` (section 3.2). All maths is in `suite.objectives`.

Only the policy's trainable part is in the module tree (`self.student`): the optimizer,
the checkpoint and DDP see nothing else. `on_train_end` exports it as safetensors with a
provenance record (`suite.policies.exports`) that the merge recipes read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from lightning_modules.checks import Checker
from lightning_modules.guards import guarded_sampling
from lightning_modules.policy_job import PolicyJob, load_policy
from lightning_modules.step_utils import PhaseTimer, all_ranks_finite, world_reduce
from lightning_modules.student_export import export_student
from suite.objectives import beta_schedule, diversity_rewards, joint_loss, reinforce_loss
from suite.policies import Policy
from suite.policies.base import NEGATIVE_PROMPT, eval_mode
from suite.policies.exports import weights_hash
from suite.rollout import (
    chunked_scores,
    embed_audio,
    generate,
    kl_to_teacher,
    masked,
    policy_audio,
    policy_entropy,
    sequence_log_probs,
    teacher_logits,
)

__all__ = ["DistillStudent"]

log = logging.getLogger(__name__)

KL_KINDS = ("reverse", "forward", "jsd")
REDUCTIONS = ("sum", "mean")
BASELINES = ("batch", "ema", "none")
_CKPT_KEY = "distill_student"


class DistillStudent(PolicyJob):
    """Diversity-rewarded CFG distillation of eq. (5) on prompt batches `{"prompt", ...}`.

    Args:
        policy: the base policy theta_init as a spec `{"name": ..., **arguments}`
            (`suite.policies`; e.g. `{name: music, checkpoint: <path or artifact spec>}`).
        embedder: the diversity embedder E (AudioEmbedder checkpoint path or spec).
        scorer: MuLan-style scorer (path / spec) for eval/mulan and eval/quality, or None.
        preference: user-preference model (path / spec) for eval/preference, or None.
        negative_prompt: x- of eq. (1); "" is the null condition (unconditional CFG).
        gamma: CFG guidance of the teacher, >= 0 (paper: 3).
        temperature: T > 0 of sampling and of both policies in the KL (paper: 0.99).
        n_generations: N generations per prompt per step (paper: 2); >= 2 when beta > 0.
        beta: diversity weight of eq. (5), >= 0 (paper: 0, 5, 10, 15).
        beta_warmup_steps: steps of the linear ramp of beta (paper: 1000).
        beta_scale: the objective weighs the surrogate by `beta_scale * beta(t)`, so configs
            keep the paper's beta labels while the scale maps them onto this model's KL and
            reward magnitudes (paper: 1; logged as `train/beta_weight`).
        kl_kind: "reverse" (eq. 2), "forward" or "jsd" (generalised JSD, `jsd_beta`).
        kl_reduce: "sum" over positions (eq. 2) or per-token "mean".
        kl_chunk: compute the KL, log-probs and entropy this many positions at a time (the
            policy must split its forward; `suite.rollout.chunked_scores` has the memory
            formula); None scores whole sequences.
        jsd_beta: the JSD's own beta in (0, 1).
        baseline: REINFORCE baseline, "batch" (leave-one-prompt-out batch mean across ranks),
            "ema" (EMA of past batch means, `ema_decay`) or "none".
        lr, weight_decay, betas: AdamW on the trainable part only (paper: lr 1.5e-4).
        eval_every: evaluation period in training steps (paper: 500); recorded only (the
            run task sets `trainer.val_check_interval` from it).
        n_eval_generations: generations per eval prompt (>= 2, for diversity).
        n_audio_samples: WAV (+ MIDI) samples logged per evaluation to MLflow.
        omega: quality = omega * MuLan + preference (paper: 5).
        eval_seed: seed of the evaluation generations and of the training draws.
        export_path: where `on_train_end` writes the trainable weights (`.safetensors`, with
            a `.json` record beside it) for LERP and the merged evaluator; None: nothing.
    """

    OWNER = "DistillStudent"

    def __init__(
        self,
        policy: dict,
        embedder: str | dict,
        scorer: str | dict | None = None,
        preference: str | dict | None = None,
        negative_prompt: str = NEGATIVE_PROMPT,
        gamma: float = 3.0,
        temperature: float = 0.99,
        n_generations: int = 2,
        beta: float = 15.0,
        beta_warmup_steps: int = 1000,
        beta_scale: float = 1.0,
        kl_kind: str = "reverse",
        kl_reduce: str = "sum",
        kl_chunk: int | None = None,
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
        export_path: str | None = None,
    ):
        super().__init__()
        check = Checker(self.OWNER)
        specs = {
            "policy": check.policy_spec(policy),
            "embedder": check.spec("embedder", embedder),
            "scorer": check.spec("scorer", scorer, required=False),
            "preference": check.spec("preference", preference, required=False),
        }
        check.text("negative_prompt", negative_prompt)
        check.number("beta", beta, 0)
        check.number("gamma", gamma, 0)
        check.number("temperature", temperature, 0, strict=True)
        check.integer("n_generations", n_generations, 1)
        if beta > 0 and n_generations < 2:
            raise ValueError(
                f"{self.OWNER}: n_generations={n_generations} with beta={beta} > 0: the "
                f"diversity reward compares generations of the same prompt, so it needs "
                f"n_generations >= 2 (or beta = 0)"
            )
        check.integer("beta_warmup_steps", beta_warmup_steps, 0)
        check.number("beta_scale", beta_scale, 0, strict=True)
        check.choice("kl_kind", kl_kind, KL_KINDS)
        check.choice("kl_reduce", kl_reduce, REDUCTIONS)
        if kl_chunk is not None:
            check.integer("kl_chunk", kl_chunk, 1)
        check("jsd_beta", jsd_beta, check_open_unit(jsd_beta), "in (0, 1)")
        check.choice("baseline", baseline, BASELINES)
        check("ema_decay", ema_decay, isinstance(ema_decay, int | float) and 0 <= ema_decay < 1,
              "in [0, 1)")  # fmt: skip
        check.number("lr", lr, 0, strict=True)
        check.number("weight_decay", weight_decay, 0)
        betas = tuple(float(b) for b in betas)
        check("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas),
              "two values in [0, 1)")  # fmt: skip
        check.integer("eval_every", eval_every, 1)
        check.integer("n_eval_generations", n_eval_generations, 2)
        check.integer("n_audio_samples", n_audio_samples, 0)
        check.number("omega", omega)
        check("eval_seed", eval_seed, isinstance(eval_seed, int) and not isinstance(eval_seed, bool),
              "an int")  # fmt: skip
        if export_path is not None:
            check("export_path", export_path, isinstance(export_path, str)
                  and export_path.endswith(".safetensors"), "a path ending in .safetensors or None")  # fmt: skip
        # The run task logs the config's params: Lightning must not log these again.
        self.save_hyperparameters(logger=False)
        self.hparams.update(specs)
        self.hparams["betas"] = betas
        # Construction stays cheap: models are loaded in setup() (resolve may build them).
        self.student: torch.nn.Module | None = None  # the trainable part of the student policy
        self._student_policy: Policy | None = None
        self.ema_baseline: float | None = None
        self.base_hash: str | None = None

    # ------------------------------------------------------------------ models
    @property
    def teacher(self) -> Policy:
        return self._need("teacher")

    @property
    def policy(self) -> Policy:
        """The student policy (its trainable part is `self.student`)."""
        if self._student_policy is None:
            raise RuntimeError(f"{self.OWNER}: the policy is not loaded; call setup() first")
        return self._student_policy

    evaluated_policy = policy

    def _setup_policy(self) -> None:
        """theta_init as the teacher, and the student as a fork of it (unless restored)."""
        if "teacher" in self._frozen:
            return
        base = load_policy(self.hparams.policy)
        if self.hparams.get("kl_chunk") is not None and not base.splits_forward:
            raise ValueError(
                f"{self.OWNER}: kl_chunk={self.hparams.kl_chunk} needs a policy that splits its "
                f"forward (hidden / head); {type(base).__name__} does not: set kl_chunk=null"
            )
        self.base_hash = weights_hash(base.trainable.state_dict())
        student = base.fork()
        if self.student is not None:  # restored from a checkpoint before setup()
            student.trainable.load_state_dict(self.student.state_dict())
        # Outside the module tree (object.__setattr__): only `self.student` is checkpointed.
        object.__setattr__(self, "_student_policy", student.to(self.device))
        self.student = student.trainable.train()
        # The policy's frozen parts (text encoder, codec, its own buffers) move with the job;
        # re-applying a move to the shared trainable part is a no-op.
        self._extra_frozen = [student]
        self._freeze("teacher", base)

    def setup(self, stage: str | None = None) -> None:
        """Load theta_init (teacher and student), the judges and the metrics."""
        self._setup_policy()
        self._setup_judges(self.teacher)
        self._setup_eval_metrics()

    # ------------------------------------------------------------------ checkpoints
    def on_train_end(self) -> None:
        """Export the fine-tuned weights with their provenance (`student_export`), for merging
        (eq. 6), and log both files to the MLflow run (`runs:/<run_id>/models/<name>.safetensors`).
        The run task calls this too when a resumed run has nothing left to train."""
        path = self.hparams.get("export_path")
        if not path or self.student is None:
            return
        export_student(self, path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[_CKPT_KEY] = {"ema_baseline": self.ema_baseline}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get(_CKPT_KEY)
        if extra is None:
            raise ValueError(
                f"{self.OWNER}: checkpoint has no '{_CKPT_KEY}' entry; it was not written by "
                f"DistillStudent"
            )
        self.ema_baseline = extra["ema_baseline"]
        self._setup_policy()  # the architecture; the weights are loaded right after this hook

    # ------------------------------------------------------------------ training
    def forward(self, tokens: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Student logits `[B, K, L, V]` (teacher forcing) of tokens `[B, K, L]`."""
        return self.policy(tokens, self.encode(self.policy, prompts))

    def diversity_surrogate(
        self, logprobs: torch.Tensor, rewards: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        """REINFORCE surrogate (eq. 4) of logprobs `[B, N]` and rewards `[B, N]`.

        Under DDP the batch baseline and the EMA use the global batch (a collective: every
        rank calls this every step). Updates the EMA state when baseline="ema".
        """
        hp = self.hparams
        loss, info = reinforce_loss(
            logprobs, rewards, baseline=hp.baseline, ema_state=self.ema_baseline,
            ema_decay=hp.ema_decay, all_reduce_sum=world_reduce(),
        )  # fmt: skip
        if info["ema_state"] is not None:
            self.ema_baseline = float(info["ema_state"])
        return loss, info

    def distill_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """One step of eq. (5) on a prompt batch; returns (loss, stats to log)."""
        hp = self.hparams
        policy, teacher = self.policy, self.teacher
        allowed = teacher.allowed_mask()  # [K, L, V]: teacher and student share the support
        cond = self.encode(policy, list(batch["prompt"]))  # B rows
        B, N, T = cond.batch_size, hp.n_generations, hp.temperature
        timer = PhaseTimer(self.device)
        with timer("sampling"):
            # Each rank and step draws its own stream: with the global RNG every DDP rank
            # (seeded alike) would draw the same uniforms, correlating the samples of
            # prompt i with the other prompts that make its leave-one-out baseline.
            generator = torch.Generator(device=self.device).manual_seed(
                hp.eval_seed * 1_000_003 + self.global_rank * 7_919 + self.global_step + 1
            )
            tokens, _ = guarded_sampling(self.OWNER, self, "sampling the training rollouts",
                                         lambda: generate(policy, cond, N, temperature=T, allowed=allowed,
                                                          generator=generator))  # [B, N, K, L]  # fmt: skip
        flat = tokens.reshape(B * N, *tokens.shape[2:])  # [B*N, K, L]
        rows = cond.repeat_interleave(N)  # B*N rows, same order as `flat`
        neg = self.negative(teacher, hp.negative_prompt)
        if hp.get("kl_chunk") is not None:
            with timer("student"):  # teacher and student, a few positions at a time
                kl, flat_logprobs, entropy = chunked_scores(
                    policy, teacher, flat, rows, gamma=hp.gamma, neg_cond=neg, temperature=T,
                    allowed=allowed, chunk=hp.kl_chunk, kind=hp.kl_kind, reduce=hp.kl_reduce,
                    jsd_beta=hp.jsd_beta,
                )  # [B*N], [B*N], []  # fmt: skip
                kl_loss = kl.mean()
                logprobs = flat_logprobs.view(B, N)  # [B, N]
        else:
            with timer("teacher"):
                t_logits = teacher_logits(teacher, flat, rows, gamma=hp.gamma, neg_cond=neg,
                                          allowed=allowed)  # [B*N, K, L, V]  # fmt: skip
            with timer("student"):
                # Score in eval mode (gradients still flow): with dropout on, the log-probs and
                # the KL would be those of a perturbed network, not of the policy that sampled.
                with eval_mode(policy):
                    s_logits = masked(policy(flat, rows), allowed)  # [B*N, K, L, V]
                kl = kl_to_teacher(s_logits, t_logits, T, kind=hp.kl_kind, reduce=hp.kl_reduce,
                                   jsd_beta=hp.jsd_beta)  # [B*N]  # fmt: skip
                kl_loss = kl.mean()
                logprobs = sequence_log_probs(s_logits, flat, T).view(B, N)  # [B, N]
                entropy = policy_entropy(s_logits, T).mean()
        stats: dict[str, float] = {}
        if N >= 2:
            with timer("render"):
                audio = policy_audio(policy, tokens)  # [B, N, S]
            with timer("embed"):
                emb = embed_audio(self._need("embedder"), audio)  # [B, N, D]
            if not all_ranks_finite(emb):
                raise FloatingPointError(
                    f"{self.OWNER}: non-finite reward embeddings at global step "
                    f"{self.global_step} (on this or another rank); stopping before backward"
                )
            rewards = diversity_rewards(emb)  # [B, N]
            surrogate, info = self.diversity_surrogate(logprobs, rewards)
            stats.update({f"train/{k}": float(info[k])
                          for k in ("reward_mean", "reward_std", "advantage_std")})  # fmt: skip
        else:  # beta == 0 and a single generation: no reward to compute
            surrogate = torch.zeros((), device=kl_loss.device, dtype=kl_loss.dtype)
        beta_t = beta_schedule(int(self.global_step), float(hp.beta), int(hp.beta_warmup_steps))
        weight = float(hp.beta_scale) * beta_t
        loss = joint_loss(kl_loss, surrogate.to(kl_loss.dtype), weight)
        if not all_ranks_finite(loss):
            raise FloatingPointError(
                f"{self.OWNER}: non-finite loss at global step {self.global_step} on this or "
                f"another rank (here: loss={float(loss.detach())}, kl={float(kl_loss.detach())}, "
                f"surrogate={float(surrogate.detach())}, beta_weight={weight}); stopping before "
                f"backward so no poisoned weights are saved. Lower lr or beta."
            )
        stats.update({
            "train/loss": float(loss.detach()), "train/kl": float(kl_loss.detach()),
            "train/surrogate": float(surrogate.detach()), "train/beta_t": beta_t,
            "train/beta_weight": weight,
            "train/entropy": float(entropy),
            "train/logprob": float(logprobs.detach().mean()),
        })  # fmt: skip
        stats.update({f"time/{k}": v for k, v in timer.seconds.items()})
        return loss, stats

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, stats = self.distill_step(batch)
        size = len(batch["prompt"])
        for name, value in stats.items():
            self.log(name, value, batch_size=size,
                     prog_bar=name in ("train/kl", "train/reward_mean"))  # fmt: skip
        return loss

    def configure_optimizers(self):
        if self.student is None:
            raise RuntimeError(f"{self.OWNER}: configure_optimizers before setup()")
        hp = self.hparams
        return torch.optim.AdamW(
            self.student.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay
        )

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_batch(self, prompts: list[str], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate, render, embed and score eval prompts into `eval_metrics`.

        Returns (tokens `[P, n, K, L]`, audio `[P, n, S]`).
        """
        hp = self.hparams
        policy, teacher = self.policy, self.teacher
        cond = self.encode(policy, prompts)
        tokens, logits = self.sample_eval(policy, cond, hp.n_eval_generations, seed,
                                          temperature=hp.temperature)  # fmt: skip
        teacher_spec = (teacher, float(hp.gamma), self.negative(teacher, hp.negative_prompt))
        out = self.score_generations(policy, prompts, cond, tokens, logits, hp.temperature,
                                     teacher_spec)  # fmt: skip
        return tokens, out["audio"]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        values = self.eval_metrics.compute()
        self.eval_metrics.reset()
        self.log_eval(values, f"samples/step{int(self.global_step)}")


def check_open_unit(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1
