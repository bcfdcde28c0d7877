"""What the two policy jobs share: frozen models, judges, the evaluation loop, samples.

The student (`lightning_modules.student`, paper sections 2.1-2.3) and the merged evaluator
(`lightning_modules.merged_eval`, sections 2.4, 3.4, 3.5) both hold a generator behind
`suite.policies.Policy` and evaluate it the same way (section 3.1): N generations per
held-out prompt, the KL to the CFG teacher of eq. (2), the audio embedded by E, quality
from the MuLan-style scorer and the preference model, the oracle's scores where the
policy's world has an oracle, and a few WAV (+ MIDI) samples logged to MLflow.

Frozen models (teacher, judges, evaluated policies) are kept OUT of the module tree: they
are not in `parameters()` (so not in the optimizer nor in DDP's gradient buckets), not
switched to train mode by Lightning, and not in the state dict, so a checkpoint holds only
what trains; `_apply` moves them (and the frozen parts of the student's policy) with the
module. Construction stays cheap; everything is built in `setup()`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from lightning_modules import tracking
from lightning_modules.artifacts import resolve
from lightning_modules.guards import guarded_sampling
from suite.metrics.eval_set import EvalMetrics
from suite.policies import Policy, TextCond, build_policy, policy_class
from suite.rollout import (
    embed_audio,
    generate,
    kl_to_teacher,
    policy_audio,
    save_samples,
    teacher_logits,
)

JUDGES = ("embedder", "scorer", "preference")
log = logging.getLogger(__name__)


def resolve_policy_spec(spec: dict) -> dict:
    """The spec with every artifact it names (`Policy.ARTIFACTS`) resolved to a file path."""
    cls = policy_class(spec["name"])
    out = dict(spec)
    for key, kind in cls.ARTIFACTS.items():
        if out.get(key) is not None:
            out[key] = str(resolve(kind, out[key]))
    return out


# kind -> (module, presets, config class) of the judges an artifact spec builds
_JUDGE_CONFIGS = {
    "embedder": ("suite.models.vit", "EMBEDDER_PRESETS", "EmbedderConfig"),
    "scorer": ("suite.models.scorer", "SCORER_PRESETS", "ScorerConfig"),
    "preference": ("suite.models.preference", "PREFERENCE_PRESETS", "PreferenceConfig"),
}


def check_artifact_architecture(kind: str, spec: Any, model: nn.Module, owner: str) -> None:
    """Refuse a judge whose architecture is not the one its artifact spec builds (a model.pt
    replaced in the artifact's folder, or built by other code): it would be used, and its
    scores reported, as if it were the artifact."""
    import importlib

    from suite.models.audio_checkpoint import config_diff
    from suite.models.judge_specs import is_model_spec

    config = getattr(model, "config", None)
    if not isinstance(spec, dict) or is_model_spec(spec) or kind not in _JUDGE_CONFIGS or config is None:
        return
    module, presets, config_cls = _JUDGE_CONFIGS[kind]
    models = importlib.import_module(module)
    wanted = dict(spec.get("model") or {})
    if wanted.get("model_config") is not None:
        expected = getattr(models, config_cls).from_dict(wanted["model_config"])
    else:
        expected = getattr(models, presets).get(wanted.get("preset", "tiny"))
    if expected is None:
        return
    diff = config_diff(config.to_dict(), expected.to_dict())
    if diff:
        from suite.artifacts import find_built

        folder = find_built(kind, spec) or f"artifacts/{kind}-*"  # never builds: only names it
        raise ValueError(
            f"{owner}: {kind}: the artifact at {folder} is not the model its spec "
            f"builds ({'; '.join(diff[:3])}): it was replaced or built by other code; delete its "
            f"folder to rebuild it, or name the file as {kind}=<path> to use it on purpose"
        )


def load_policy(spec: dict) -> Policy:
    """Build a policy from its spec, building the artifacts it needs first."""
    return build_policy(resolve_policy_spec(spec))


class PolicyJob(L.LightningModule):
    """Base of the jobs that hold a policy; subclasses implement `evaluate_batch`.

    Subclasses call `super().__init__()`, keep `policy`, the judge specs (`embedder`,
    `scorer`, `preference`), `omega`, `eval_seed` and `n_audio_samples` in `hparams`, and
    call `_setup_judges(policy)` / `_setup_eval_metrics()` from `setup()`.
    """

    OWNER = "PolicyJob"

    def __init__(self) -> None:
        super().__init__()
        self._frozen: dict[str, nn.Module] = {}
        self._extra_frozen: list[nn.Module] = []  # frozen parts of the trained policy
        self.eval_metrics: EvalMetrics | None = None
        self._samples: list[tuple[torch.Tensor, torch.Tensor, str]] = []
        self._negatives: dict[tuple[int, str], TextCond] = {}

    # ------------------------------------------------------------------ frozen models
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
        for module in [*self._frozen.values(), *self._extra_frozen]:
            module._apply(fn, *args, **kwargs)
        return self

    def prepare_data(self) -> None:
        """Build (or find) every artifact this job needs; runs on one process per node."""
        from suite.models.judge_specs import is_model_spec

        hp = self.hparams
        resolve_policy_spec(hp.policy)
        for kind in JUDGES:
            if hp.get(kind) is not None and not is_model_spec(hp[kind]):
                resolve(kind, hp[kind])

    def _setup_judges(self, policy: Policy) -> None:
        """E, the MuLan-style scorer and the preference model, at the policy's sample rate
        (a judge that reads another rate gets resampled audio, `lightning_modules.judges`)."""
        from lightning_modules.judges import at_rate
        from suite.models.judge_specs import load_judge

        for kind in JUDGES:
            spec = self.hparams.get(kind)
            if spec is None or kind in self._frozen:
                continue
            model = load_judge(kind, spec, resolve)
            check_artifact_architecture(kind, spec, model, self.OWNER)
            self._freeze(kind, at_rate(model, policy.sample_rate, kind, self.OWNER))

    def _setup_eval_metrics(self) -> None:
        if self.eval_metrics is None:
            self.eval_metrics = EvalMetrics(
                self._frozen.get("scorer"), self._frozen.get("preference"),
                omega=self.hparams.omega,
            ).to(self.device)  # fmt: skip
            if self.eval_metrics.quality is None:
                log.info("%s: eval/quality = %s", self.OWNER, self.eval_metrics.quality_terms)

    def _log_job_params(self) -> None:
        """Params only the built job knows (what `eval/quality` sums), if the run lacks them."""
        if self.eval_metrics is not None:
            tracking.log_missing_params(self, {"quality_terms": self.eval_metrics.quality_terms})

    def on_fit_start(self) -> None:
        self._log_job_params()

    def on_test_start(self) -> None:
        self._log_job_params()

    def negative(self, policy: Policy, prompt: str) -> TextCond:
        """The condition of a negative prompt (1 row, cached per policy and prompt)."""
        key = (id(policy), prompt)
        if key not in self._negatives:
            self._negatives[key] = policy.encode_text([prompt])
        return self._negatives[key].to(self.device)

    def encode(self, policy: Policy, prompts: list[str]) -> TextCond:
        return policy.encode_text(prompts).to(self.device)

    # ------------------------------------------------------------------ evaluation
    def score_generations(
        self,
        policy: Policy,
        prompts: list[str],
        cond: TextCond,
        tokens: torch.Tensor,
        logits: torch.Tensor,
        temperature: float,
        teacher: tuple[Policy, float, TextCond] | None,
    ) -> dict[str, Any]:
        """KL to the teacher, audio, E's embeddings and the oracle's scores of generations
        `tokens [P, G, K, L]` (sampling logits `[P, G, K, L, V]`), added to `eval_metrics`."""
        P, G = tokens.shape[:2]
        kl = None
        if teacher is not None:
            model, gamma, neg = teacher
            flat = tokens.reshape(P * G, *tokens.shape[2:])  # [P*G, K, L]
            t_logits = teacher_logits(
                model, flat, cond.repeat_interleave(G), gamma=gamma, neg_cond=neg,
                allowed=model.allowed_mask(),
            )  # [P*G, K, L, V]  # fmt: skip
            flat_logits = logits.reshape(P * G, *logits.shape[2:])
            # Both already masked (the sampler's logits and the teacher's): no second mask.
            kl = kl_to_teacher(flat_logits, t_logits, temperature).view(P, G)
        audio = policy_audio(policy, tokens)  # [P, G, S]
        emb = embed_audio(self._need("embedder"), audio)  # [P, G, D]
        judged = None
        if policy.oracle is not None:
            judged = policy.oracle.scores(tokens, prompts)
            judged["pair_distance"] = policy.oracle.pair_distances(tokens)  # [P]
        self.eval_metrics.update(
            prompts, audio, emb, logits=logits, temperature=temperature, kl=kl, oracle=judged
        )
        return {"audio": audio, "embeddings": emb, "kl": kl, "oracle": judged}

    def sample_eval(
        self, policy: Policy, cond: TextCond, n: int, seed: int, *, temperature: float,
        gamma: float = 1.0, neg: TextCond | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n generations per prompt from `seed`: tokens `[P, n, K, L]`, logits `[P, n, K, L, V]`."""
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        tokens, logits = guarded_sampling(self.OWNER, self, "sampling the evaluation", lambda: generate(
            policy, cond, n, temperature=temperature, gamma=gamma, neg_cond=neg,
            allowed=policy.allowed_mask(), generator=gen, return_logits=True,
        ))  # fmt: skip
        return tokens, logits

    def evaluate_batch(self, prompts: list[str], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate for the prompts and update the metrics; returns (tokens, audio)."""
        raise NotImplementedError

    def _eval_step(self, batch: dict, batch_idx: int) -> None:
        if "prompt" not in batch:
            raise ValueError(
                f"{self.OWNER}: expected a prompt batch with a 'prompt' list, got keys {sorted(batch)}"
            )
        prompts = list(batch["prompt"])
        # The same seed at every evaluation: the metrics move with the weights, not the draws.
        seed = self.hparams.eval_seed + 100_003 * self.global_rank + batch_idx
        tokens, audio = self.evaluate_batch(prompts, seed)
        want = self.hparams.n_audio_samples - len(self._samples)
        if want > 0 and self.global_rank == 0 and not self.trainer.sanity_checking:
            for p in range(min(want, tokens.shape[0])):  # the first generation of each prompt
                self._samples.append((tokens[p, 0].cpu(), audio[p, 0].cpu(), prompts[p]))

    def log_eval(self, values: dict[str, float], artifact_path: str, directory: str | None = None) -> None:
        """Log the evaluation's metrics and its samples (WAV + the policy's extras) to MLflow
        under `artifact_path`, and to `directory` if given."""
        for name, value in values.items():
            # NaN p-values (degenerate pairs) are logged as they are: MLflow keeps NaN.
            self.log(name, value, sync_dist=False, rank_zero_only=True)
        samples, self._samples = self._samples, []
        if samples:
            self.write_samples(samples, artifact_path, directory)

    def write_samples(self, samples: list, artifact_path: str, directory: str | None = None) -> None:
        tokens = torch.stack([s[0] for s in samples])  # [M, K, L]
        audio = torch.stack([s[1] for s in samples])  # [M, S]
        prompts = [s[2] for s in samples]
        policy = self.evaluated_policy
        if directory:
            save_samples(directory, policy, tokens, audio, prompts)
        if not tracking.mlflow_loggers(self):
            return
        with tempfile.TemporaryDirectory() as tmp:
            paths = save_samples(Path(tmp), policy, tokens, audio, prompts)
            tracking.log_files(self, paths, artifact_path)

    @property
    def evaluated_policy(self) -> Policy:
        raise NotImplementedError
