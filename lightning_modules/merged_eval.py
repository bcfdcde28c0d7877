"""The merged evaluator: one point of the quality-diversity plane (paper sections 2.4, 3.4, 3.5).

`MergedEvaluator` evaluates a policy that needs no training:

- a fine-tuned model or theta_init on its own (one source);
- a weight interpolation of fine-tuned models, LERP of eq. (6)
  `theta = (1 - lambda) theta_q + lambda theta_d` (`method="lerp"`, two sources, `lam`),
  the uniform / weighted soup of section 3.4 (`method="merge"`, `coefficients` or 1/k) or
  SLERP (`method="slerp"`, an extra); the merge is `suite.merging`'s, which checks keys,
  shapes and dtypes and names any mismatch;
- inference-time baselines of section 3.4 / appendix B on any of those: CFG (eq. 1) with
  `gamma` and `negative_prompt` ("" is unconditional prompting) and temperature sampling.

In `test` (or `validate`) it generates for the held-out eval prompts and logs, under the
names the student logs (`lightning_modules.evaluation.EvalMetrics`), quality
(`omega * MuLan + preference`), MuLan, preference, pairwise diversity, Vendi, entropy per
token, the oracle's quality and adherence, the KL to the CFG teacher of eq. (2), plus:

- `eval/one_minus_mean`: table 1's "1 - mean" of the similarity matrix (appendix D.4);
- `eval/fad`, `eval/fad_mulan`, `eval/fad_n`, `eval/fad_n_ref`: FAD (appendix G) against a
  held-out reference of clean corpus pieces, in E's space and in the MuLan-style audio
  tower's space, with the sample counts (FAD is biased by n);
- side-by-side win rates of section 3.5 / appendix E against a named baseline (base model
  with CFG gamma 3 and the negative prompt by default), the oracle judge standing in for
  raters: `eval/winrate_quality*` (judge's overall score of generation k of each model for
  the same prompt) and `eval/winrate_diversity*` (the musical distance `oracle.distance`
  between the generations of a prompt, against the baseline's), each with wins, losses,
  ties, n, paired t-test, Wilcoxon and sign-test p-values and a bootstrap CI.

Generation counts. `n_vendi_generations` (G, 8 as in table 1) pieces are generated per
prompt; Vendi and 1 - mean use all G (they depend on G, so G is fixed and logged); pairwise
diversity, quality, entropy, FAD and the oracle's scores also use all G (their expectations
do not depend on G: pairwise diversity is the mean over pairs of i.i.d. generations, the
student's N = 2 value estimates the same number with more variance). Win rates pair the
first `n_generations` (N) pieces of each prompt with the baseline's N pieces. Those first N
are drawn with the same seed as the baseline's (common random numbers): a model compared
with itself ties every pair, exactly.

FAD reference. `fad_reference_size` clean (flaw-free) pieces of the corpus composed with
seed `fad_reference_seed` (default 1), in piece order. Every job of the suite trains on
corpus seed 0 (`conf/artifacts/tiny.yaml`: corpus.seed); piece i of seed s comes from its
own generator `default_rng([s, i])`, so seed 1 shares no piece with training. The pieces
are composed (cached under `<root>/artifacts/music_corpus/`), rendered and embedded once
per job at setup; under DDP each rank adds its share.

Bad input is refused before anything is generated: an empty `sources`, lambda outside
[0, 1], coefficients that do not fit the method (in `__init__`); a missing checkpoint
(naming the command that makes it) and checkpoints of different architectures (naming the
keys) in `setup()`. Models are built in `setup()` (construction stays cheap, as for every
job). The merged weights can be exported as safetensors with a JSON record
(`suite.merging.save_merged`) via `export_path`, and a few generations are kept as WAV +
MIDI (MLflow artifacts `samples/`, and `samples_dir` if given).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from tqdm.auto import tqdm

from lightning_modules.artifacts import _plain, resolve
from lightning_modules.evaluation import (
    EvalMetrics,
    FrozenModels,
    MeanValue,
    embed_audio,
    frozen,
    generate,
    kl_to_teacher,
    load_audio_judge,
    one_minus_mean,
    render_audio,
    save_samples,
    teacher_logits,
)
from suite import merging
from suite.metrics import FrechetAudioDistance, WinRate
from suite.models.lm import COND_DIM, TokenLM, load_lm
from suite.music import oracle
from suite.music.prompts import NEGATIVE_PROMPT
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE, allowed_mask

__all__ = ["METHODS", "MergedEvaluator", "build_policy", "describe_sources"]

log = logging.getLogger(__name__)

METHODS = ("single", "lerp", "merge", "slerp")
BASE = "base"  # a source naming theta_init (the `base_lm` argument)
_OWNER = "MergedEvaluator"
_BETA_FILE = re.compile(r"beta(\d+(?:\.\d+)?)-seed(\d+)")
# Seed offset of the generations beyond the first n_generations (see the module docstring).
_EXTRA_SEED = 7_919
DEFAULT_BASELINE = {
    "name": "cfg3",
    "sources": [BASE],
    "gamma": 3.0,
    "negative_prompt": NEGATIVE_PROMPT,
}


# --------------------------------------------------------------------------------------------
# Building a policy from sources (no Lightning state; used for the model and the baseline)
# --------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
    raise ValueError(f"{_OWNER}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_recipe(
    where: str,
    sources: Any,
    coefficients: Any,
    method: str,
    lam: Any,
    base_lm: Any,
) -> tuple[list[str | dict], list[float] | None, float | None]:
    """Validate a merge recipe; returns plain (sources, coefficients, lam). Raises ValueError."""
    sources = _plain(sources) if sources is not None else None
    if isinstance(sources, str | dict):
        sources = [sources]
    if not isinstance(sources, list) or not sources:
        _fail(f"{where}sources must be a non-empty list of checkpoints, got {sources!r}")
    for i, src in enumerate(sources):
        if not (isinstance(src, dict) or (isinstance(src, str) and src)):
            _fail(f"{where}sources[{i}] must be a checkpoint path, '{BASE}' or a base_lm spec, "
                  f"got {src!r}")  # fmt: skip
        if src == BASE and base_lm is None:
            _fail(f"{where}sources[{i}] is '{BASE}' but no base_lm is given")
    if method not in METHODS:
        _fail(f"{where}method must be one of {METHODS}, got {method!r}")
    if lam is not None:
        if not _is_number(lam):
            _fail(f"{where}lambda must be a number in [0, 1], got {lam!r}")
        lam = float(lam)
        if not 0.0 <= lam <= 1.0:
            _fail(f"{where}lambda must be in [0, 1], got {lam}")
    if coefficients is not None:
        coefficients = _plain(coefficients)
        if not isinstance(coefficients, list) or not all(_is_number(c) for c in coefficients):
            _fail(f"{where}coefficients must be a list of numbers, got {coefficients!r}")
        coefficients = [float(c) for c in coefficients]
    k = len(sources)
    if method == "single" and k != 1:
        _fail(f"{where}method 'single' evaluates one source, got {k}: {sources}")
    if k == 1:
        if lam is not None:
            _fail(f"{where}lambda={lam} needs two sources to interpolate, got one: {sources}")
        if coefficients not in (None, [1.0]):
            _fail(f"{where}one source takes no coefficients (or [1.0]), got {coefficients}")
        return sources, None, None
    if method in ("lerp", "slerp"):
        if k != 2:
            _fail(f"{where}method {method!r} interpolates two sources, got {k}: {sources}")
        if lam is None:
            _fail(f"{where}method {method!r} needs lambda in [0, 1] (lambda is null)")
        if coefficients is not None:
            _fail(f"{where}method {method!r} takes lambda, not coefficients ({coefficients})")
        return sources, None, lam
    if lam is not None:
        _fail(f"{where}method 'merge' takes coefficients (or none: uniform), not lambda={lam}")
    if coefficients is not None:
        if len(coefficients) != k:
            _fail(f"{where}{len(coefficients)} coefficients for {k} sources")
        if any(c < 0 for c in coefficients) or abs(sum(coefficients) - 1.0) > 1e-6:
            _fail(f"{where}coefficients must be >= 0 and sum to 1, got {coefficients}")
    return sources, coefficients, None


def source_label(source: str | dict) -> str:
    """Short name of a source: the file stem (`beta15-seed0`), or `base` for theta_init."""
    if source == BASE or isinstance(source, dict):
        return BASE
    return Path(source).stem


def describe_sources(sources: Sequence[str | dict]) -> dict[str, str]:
    """`sources` and `beta` params of a recipe: labels, and betas read from `beta<b>-seed<s>`
    file names (`base` for theta_init, `?` for a file named otherwise)."""
    labels = [source_label(s) for s in sources]
    betas = []
    for label in labels:
        match = _BETA_FILE.search(label)
        betas.append(BASE if label == BASE else match.group(1) if match else "?")
    return {"sources": ",".join(labels), "beta": ",".join(betas)}


def missing_checkpoint_hint(path: Path) -> str:
    """The command that makes a missing checkpoint (the student exports `beta<b>-seed<s>.pt`)."""
    match = _BETA_FILE.search(path.name)
    if match:
        beta, seed = match.groups()
        conf = Path("conf") / f"beta{beta}.yaml"
        one = (
            f"python -m suite fit --config {conf} seed={seed}"
            if beta in ("0", "5", "10", "15")
            else f"python -m suite fit --config conf/beta15.yaml diversity.beta={beta} seed={seed}"
        )
        return (
            f"run `{one}` (or `python -m suite fit --config sweeps/beta.yaml` for all betas) first"
        )
    return "train or export that model first (a TokenLM.save file or a PretrainLM checkpoint)"


def resolve_source(source: str | dict, base_lm: str | dict | None, where: str) -> Path:
    """Checkpoint file of a source: `base` -> base_lm; dict -> a base_lm artifact; str -> file."""
    if source == BASE:
        source = base_lm
    if isinstance(source, dict):
        return Path(resolve("base_lm", source))
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{_OWNER}: {where}checkpoint not found: {path}; {missing_checkpoint_hint(path)}"
        )
    return path


def load_policy_lm(path: Path, where: str) -> TokenLM:
    """A TokenLM of the music world from `path` (refusing another vocabulary / length)."""
    model = load_lm(path)
    if model.vocab_size != VOCAB_SIZE or model.seq_len != SEQ_LEN or model.cond_dim != COND_DIM:
        _fail(
            f"{where}{path} has vocab_size={model.vocab_size}, seq_len={model.seq_len}, "
            f"cond_dim={model.cond_dim}; the music world needs {VOCAB_SIZE}, {SEQ_LEN}, {COND_DIM}"
        )
    return model


def build_policy(
    paths: Sequence[Path],
    method: str,
    coefficients: Sequence[float] | None,
    lam: float | None,
    where: str = "",
) -> tuple[TokenLM, list[float]]:
    """Load the sources and merge them: returns (model, the coefficient of each source).

    One source is returned as loaded. Otherwise every source must have the same
    architecture (TokenLM config, and the state dicts' keys / shapes / dtypes, checked by
    `suite.merging`); the error names the differing config keys and state-dict keys.
    """
    models = [load_policy_lm(p, where) for p in paths]
    if len(models) == 1:
        return models[0], [1.0]
    ref = models[0].config
    states = [m.state_dict() for m in models]
    for path, model in zip(paths[1:], models[1:]):
        diff = {k: (ref[k], v) for k, v in model.config.items() if k != "dropout" and ref[k] != v}
        try:
            merging._check_compatible(
                "merge", [states[0], model.state_dict()], [str(paths[0]), str(path)]
            )
        except ValueError as err:
            detail = ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{_OWNER}: {where}cannot merge checkpoints of different architectures "
                f"({paths[0]} vs {path}; config {detail or 'keys differ'}). {err}"
            ) from err
        if diff:
            _fail(f"{where}{paths[0]} and {path} differ in architecture config {diff}")
    if method == "lerp":
        merged, coeffs = merging.lerp(states[0], states[1], lam), [1.0 - lam, lam]
    elif method == "slerp":
        merged, coeffs = merging.slerp(states[0], states[1], lam), [1.0 - lam, lam]
    else:
        coeffs = (
            list(coefficients) if coefficients is not None else [1.0 / len(states)] * len(states)
        )
        merged = merging.merge(states, coeffs)
    model = TokenLM.from_config(dict(ref))
    model.load_state_dict_checked(merged)
    return model.eval(), coeffs


def _encode_prompt(prompt: str) -> torch.Tensor:
    """A prompt as a condition `[C]`; "" is the all-zero null row (unconditional CFG)."""
    from lightning_modules.student import DistillStudent

    return DistillStudent.encode_negative_prompt(prompt)


# --------------------------------------------------------------------------------------------
# The LightningModule
# --------------------------------------------------------------------------------------------


class MergedEvaluator(FrozenModels, L.LightningModule):
    """Evaluate a (merged) policy on the held-out eval prompts; see the module docstring.

    Args:
        sources: checkpoints of the evaluated model: TokenLM files (e.g.
            `models/beta0-seed0.pt`), "base" (= `base_lm`) or a base_lm artifact spec.
        coefficients: weights of `method="merge"` (None: uniform 1/k).
        method: "lerp" (eq. 6, two sources, `lam`), "merge" (weighted / uniform average),
            "slerp" (two sources, `lam`) or "single" (one source; any method is ignored then).
        lam: lambda of LERP / SLERP in [0, 1] (0 gives sources[0], 1 sources[1]).
        base_lm: theta_init (path or spec): the "base" source, the CFG teacher of
            `eval/kl_teacher` and the default win-rate baseline. None: no KL, and no
            default baseline.
        embedder: the diversity embedder E (path or spec).
        scorer, preference: MuLan-style scorer and preference model (path / spec) or None.
        gamma: CFG guidance at inference (1 = no CFG).
        negative_prompt: x- of CFG ("" = unconditional prompting).
        temperature: sampling temperature T (paper: 0.99).
        n_generations: N >= 2, generations per prompt paired in the win rates.
        n_vendi_generations: G >= N, generations per prompt (Vendi / 1 - mean on G; table 1: 8).
        teacher_gamma, teacher_negative_prompt: the CFG teacher of eq. (2) for the KL.
        baseline: the win-rate baseline, a dict with "name", "sources" and optionally
            "coefficients", "method", "lambda", "gamma", "negative_prompt", "temperature";
            None = base model with CFG gamma 3 and "Bad audio quality." at T = 0.99.
        win_rates: compute the win rates (needs a baseline).
        quality_tie_margin, diversity_tie_margin: score differences counted as ties.
        win_rate_resamples: bootstrap resamples of the win rates' CI.
        fad_reference_size: clean reference pieces for FAD (>= 2; 0 disables FAD).
        fad_reference_seed: corpus seed of the reference pieces (not the training seed).
        root: project root for the artifact / corpus caches (None: the repository).
        omega: quality = omega * MuLan + preference.
        eval_seed: seed of the generations (same draws for every evaluated model).
        use_grammar_mask: mask every position to its token type while sampling.
        n_audio_samples: WAV + MIDI samples (first generation of the first prompts) kept.
        samples_dir: also write those samples to this folder.
        export_path: write the evaluated (merged) weights there as safetensors + JSON record.
    """

    def __init__(
        self,
        sources: list[str | dict],
        coefficients: list[float] | None = None,
        method: str = "lerp",
        lam: float | None = None,
        base_lm: str | dict | None = None,
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
        quality_tie_margin: float = oracle.TIE_MARGIN,
        diversity_tie_margin: float = 0.02,
        win_rate_resamples: int = 9999,
        fad_reference_size: int = 256,
        fad_reference_seed: int = 1,
        root: str | None = None,
        omega: float = 5.0,
        eval_seed: int = 0,
        use_grammar_mask: bool = True,
        n_audio_samples: int = 4,
        samples_dir: str | None = None,
        export_path: str | None = None,
    ):
        super().__init__()
        base_lm = _plain(base_lm)
        sources, coefficients, lam = check_recipe("", sources, coefficients, method, lam, base_lm)
        if embedder is None:
            raise ValueError(f"{_OWNER}: embedder (E, a path or spec) is required")
        for name, value in (("gamma", gamma), ("teacher_gamma", teacher_gamma)):
            if not (_is_number(value) and value >= 0):
                _fail(f"{name} must be a finite number >= 0, got {value!r}")
        if not (_is_number(temperature) and temperature > 0):
            _fail(f"temperature must be a finite number > 0, got {temperature!r}")
        for name, value in (("negative_prompt", negative_prompt),
                            ("teacher_negative_prompt", teacher_negative_prompt)):  # fmt: skip
            if not isinstance(value, str):
                raise TypeError(f"{_OWNER}: {name} must be a str, got {value!r}")
        ints = {"n_generations": (n_generations, 2), "n_vendi_generations": (n_vendi_generations, 2),
                "win_rate_resamples": (win_rate_resamples, 1), "n_audio_samples": (n_audio_samples, 0),
                "fad_reference_size": (fad_reference_size, 0), "fad_reference_seed": (fad_reference_seed, 0),
                "eval_seed": (eval_seed, 0)}  # fmt: skip
        for name, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                _fail(f"{name} must be an int >= {low}, got {value!r}")
        if n_vendi_generations < n_generations:
            _fail(f"n_vendi_generations ({n_vendi_generations}) must be >= n_generations "
                  f"({n_generations}): the generations are drawn once and shared")  # fmt: skip
        if fad_reference_size == 1:
            _fail("fad_reference_size must be 0 (no FAD) or >= 2 (an unbiased covariance)")
        for name, value in (("quality_tie_margin", quality_tie_margin),
                            ("diversity_tie_margin", diversity_tie_margin)):  # fmt: skip
            if not (_is_number(value) and value >= 0):
                _fail(f"{name} must be a finite number >= 0, got {value!r}")
        if not _is_number(omega):
            _fail(f"omega must be a finite number, got {omega!r}")
        baseline = self._check_baseline(_plain(baseline), base_lm, win_rates)
        self.save_hyperparameters(logger=False)
        self.hparams.update(
            sources=sources, coefficients=coefficients, lam=lam, base_lm=base_lm,
            embedder=_plain(embedder), scorer=_plain(scorer), preference=_plain(preference),
            baseline=baseline,
        )  # fmt: skip

        # Construction stays cheap: every model is loaded in setup().
        self._frozen: dict[str, nn.Module] = {}
        self.coefficients_used: list[float] | None = None
        self.eval_metrics: EvalMetrics | None = None
        self.register_buffer(
            "allowed", allowed_mask().clone() if use_grammar_mask else None, persistent=False
        )  # [L, V] bool
        self.register_buffer("neg_cond", torch.zeros(COND_DIM), persistent=False)  # [C]
        self.register_buffer("teacher_neg", torch.zeros(COND_DIM), persistent=False)  # [C]
        self.register_buffer("baseline_neg", torch.zeros(COND_DIM), persistent=False)  # [C]
        self._samples: list[tuple[torch.Tensor, torch.Tensor, str]] = []

    @staticmethod
    def _check_baseline(baseline: dict | None, base_lm: Any, win_rates: bool) -> dict | None:
        if not win_rates:
            return None
        if baseline is None:
            if base_lm is None:
                _fail("the default win-rate baseline is the base model with CFG: give base_lm, "
                      "a baseline dict, or win_rates=False")  # fmt: skip
            baseline = dict(DEFAULT_BASELINE)
        if not isinstance(baseline, dict):
            raise TypeError(f"{_OWNER}: baseline must be a dict or None, got {baseline!r}")
        allowed = {"name", "sources", "coefficients", "method", "lambda", "gamma",
                   "negative_prompt", "temperature"}  # fmt: skip
        unknown = sorted(set(baseline) - allowed)
        if unknown:
            _fail(f"baseline has unknown keys {unknown}; allowed: {sorted(allowed)}")
        if not isinstance(baseline.get("name"), str) or not baseline["name"]:
            _fail(f"baseline needs a non-empty 'name', got {baseline.get('name')!r}")
        out = {
            "name": baseline["name"],
            "method": baseline.get("method", "lerp"),
            "gamma": float(baseline.get("gamma", 1.0)),
            "negative_prompt": baseline.get("negative_prompt", NEGATIVE_PROMPT),
            "temperature": float(baseline.get("temperature", 0.99)),
        }
        out["sources"], out["coefficients"], out["lambda"] = check_recipe(
            "baseline: ", baseline.get("sources"), baseline.get("coefficients"), out["method"],
            baseline.get("lambda"), base_lm,
        )  # fmt: skip
        if out["gamma"] < 0 or out["temperature"] <= 0:
            _fail(f"baseline gamma must be >= 0 and temperature > 0, got {out}")
        return out

    # ------------------------------------------------------------------ frozen models
    @property
    def policy(self) -> TokenLM:
        """The evaluated (merged) model."""
        return self._need("policy")

    def run_params(self) -> dict[str, str]:
        """The flat params every evaluated run carries (MLflow compare view)."""
        hp = self.hparams
        described = describe_sources(hp.sources)
        single = len(hp.sources) == 1
        return {
            "beta": described["beta"],
            "lambda": str(hp.lam),
            "gamma": str(float(hp.gamma)),
            "temperature": str(float(hp.temperature)),
            "sources": described["sources"],
            "method": "single" if single else hp.method,
            "baseline": hp.baseline["name"] if hp.baseline else "None",
        }

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Build the artifacts (base LM, E, scorers) if missing; fine-tuned files must exist."""
        hp = self.hparams
        for kind in ("embedder", "scorer", "preference"):
            if hp[kind] is not None:
                resolve(kind, hp[kind])
        if hp.base_lm is not None:
            resolve("base_lm", hp.base_lm)

    def setup(self, stage: str | None = None) -> None:
        """Resolve and build every model, then the FAD reference; fails before generating."""
        if stage == "fit":
            raise ValueError(
                f"{_OWNER} evaluates and does not train: run `python -m suite test --config ...`"
            )
        hp = self.hparams
        if "policy" not in self._frozen:
            paths = [resolve_source(s, hp.base_lm, "") for s in hp.sources]
            policy, coeffs = build_policy(paths, hp.method, hp.coefficients, hp.lam)
            self.coefficients_used = coeffs
            self._freeze("policy", policy)
            self._export(paths, coeffs)
        if hp.baseline is not None and "baseline" not in self._frozen:
            b = hp.baseline
            paths = [resolve_source(s, hp.base_lm, "baseline: ") for s in b["sources"]]
            model, _ = build_policy(
                paths, b["method"], b["coefficients"], b["lambda"], "baseline: "
            )
            self._freeze("baseline", model)
            self.baseline_neg.copy_(_encode_prompt(b["negative_prompt"]).to(self.baseline_neg))
        if hp.base_lm is not None and "teacher" not in self._frozen:
            path = resolve_source(BASE, hp.base_lm, "base_lm: ")
            self._freeze("teacher", load_policy_lm(path, "base_lm: "))
            self.teacher_neg.copy_(_encode_prompt(hp.teacher_negative_prompt).to(self.teacher_neg))
        self._setup_judges()
        self.neg_cond.copy_(_encode_prompt(hp.negative_prompt).to(self.neg_cond))
        if self.eval_metrics is None:
            self._setup_metrics()

    def _setup_judges(self) -> None:
        from suite.models.preference import PreferenceModel
        from suite.models.scorer import MuLanScorer
        from suite.models.vit import AudioEmbedder

        hp = self.hparams
        for kind, cls in (("embedder", AudioEmbedder), ("scorer", MuLanScorer),
                          ("preference", PreferenceModel)):  # fmt: skip
            if hp[kind] is not None and kind not in self._frozen:
                self._freeze(kind, load_audio_judge(cls, resolve(kind, hp[kind]), kind, _OWNER))

    def _setup_metrics(self) -> None:
        hp = self.hparams
        self.eval_metrics = EvalMetrics(
            self._frozen.get("scorer"), self._frozen.get("preference"), omega=hp.omega
        ).to(self.device)
        self.one_minus_mean = MeanValue().to(self.device)
        self.fads = nn.ModuleDict()
        if hp.fad_reference_size:
            self._fill_fad_reference()
        self.win_quality = self.win_diversity = None
        if hp.baseline is not None:
            kw = dict(num_resamples=hp.win_rate_resamples, seed=hp.eval_seed)
            self.win_quality = WinRate(tie_margin=hp.quality_tie_margin, **kw).to(self.device)
            self.win_diversity = WinRate(tie_margin=hp.diversity_tie_margin, **kw).to(self.device)

    def _embedders(self) -> dict[str, Any]:
        """FAD spaces: E's, and the MuLan-style scorer's audio tower when a scorer is given."""
        spaces = {"fad": self._frozen["embedder"]}
        if "scorer" in self._frozen:
            spaces["fad_mulan"] = _AudioTower(self._frozen["scorer"])
        return spaces

    def _fill_fad_reference(self) -> None:
        """Render and embed the clean held-out reference pieces (module docstring)."""
        tokens = fad_reference_tokens(
            self.hparams.fad_reference_size, self.hparams.fad_reference_seed, self.hparams.root
        )  # [R, L]
        rank, world = self.global_rank, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
        tokens = tokens[rank::world]  # each rank adds its share; the sync sums them
        for name, model in self._embedders().items():
            self.fads[name] = FrechetAudioDistance(
                num_features=_width(model), reset_real_features=False
            ).to(self.device)
        chunk = 32
        for start in tqdm(range(0, tokens.shape[0], chunk), desc="FAD reference (render, embed)",
                          unit="chunk", disable=tokens.shape[0] <= chunk):  # fmt: skip
            audio = render_audio(tokens[start : start + chunk].to(self.device))  # [c, S]
            for name, model in self._embedders().items():
                self.fads[name].update(embed_audio(model, audio).to(self.device), real=True)

    def _export(self, paths: list[Path], coeffs: list[float]) -> None:
        hp = self.hparams
        rank_zero = self._trainer is None or self.trainer.is_global_zero
        if not hp.export_path or not rank_zero:
            return
        export = Path(hp.export_path)
        export.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "sources": [str(p) for p in paths],
            "labels": [source_label(s) for s in hp.sources],
            "coefficients": coeffs,
            "method": "single" if len(paths) == 1 else hp.method,
            "lambda": hp.lam,
            "config": dict(self.policy.config),
        }
        merging.save_merged(self.policy.state_dict(), export, record)
        log.info("exported the evaluated weights to %s", export)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_batch(
        self, cond: torch.Tensor, prompts: list[str], seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate G pieces per prompt, score them into the metrics; (tokens, audio)."""
        hp = self.hparams
        cond = cond.to(device=self.device, dtype=torch.float32)  # [P, C]
        P, N, G, T = cond.shape[0], hp.n_generations, hp.n_vendi_generations, hp.temperature
        draw = dict(temperature=T, gamma=float(hp.gamma), neg_cond=self.neg_cond,
                    allowed=self.allowed, return_logits=True)  # fmt: skip
        tokens, logits = generate(self.policy, cond, N, generator=self._gen(seed), **draw)
        if G > N:  # the extra generations, from their own seed (module docstring)
            more, more_logits = generate(
                self.policy, cond, G - N, generator=self._gen(seed + _EXTRA_SEED), **draw
            )
            tokens = torch.cat([tokens, more], dim=1)  # [P, G, L]
            logits = torch.cat([logits, more_logits], dim=1)  # [P, G, L, V]
        kl = None
        if "teacher" in self._frozen:
            flat = tokens.reshape(P * G, -1)  # [P*G, L]
            rows = cond.repeat_interleave(G, dim=0)  # [P*G, C]
            t_logits = teacher_logits(
                self._frozen["teacher"], flat, rows, gamma=float(hp.teacher_gamma),
                neg_cond=self.teacher_neg, allowed=self.allowed,
            )  # [P*G, L, V]  # fmt: skip
            kl = kl_to_teacher(logits.reshape(P * G, *logits.shape[2:]), t_logits, T, self.allowed)
            kl = kl.view(P, G)
        audio = render_audio(tokens)  # [P, G, S]
        emb = embed_audio(self._frozen["embedder"], audio)  # [P, G, D]
        self.eval_metrics.update(tokens, prompts, audio, emb, logits=logits, temperature=T, kl=kl)
        self.one_minus_mean.update(one_minus_mean(emb))
        for name, model in self._embedders().items():
            if name in self.fads:
                feats = emb if name == "fad" else embed_audio(model, audio)
                self.fads[name].update(feats.reshape(P * G, -1), real=False)
        if self.win_quality is not None:
            self._update_win_rates(cond, prompts, tokens[:, :N], seed)
        return tokens, audio

    def _gen(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def _update_win_rates(
        self, cond: torch.Tensor, prompts: list[str], tokens: torch.Tensor, seed: int
    ) -> None:
        """Side-by-side oracle judgements of the first N pieces against the baseline's."""
        b = self.hparams.baseline
        N = tokens.shape[1]
        base_tokens, _ = generate(
            self._frozen["baseline"], cond, N, temperature=b["temperature"], gamma=b["gamma"],
            neg_cond=self.baseline_neg, allowed=self.allowed, generator=self._gen(seed),
        )  # [P, N, L]  # fmt: skip
        attrs = [oracle.parse_prompt(p) for p in prompts]
        rows = [a for a in attrs for _ in range(N)]
        L_ = tokens.shape[-1]
        ours = oracle.judge_batch(tokens.reshape(-1, L_), rows)
        theirs = oracle.judge_batch(base_tokens.reshape(-1, L_), rows)
        self.win_quality.update(
            torch.tensor([j.overall for j in ours], dtype=torch.float64),
            torch.tensor([j.overall for j in theirs], dtype=torch.float64),
        )
        self.win_diversity.update(_pair_distances(tokens), _pair_distances(base_tokens))

    def _eval_step(self, batch: dict, batch_idx: int) -> None:
        if "prompt" not in batch or "cond" not in batch:
            raise ValueError(
                f"{_OWNER}: expected a prompt batch with 'prompt' and 'cond', got keys "
                f"{sorted(batch)}"
            )
        prompts = list(batch["prompt"])
        seed = self.hparams.eval_seed + 100_003 * self.global_rank + batch_idx
        tokens, audio = self.evaluate_batch(batch["cond"], prompts, seed)
        want = self.hparams.n_audio_samples - len(self._samples)
        if want > 0 and self.global_rank == 0:
            for p in range(min(want, tokens.shape[0])):
                self._samples.append((tokens[p, 0].cpu(), audio[p, 0].cpu(), prompts[p]))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_test_start(self) -> None:
        self._log_run_params()

    def on_validation_start(self) -> None:
        self._log_run_params()

    def compute_metrics(self) -> dict[str, float]:
        """Every metric of the evaluation so far (synchronised across processes)."""
        values = self.eval_metrics.compute()
        values["eval/one_minus_mean"] = float(self.one_minus_mean.compute())
        values["eval/n_vendi_generations"] = float(self.hparams.n_vendi_generations)
        for name, fad in self.fads.items():
            values[f"eval/{name}"] = float(fad.compute())
            if name == "fad":
                values["eval/fad_n"], values["eval/fad_n_ref"] = (
                    float(fad.n_fake),
                    float(fad.n_real),
                )
        for kind, metric in (("quality", self.win_quality), ("diversity", self.win_diversity)):
            if metric is None:
                continue
            result = metric.compute()
            values[f"eval/winrate_{kind}"] = float(result["win_rate"])
            for key in ("wins", "losses", "ties", "n", "p_ttest", "p_wilcoxon", "p_sign",
                        "ci_low", "ci_high"):  # fmt: skip
                values[f"eval/winrate_{kind}_{key}"] = float(result[key])
        return values

    def _reset_metrics(self) -> None:
        self.eval_metrics.reset()
        self.one_minus_mean.reset()
        for fad in self.fads.values():
            fad.reset()  # keeps the reference side
        for metric in (self.win_quality, self.win_diversity):
            if metric is not None:
                metric.reset()

    def _epoch_end(self) -> None:
        values = self.compute_metrics()
        self._reset_metrics()
        for name, value in values.items():
            # NaN p-values (degenerate pairs) are logged as they are: MLflow keeps NaN.
            self.log(name, value, sync_dist=False, rank_zero_only=True)
        samples, self._samples = self._samples, []
        if samples:
            self._write_samples(samples)

    def on_test_epoch_end(self) -> None:
        self._epoch_end()

    def on_validation_epoch_end(self) -> None:
        self._epoch_end()

    # ------------------------------------------------------------------ logging helpers
    def _mlflow_loggers(self) -> list:
        from lightning.pytorch.loggers import MLFlowLogger

        return [lg for lg in self.loggers if isinstance(lg, MLFlowLogger)]

    def _log_run_params(self) -> None:
        """Log beta, lambda, gamma, temperature, sources, method, baseline if the run lacks
        them (the run task already logs them from the config; MLflow refuses to change one)."""
        if self.global_rank != 0:
            return
        params = self.run_params()
        for logger in self.loggers:
            if logger in self._mlflow_loggers():
                known = logger.experiment.get_run(logger.run_id).data.params
                missing = {k: v for k, v in params.items() if k not in known}
                if missing:
                    logger.log_hyperparams(missing)
            else:
                logger.log_hyperparams(params)

    def _write_samples(self, samples: list[tuple[torch.Tensor, torch.Tensor, str]]) -> None:
        import tempfile

        tokens = torch.stack([s[0] for s in samples])  # [K, L]
        audio = torch.stack([s[1] for s in samples])  # [K, S]
        prompts = [s[2] for s in samples]
        if self.hparams.samples_dir:
            save_samples(self.hparams.samples_dir, tokens, audio, prompts)
        loggers = self._mlflow_loggers()
        if not loggers:
            return
        with tempfile.TemporaryDirectory() as tmp:
            paths = save_samples(tmp, tokens, audio, prompts)
            for logger in loggers:
                for path in paths:
                    logger.experiment.log_artifact(
                        logger.run_id, str(path), artifact_path="samples"
                    )


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


class _AudioTower(nn.Module):
    """The MuLan-style scorer's audio tower as an embedder `[B, S] -> [B, D]` (for FAD)."""

    def __init__(self, scorer: nn.Module):
        super().__init__()
        object.__setattr__(self, "scorer", scorer)  # not a submodule: it stays frozen elsewhere

    def parameters(self, recurse: bool = True):
        return self.scorer.parameters(recurse)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.scorer.embed_audio(audio)


def _width(embedder: nn.Module) -> int:
    """Output width of an audio embedder (one silent clip through it)."""
    from suite.music.render import AUDIO_SAMPLES

    param = next(embedder.parameters())
    with frozen(embedder if isinstance(embedder, nn.Module) else None):
        return int(embedder(torch.zeros(1, AUDIO_SAMPLES, device=param.device)).shape[-1])


def _pair_distances(tokens: torch.Tensor) -> torch.Tensor:
    """Mean `oracle.distance` over the pairs of each prompt's generations: `[P, N, L] -> [P]`."""
    rows = tokens.detach().cpu().numpy()
    out = []
    for gens in rows:
        pairs = [(i, j) for i in range(len(gens)) for j in range(i + 1, len(gens))]
        out.append(sum(oracle.distance(gens[i], gens[j]) for i, j in pairs) / len(pairs))
    return torch.tensor(out, dtype=torch.float64)


def fad_reference_tokens(size: int, seed: int, root: str | None = None) -> torch.Tensor:
    """The first `size` flaw-free pieces of the corpus of `seed`: `[size, L]` (docstring).

    The pool composed is twice `size` (about a third of pieces are flawed), cached by
    `suite.music.corpus.build_corpus`; too few clean pieces is a ValueError.
    """
    from suite.music.corpus import build_corpus

    pool = build_corpus(seed=int(seed), n=2 * int(size), root=root, progress=False)
    clean = [i for i, flawed in enumerate(pool.flawed) if not flawed][:size]
    if len(clean) < size:
        _fail(
            f"the FAD reference needs {size} clean pieces but corpus seed {seed} has only "
            f"{len(clean)} in its first {2 * size}; lower fad_reference_size"
        )
    return torch.as_tensor(pool.tokens[clean], dtype=torch.long)  # [size, L]
