"""The merged evaluator: one point of the quality-diversity plane (paper sections 2.4, 3.4, 3.5).

`MergedEvaluator` evaluates a policy that needs no training, built by a merge recipe
(`suite.policies.recipes`) over the base policy and exports:

- a fine-tuned model or theta_init on its own (one source; `base` is theta_init);
- LERP of eq. (6) `theta = (1 - lambda) theta_q + lambda theta_d` (`method="lerp"`, two
  sources, `lam`), the uniform / weighted soup of section 3.4 (`method="merge"`,
  `coefficients` or 1/k) or SLERP (`method="slerp"`); sources fine-tuned from another base
  model are refused, and what each source is (its beta) comes from its export's record;
- inference-time baselines of section 3.4 / appendix B on any of those: CFG (eq. 1) with
  `gamma` and `negative_prompt` ("" is unconditional prompting) and temperature sampling.

In `test` (or `validate`) it generates for the held-out eval prompts and logs, under the
names the student logs (`suite.metrics.eval_set.EvalMetrics`), quality, MuLan, preference,
pairwise diversity, Vendi, entropy per token, the KL to the CFG teacher of eq. (2) and,
where the policy's world has an oracle, its quality and adherence; plus
`eval/one_minus_mean` (table 1, appendix D.4), FAD against the world's clean reference
audio in E's space and the MuLan-style audio tower's (`eval/fad`, `eval/fad_mulan`, with
the sample counts; appendix G), and side-by-side win rates against a baseline
(`lightning_modules.win_rates`, section 3.5 / appendix E).

Generation counts. `n_vendi_generations` (G, 8 as in table 1) pieces are generated per
prompt; Vendi and 1 - mean use all G (they depend on G, so G is fixed and logged); pairwise
diversity, quality, entropy, FAD and the oracle's scores also use all G. Win rates pair
the first `n_generations` (N) pieces of each prompt with the baseline's N pieces, drawn
with the same seed (common random numbers, `common_random_numbers=True`: the duel then
measures what the models change, and identical models tie exactly) or from a seed of their
own (`False`: independent draws, as two models sampled separately in the paper's human
study; the side-by-side configuration uses them). Bad input is refused before anything is
generated: in `__init__` (recipe, numbers) or in `setup()` (missing exports, other base
models or architectures).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lightning_modules import tracking
from lightning_modules.checks import Checker, plain
from lightning_modules.policy_job import PolicyJob, load_policy
from lightning_modules.win_rates import FadSpaces, WinRates, check_baseline
from suite.artifacts import project_root
from suite.metrics.eval_set import MeanValue
from suite.policies import Policy
from suite.policies.base import NEGATIVE_PROMPT
from suite.policies.exports import save_export, weights_hash
from suite.policies.recipes import BASE, build_merged, check_recipe, load_source
from suite.rollout import one_minus_mean

__all__ = ["MergedEvaluator"]

log = logging.getLogger(__name__)

_EXTRA_SEED = 7_919  # seed offset of the generations beyond the first n_generations
_BASELINE_SEED = 104_729  # seed offset of the baseline's draws without common random numbers


class MergedEvaluator(PolicyJob):
    """Evaluate a (merged) policy on the held-out eval prompts; see the module docstring.

    Args:
        policy: the base policy theta_init as a spec (`suite.policies`): the skeleton every
            source is loaded into, the `base` source, the CFG teacher of `eval/kl_teacher`
            and the default win-rate baseline.
        sources: what is evaluated: exports (`models/beta0-seed0.safetensors`, or an older
            `.pt`), exports logged to MLflow (`runs:/<run_id>/models/beta0-seed0.safetensors`,
            downloaded from the run task's store into `<root>/models/mlflow/`) and/or "base".
        coefficients: weights of `method="merge"` (None: uniform 1/k).
        method: "lerp", "merge", "slerp" or "single" (one source).
        lam: lambda of LERP / SLERP in [0, 1] (0 gives sources[0], 1 sources[1]).
        embedder, scorer, preference: the judges (paths or artifact specs; scorers optional).
        gamma, negative_prompt, temperature: CFG guidance (1 = none), x-, sampling T.
        n_generations: N >= 2, generations per prompt paired in the win rates.
        n_vendi_generations: G >= N, generations per prompt (Vendi / 1 - mean on G).
        teacher_gamma, teacher_negative_prompt: the CFG teacher of eq. (2) for the KL.
        baseline: the win-rate baseline, a dict with "name", "sources" and optionally
            "coefficients", "method", "lambda", "gamma", "negative_prompt", "temperature";
            None = the base model with CFG gamma 3 and "Bad audio quality." at T = 0.99.
        win_rates: compute the win rates (needs a baseline and a world with an oracle).
        quality_tie_margin, diversity_tie_margin, win_rate_resamples: see WinRate.
        common_random_numbers: the baseline draws with A's seed (True) or its own (False).
        fad_reference_size: clean reference clips for FAD (>= 2; 0 disables FAD).
        fad_reference_seed: seed of the reference (not the training corpus's).
        root: project root for the caches (None: the repository).
        omega, eval_seed, n_audio_samples: as the student's.
        samples_dir: also write the samples to this folder.
        export_path: write the evaluated weights there (.safetensors + JSON record).
    """

    OWNER = "MergedEvaluator"

    def __init__(
        self,
        policy: dict,
        sources: list[str],
        coefficients: list[float] | None = None,
        method: str = "lerp",
        lam: float | None = None,
        embedder: str | dict | None = None,
        scorer: str | dict | None = None,
        preference: str | dict | None = None,
        gamma: float = 1.0,
        negative_prompt: str = NEGATIVE_PROMPT,
        temperature: float = 0.99,
        n_generations: int = 2,
        n_vendi_generations: int = 8,
        teacher_gamma: float = 3.0,
        teacher_negative_prompt: str = NEGATIVE_PROMPT,
        baseline: dict | None = None,
        win_rates: bool = True,
        quality_tie_margin: float = 0.02,
        diversity_tie_margin: float = 0.02,
        win_rate_resamples: int = 9999,
        common_random_numbers: bool = True,
        fad_reference_size: int = 256,
        fad_reference_seed: int = 1,
        root: str | None = None,
        omega: float = 5.0,
        eval_seed: int = 0,
        n_audio_samples: int = 4,
        samples_dir: str | None = None,
        export_path: str | None = None,
    ):
        super().__init__()
        check = Checker(self.OWNER)
        policy = check.policy_spec(policy)
        sources, coefficients, lam = check_recipe(
            f"{self.OWNER}: ", plain(sources), plain(coefficients), method, lam
        )
        if embedder is None:
            raise ValueError(f"{self.OWNER}: embedder (E, a path or spec) is required")
        for name, value in (("gamma", gamma), ("teacher_gamma", teacher_gamma)):
            check.number(name, value, 0)
        check.number("temperature", temperature, 0, strict=True)
        check.text("negative_prompt", negative_prompt)
        check.text("teacher_negative_prompt", teacher_negative_prompt)
        for name, value, low in (("n_generations", n_generations, 2),
                                 ("n_vendi_generations", n_vendi_generations, 2),
                                 ("win_rate_resamples", win_rate_resamples, 1),
                                 ("n_audio_samples", n_audio_samples, 0),
                                 ("fad_reference_size", fad_reference_size, 0),
                                 ("fad_reference_seed", fad_reference_seed, 0),
                                 ("eval_seed", eval_seed, 0)):  # fmt: skip
            check.integer(name, value, low)
        check("n_vendi_generations", n_vendi_generations, n_vendi_generations >= n_generations,
              f">= n_generations ({n_generations}): the generations are drawn once and shared")  # fmt: skip
        check("fad_reference_size", fad_reference_size, fad_reference_size != 1,
              "0 (no FAD) or >= 2 (an unbiased covariance)")  # fmt: skip
        check.number("quality_tie_margin", quality_tie_margin, 0)
        check.number("diversity_tie_margin", diversity_tie_margin, 0)
        check.number("omega", omega)
        check("common_random_numbers", common_random_numbers,
              isinstance(common_random_numbers, bool), "true or false")  # fmt: skip
        if export_path is not None:
            check("export_path", export_path, isinstance(export_path, str)
                  and export_path.endswith(".safetensors"), "a path ending in .safetensors or None")  # fmt: skip
        baseline = check_baseline(self.OWNER, plain(baseline), win_rates)
        for source in [*sources, *((baseline or {}).get("sources") or [])]:
            if tracking.is_run_uri(source):  # the form now; the run and file in setup()
                tracking.split_run_uri(source, f"{self.OWNER}: ")
        self.save_hyperparameters(logger=False)
        self.hparams.update(
            policy=policy, sources=sources, coefficients=coefficients, lam=lam, baseline=baseline,
            embedder=plain(embedder), scorer=plain(scorer), preference=plain(preference),
        )  # fmt: skip
        self.coefficients_used: list[float] | None = None
        self.source_info: list[Any] = []
        self._origins: dict[str, str] = {}  # downloaded file -> the runs:/ URI it came from
        self.win: WinRates | None = None
        self.fad: FadSpaces | None = None

    # ------------------------------------------------------------------ models
    @property
    def policy(self) -> Policy:
        """The evaluated (merged) policy."""
        return self._need("policy")

    @property
    def evaluated_policy(self) -> Policy:
        return self.policy

    def _local_source(self, source: str, where: str) -> str:
        """A `runs:/` source as a local file in `<root>/models/mlflow/`; others unchanged."""
        if not tracking.is_run_uri(source):
            return source
        cache = Path(self.hparams.root or project_root()) / "models" / "mlflow"
        local = tracking.resolve_source(source, cache, f"{self.OWNER}: {where}")
        self._origins[local] = source
        return local

    def _recipe(self, base: Policy, base_hash: str, recipe: dict, where: str) -> tuple:
        local = [self._local_source(s, where) for s in recipe["sources"]]
        sources = [load_source(s, base, base_hash, where) for s in local]
        for source in sources:  # an export is never silently stale (issue 21)
            note = tracking.stale_export_note(source.record) if source.path else None
            if note:
                log.warning("%s: %ssource %s may be stale: %s", self.OWNER, where, source.path, note)
        merged, coeffs = build_merged(base, sources, recipe["method"], recipe["coefficients"],
                                      recipe["lambda"], where)  # fmt: skip
        return merged, coeffs, sources

    def setup(self, stage: str | None = None) -> None:
        """Build the base, the evaluated policy, the baseline, the judges, then FAD's reference."""
        if stage == "fit":
            raise ValueError(
                f"{self.OWNER} evaluates and does not train: run `python -m suite test --config ...`"
            )
        hp = self.hparams
        if "teacher" not in self._frozen:
            base = load_policy(hp.policy)
            base_hash = weights_hash(base.trainable.state_dict())
            recipe = {"sources": hp.sources, "method": hp.method,
                      "coefficients": hp.coefficients, "lambda": hp.lam}  # fmt: skip
            policy, self.coefficients_used, self.source_info = self._recipe(base, base_hash, recipe, "")
            self._freeze("policy", policy)
            if hp.baseline is not None:
                self._freeze("baseline", self._recipe(base, base_hash, hp.baseline, "baseline: ")[0])
            self._freeze("teacher", base)
            self._export(base_hash)
        self._setup_judges(self.policy)
        self._setup_eval_metrics()
        if self.fad is None:
            self.one_minus_mean = MeanValue().to(self.device)
            self.fad = FadSpaces(self._frozen, self.device)
            if hp.fad_reference_size:
                self.fad.fill_reference(self.policy, hp.fad_reference_size, hp.fad_reference_seed,
                                        hp.root)  # fmt: skip
            if hp.baseline is not None and self.policy.oracle is None:
                log.warning("%s: the policy's world has no oracle judge: no win rates", self.OWNER)
            elif hp.baseline is not None:
                self.win = WinRates(hp.baseline, self.policy.oracle, hp.quality_tie_margin,
                                    hp.diversity_tie_margin, hp.win_rate_resamples,
                                    hp.eval_seed).to(self.device)  # fmt: skip

    def _export(self, base_hash: str) -> None:
        hp = self.hparams
        rank_zero = self._trainer is None or self.trainer.is_global_zero
        if not hp.export_path or not rank_zero:
            return
        record = {
            "kind": "merge" if len(hp.sources) > 1 else "single",
            "name": Path(hp.export_path).stem,
            "policy": {"name": hp.policy["name"], "architecture": self.policy.architecture()},
            "base_hash": base_hash,
            "method": "single" if len(hp.sources) == 1 else hp.method,
            "lambda": hp.lam,
            "coefficients": self.coefficients_used,
            "sources": [{"source": self._origins.get(str(s.path), str(s.path or BASE)),
                         "label": s.label, "beta": s.beta,
                         "weights_hash": s.record.get("weights_hash"),
                         "mlflow_run_id": s.record.get("mlflow_run_id"),
                         "step": s.record.get("step")} for s in self.source_info],
        }  # fmt: skip
        save_export(self.policy.trainable.state_dict(), hp.export_path, record)
        log.info("exported the evaluated weights to %s", hp.export_path)

    def run_params(self) -> dict[str, str]:
        """The flat params every evaluated run carries (MLflow compare view)."""
        hp = self.hparams
        single = len(hp.sources) == 1
        return {
            "beta": ",".join(s.beta for s in self.source_info),
            "lambda": str(hp.lam),
            "gamma": str(float(hp.gamma)),
            "temperature": str(float(hp.temperature)),
            "sources": ",".join(s.label for s in self.source_info),
            "method": "single" if single else hp.method,
            "baseline": hp.baseline["name"] if hp.baseline else "None",
        }

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_batch(self, prompts: list[str], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate G pieces per prompt, score them into the metrics; (tokens, audio)."""
        hp = self.hparams
        policy, teacher = self.policy, self.teacher
        cond = self.encode(policy, prompts)
        N, G, T = hp.n_generations, hp.n_vendi_generations, hp.temperature
        draw = dict(temperature=T, gamma=float(hp.gamma), neg=self.negative(policy, hp.negative_prompt))
        tokens, logits = self.sample_eval(policy, cond, N, seed, **draw)
        if G > N:  # the extra generations, from their own seed (module docstring)
            more, more_logits = self.sample_eval(policy, cond, G - N, seed + _EXTRA_SEED, **draw)
            tokens = torch.cat([tokens, more], dim=1)  # [P, G, K, L]
            logits = torch.cat([logits, more_logits], dim=1)  # [P, G, K, L, V]
        teacher_spec = (teacher, float(hp.teacher_gamma),
                        self.negative(teacher, hp.teacher_negative_prompt))  # fmt: skip
        out = self.score_generations(policy, prompts, cond, tokens, logits, T, teacher_spec)
        self.one_minus_mean.update(one_minus_mean(out["embeddings"]))
        self.fad.update(out["audio"], out["embeddings"])
        if self.win is not None:
            b = hp.baseline
            baseline = self._need("baseline")
            base_seed = seed if hp.common_random_numbers else seed + _BASELINE_SEED
            base_tokens, _ = self.sample_eval(
                baseline, cond, N, base_seed, temperature=b["temperature"], gamma=b["gamma"],
                neg=self.negative(baseline, b["negative_prompt"]),
            )  # [P, N, K, L]  # fmt: skip
            self.win.update(tokens[:, :N], base_tokens, prompts)
        return tokens, out["audio"]

    @property
    def teacher(self) -> Policy:
        return self._need("teacher")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_test_start(self) -> None:
        from lightning_modules import tracking

        tracking.log_missing_params(self, self.run_params())
        self._log_job_params()

    on_validation_start = on_test_start

    def compute_metrics(self) -> dict[str, float]:
        """Every metric of the evaluation so far (synchronised across processes)."""
        values = self.eval_metrics.compute()
        values["eval/one_minus_mean"] = float(self.one_minus_mean.compute())
        values["eval/n_vendi_generations"] = float(self.hparams.n_vendi_generations)
        values.update(self.fad.compute())
        if self.win is not None:
            values.update(self.win.compute())
        return values

    def _epoch_end(self) -> None:
        values = self.compute_metrics()
        self.eval_metrics.reset()
        self.one_minus_mean.reset()
        self.fad.reset()
        if self.win is not None:
            self.win.reset()
        self.log_eval(values, "samples", self.hparams.samples_dir)

    def on_test_epoch_end(self) -> None:
        self._epoch_end()

    def on_validation_epoch_end(self) -> None:
        self._epoch_end()
