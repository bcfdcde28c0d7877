"""Tests of the merged evaluator (paper sections 2.4, 3.4, 3.5; appendices D.4, E, G).

Tiny random-init TokenLMs and audio models are saved to a temp dir once per module (as in
tests/test_student.py), so every test goes through the same checkpoint loading as a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.prompts import PromptDataModule
from lightning_modules import merged_eval as me
from lightning_modules.evaluation import one_minus_mean
from lightning_modules.merged_eval import MergedEvaluator, fad_reference_tokens
from suite.merging import load_merged
from suite.models.lm import TokenLM
from suite.models.preference import PreferenceConfig, PreferenceModel
from suite.models.scorer import MuLanScorer, ScorerConfig
from suite.models.vit import AudioEmbedder, EmbedderConfig, EncoderConfig, ViTConfig
from suite.music import oracle
from suite.music.corpus import generate as compose
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE

REPO = Path(__file__).resolve().parent.parent
TINY_LM = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
VIT = ViTConfig(width=16, depth=1, heads=2, head_dim=8, ff_dim=32)
PROMPTS = ["Upbeat jazz piece in C major.", "A sad piano ballad", "Rock song."]


def save_tiny_models(d: Path) -> dict[str, str]:
    """Tiny LMs (two seeds of one architecture, one of another) and audio models in d."""
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, seed in (("beta0-seed0", 1), ("beta15-seed0", 2), ("beta5-seed0", 3),
                       ("base", 0)):  # fmt: skip
        torch.manual_seed(seed)
        paths[name] = d / f"{name}.pt"
        TokenLM(VOCAB_SIZE, SEQ_LEN, **TINY_LM).save(paths[name])
    paths["wide"] = d / "wide.pt"
    TokenLM(VOCAB_SIZE, SEQ_LEN, **{**TINY_LM, "d_model": 48, "n_heads": 2}).save(paths["wide"])
    torch.manual_seed(0)
    paths["emb"] = d / "emb.pt"
    AudioEmbedder(EmbedderConfig(EncoderConfig(vit=VIT), out_dim=8)).save(paths["emb"])
    paths["scorer"] = d / "scorer.pt"
    MuLanScorer(ScorerConfig(encoder=EncoderConfig(vit=VIT), text_hidden=16, joint_dim=8)).save(
        paths["scorer"]
    )
    paths["pref"] = d / "pref.pt"
    PreferenceModel(PreferenceConfig(encoder=EncoderConfig(vit=VIT), hidden=8)).save(paths["pref"])
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("merged_ckpts"))


def make(ckpts, **kw) -> MergedEvaluator:
    args = dict(
        sources=[ckpts["beta0-seed0"], ckpts["beta15-seed0"]], method="lerp", lam=0.5,
        base_lm=ckpts["base"], embedder=ckpts["emb"], fad_reference_size=0, win_rates=False,
    )  # fmt: skip
    args.update(kw)
    return MergedEvaluator(**args)


def state(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# ------------------------------------------------------------------------ building the model
def test_lerp_endpoints_reproduce_the_sources_exactly_and_midpoint_is_the_mean(ckpts):
    a, b = state(ckpts["beta0-seed0"]), state(ckpts["beta15-seed0"])
    for lam, want in ((0.0, a), (1.0, b)):
        m = make(ckpts, lam=lam)
        m.setup("test")
        got = m.policy.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want), lam
    m = make(ckpts, lam=0.5)
    m.setup("test")
    got = m.policy.state_dict()
    for k in a:  # independent reference: numpy float64 mean
        ref = (a[k].double().numpy() + b[k].double().numpy()) / 2
        np.testing.assert_allclose(got[k].double().numpy(), ref, rtol=1e-6, atol=1e-7)
    assert m.coefficients_used == [0.5, 0.5]


def test_uniform_merge_is_the_arithmetic_mean_and_exports_with_its_record(ckpts, tmp_path):
    names = ["beta0-seed0", "beta5-seed0", "beta15-seed0"]
    out = tmp_path / "soup.safetensors"
    m = make(ckpts, sources=[ckpts[n] for n in names], method="merge", lam=None,
             export_path=str(out))  # fmt: skip
    m.setup("test")
    states = [state(ckpts[n]) for n in names]
    got = m.policy.state_dict()
    for k in states[0]:
        ref = np.mean([s[k].double().numpy() for s in states], axis=0)
        np.testing.assert_allclose(got[k].double().numpy(), ref, rtol=1e-6, atol=1e-7)
    weights, record = load_merged(out)
    assert record["coefficients"] == pytest.approx([1 / 3] * 3)
    assert record["labels"] == names and record["method"] == "merge"
    assert all(torch.equal(weights[k], got[k]) for k in weights)
    rebuilt = TokenLM.from_config(record["config"])
    rebuilt.load_state_dict_checked(weights)  # the export round-trips into a TokenLM
    assert json.loads((tmp_path / "soup.safetensors.json").read_text()) == record


def test_base_source_and_weighted_merge(ckpts):
    m = make(ckpts, sources=[ckpts["beta0-seed0"], "base"], method="merge", lam=None,
             coefficients=[0.25, 0.75])  # fmt: skip
    m.setup("test")
    a, base = state(ckpts["beta0-seed0"]), state(ckpts["base"])
    k = "cond_proj.weight"
    ref = 0.25 * a[k].double().numpy() + 0.75 * base[k].double().numpy()
    np.testing.assert_allclose(m.policy.state_dict()[k].double().numpy(), ref, atol=1e-7)
    assert m.run_params()["sources"] == "beta0-seed0,base"
    assert m.run_params()["beta"] == "0,base"


def test_mismatched_architectures_are_refused_naming_keys(ckpts):
    m = make(ckpts, sources=[ckpts["beta0-seed0"], ckpts["wide"]])
    with pytest.raises(ValueError, match="different architectures") as info:
        m.setup("test")
    text = str(info.value)
    assert "d_model: 32 vs 48" in text and "tok_emb.weight" in text
    assert "policy" not in m._frozen  # nothing built, nothing generated


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(lam=1.3), "lambda must be in [0, 1], got 1.3"),
        (dict(lam=-0.1), "lambda must be in [0, 1]"),
        (dict(sources=[]), "sources must be a non-empty list"),
        (dict(lam=None), "needs lambda"),
        (dict(method="average"), "method must be one of"),
        (dict(method="merge", lam=None, coefficients=[0.5, 0.6]), "sum to 1"),
        (dict(method="merge", lam=None, coefficients=[1.0]), "1 coefficients for 2 sources"),
        (dict(sources=["base"], base_lm=None), "no base_lm"),
        (dict(n_generations=3, n_vendi_generations=2), "n_vendi_generations"),
        (dict(temperature=0.0), "temperature"),
        (dict(fad_reference_size=1), "fad_reference_size"),
        (dict(win_rates=True, base_lm=None, sources=["x.pt"], lam=None), "baseline"),
        (
            dict(win_rates=True, baseline={"name": "b", "sources": ["base"], "lam": 2}),
            "unknown keys",
        ),
    ],
)
def test_bad_arguments_raise_at_construction(ckpts, kw, needle):
    with pytest.raises(ValueError) as info:
        make(ckpts, **kw)
    assert needle in str(info.value)


def test_missing_checkpoint_names_the_command_that_makes_it(ckpts, tmp_path):
    m = make(ckpts, sources=[str(tmp_path / "models/beta15-seed0.pt"), ckpts["beta0-seed0"]])
    with pytest.raises(FileNotFoundError) as info:
        m.setup("test")
    text = str(info.value)
    assert "beta15-seed0.pt" in text and "python -m suite fit --config conf/beta15.yaml" in text
    assert "sweeps/beta.yaml" in text


def test_fit_is_refused(ckpts):
    with pytest.raises(ValueError, match="does not train"):
        make(ckpts).setup("fit")


# ------------------------------------------------------------------------ helpers
def test_one_minus_mean_matches_numpy_and_the_diagonal_rule():
    emb = torch.randn(3, 8, 5, dtype=torch.float64)
    u = emb.numpy() / np.linalg.norm(emb.numpy(), axis=-1, keepdims=True)
    ref = 1 - np.einsum("pnd,pmd->pnm", u, u).mean(axis=(1, 2))
    np.testing.assert_allclose(one_minus_mean(emb).numpy(), ref, rtol=1e-12)
    # Including the diagonal: (1 - 1/N) times the mean off-diagonal dissimilarity.
    off = np.array([(1 - u[p] @ u[p].T)[~np.eye(8, dtype=bool)].mean() for p in range(3)])
    np.testing.assert_allclose(one_minus_mean(emb).numpy(), off * 7 / 8, rtol=1e-12)
    with pytest.raises(ValueError, match="one_minus_mean"):
        one_minus_mean(torch.randn(2, 1, 4))


def test_fad_reference_is_clean_and_not_the_training_corpus(tmp_path):
    tokens = fad_reference_tokens(6, seed=1, root=str(tmp_path))
    assert tokens.shape == (6, SEQ_LEN)
    pool = compose(1, 12, progress=False)
    clean = [i for i, f in enumerate(pool.flawed) if not f][:6]
    assert torch.equal(tokens, torch.as_tensor(pool.tokens[clean]).long())
    train = compose(0, 12, progress=False).tokens
    assert not any((train == row.numpy()).all(-1).any() for row in tokens)


def test_pair_distances_are_the_oracle_distance():
    pool = torch.as_tensor(compose(2, 6, progress=False).tokens).long().view(2, 3, SEQ_LEN)
    got = me._pair_distances(pool)
    for p in range(2):
        g = pool[p].numpy()
        ref = np.mean([oracle.distance(g[i], g[j]) for i, j in ((0, 1), (0, 2), (1, 2))])
        assert got[p].item() == pytest.approx(ref)


# ------------------------------------------------------------------------ the test stage
def _datamodule(tmp_path, prompts=PROMPTS):
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts) + "\n")
    return PromptDataModule(eval_prompts=str(file), train_prompts=str(file), batch_size=2)


METRICS = ("quality", "mulan", "preference", "diversity", "vendi", "oracle_quality",
           "oracle_adherence", "entropy", "kl_teacher", "fad", "fad_mulan", "fad_n",
           "fad_n_ref", "one_minus_mean", "winrate_quality", "winrate_quality_p_ttest",
           "winrate_quality_p_wilcoxon", "winrate_quality_p_sign", "winrate_quality_ci_low",
           "winrate_quality_ci_high", "winrate_quality_wins", "winrate_quality_losses",
           "winrate_quality_ties", "winrate_diversity", "winrate_diversity_p_ttest",
           "winrate_diversity_p_wilcoxon", "winrate_diversity_p_sign", "winrate_diversity_wins",
           "winrate_diversity_losses", "winrate_diversity_ties")  # fmt: skip


def test_test_stage_logs_every_metric_and_param_to_mlflow(ckpts, tmp_path):
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="t", run_name="lerp-0.5", tracking_uri=uri,
                          artifact_location=str(tmp_path / "art"))  # fmt: skip
    m = make(ckpts, scorer=ckpts["scorer"], preference=ckpts["pref"], n_vendi_generations=3,
             fad_reference_size=4, root=str(tmp_path), win_rates=True, win_rate_resamples=99,
             n_audio_samples=2, samples_dir=str(tmp_path / "samples"))  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    out = trainer.test(m, datamodule=_datamodule(tmp_path), verbose=False)[0]
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.run_id)
    for name in METRICS:
        assert f"eval/{name}" in run.data.metrics, name
        assert f"eval/{name}" in out
    assert run.data.metrics["eval/fad_n"] == 3 * 3  # 3 prompts x 3 generations
    assert run.data.metrics["eval/fad_n_ref"] == 4
    assert (
        run.data.metrics["eval/winrate_quality_wins"]
        + run.data.metrics["eval/winrate_quality_losses"]
        + run.data.metrics["eval/winrate_quality_ties"]
        == 3 * 2
    )
    q = run.data.metrics
    assert q["eval/quality"] == pytest.approx(5 * q["eval/mulan"] + q["eval/preference"])
    assert 1 <= q["eval/vendi"] <= 3
    params = run.data.params
    assert params["lambda"] == "0.5" and params["gamma"] == "1.0"
    assert params["temperature"] == "0.99" and params["method"] == "lerp"
    assert params["sources"] == "beta0-seed0,beta15-seed0" and params["beta"] == "0,15"
    assert params["baseline"] == "cfg3"
    arts = {a.path for a in client.list_artifacts(logger.run_id, "samples")}
    assert {p.rsplit(".", 1)[-1] for p in arts} == {"wav", "mid", "tsv"}
    assert (tmp_path / "samples" / "sample0.wav").is_file()


def test_the_baseline_against_itself_ties_every_pair(ckpts, tmp_path):
    # CFG gamma 3 on the base model IS the default baseline: with common random numbers the
    # pairs are identical, so every judgement is a tie and the win rate is exactly 0.5.
    m = make(ckpts, sources=["base"], lam=None, gamma=3.0, n_vendi_generations=2,
             win_rates=True, win_rate_resamples=49)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    out = trainer.test(m, datamodule=_datamodule(tmp_path), verbose=False)[0]
    assert out["eval/winrate_quality"] == 0.5 and out["eval/winrate_quality_ties"] == 6
    assert out["eval/winrate_diversity"] == 0.5 and out["eval/winrate_diversity_ties"] == 3
    assert out["eval/winrate_quality_p_ttest"] == 1.0  # every score difference is exactly 0
    assert out["eval/kl_teacher"] == pytest.approx(0.0, abs=1e-4)  # it is the teacher, too
    # ... and another model does not tie everything: the check could fail.
    m2 = make(ckpts, n_vendi_generations=2, win_rates=True, win_rate_resamples=49)
    out2 = trainer.test(m2, datamodule=_datamodule(tmp_path), verbose=False)[0]
    assert out2["eval/winrate_quality_p_ttest"] < 1.0  # nonzero score differences
    assert out2["eval/winrate_diversity_ties"] < 3
    assert out2["eval/kl_teacher"] > 1e-3


# ------------------------------------------------------------------------ sweeps end to end
def _suite(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # One intra-op thread, as conftest.py sets in-process: tiny models gain nothing from
    # more, and on a loaded 2-core machine oversubscribed threads slow sampling ~4x.
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "suite", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"suite {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _tiny_overrides(tmp_path: Path) -> list[str]:
    """Tiny models from the cwd's models/ (where the students export) and few prompts; the
    overridden keys are kept out of the run names, which must say only what the sweep varies."""
    paths = save_tiny_models(tmp_path / "models")  # models/beta0-seed0.pt, ... in the cwd
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS[:2]) + "\n")
    overrides = {
        "model.base_lm": paths["base"], "model.embedder": paths["emb"],
        "model.scorer": paths["scorer"], "model.preference": paths["pref"],
        "data.eval_prompts": tmp_path / "prompts.txt", "data.batch_size": 2,
        "model.n_vendi_generations": 2, "model.fad_reference_size": 4,
        "model.win_rate_resamples": 49, "model.n_audio_samples": 0,
        "trainer.enable_progress_bar": "false", "trainer.enable_model_summary": "false",
    }  # fmt: skip
    excluded = ["stage", *overrides]
    return [f"{k}={v}" for k, v in overrides.items()] + [
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]"
    ]


def _runs(cwd: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cfg-distill")
    return client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_lambda_sweep_runs_as_a_multirun_into_mlflow(tmp_path):
    _suite(tmp_path, "test", "--config", str(REPO / "sweeps/lambda.yaml"), "hydra.sweeper.params.lambda='0.0,1.0'",
           *_tiny_overrides(tmp_path))  # fmt: skip
    found = _runs(tmp_path)
    assert sorted(r.info.run_name for r in found) == ["lerp-lambda=0.0", "lerp-lambda=1.0"]
    for r in found:
        assert r.info.status == "FINISHED" and r.data.tags["sweep"] == "lambda"
        assert r.data.params["front"] == "LERP(0,15)" and r.data.params["beta"] == "0,15"
        assert r.data.params["sources"] == "beta0-seed0,beta15-seed0"
        assert r.data.params["method"] == "lerp" and r.data.params["gamma"] == "1.0"
        assert "eval/quality" in r.data.metrics and "eval/winrate_diversity" in r.data.metrics
    assert {r.data.params["lambda"] for r in found} == {"0.0", "1.0"}


@pytest.mark.slow
def test_gamma_sweep_runs_with_the_joblib_launcher(tmp_path):
    _suite(tmp_path, "test", "--config", str(REPO / "sweeps/gamma.yaml"), "hydra.sweeper.params.gamma='1.0,3.0'",
           "hydra.sweeper.params.prompting=unconditional", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
           *_tiny_overrides(tmp_path))  # fmt: skip
    found = _runs(tmp_path)
    names = sorted(r.info.run_name for r in found)
    assert names == ["cfg-gamma=1.0,prompting=unconditional",
                     "cfg-gamma=3.0,prompting=unconditional"]  # fmt: skip
    for r in found:
        assert r.info.status == "FINISHED" and r.data.tags["sweep"] == "gamma"
        assert r.data.params["negative_prompt"] == "" or r.data.params["negative_prompt"] in (
            "None",
            "''",
        )
        assert r.data.params["front"] == "CFG(base,unconditional)"
        assert r.data.params["lambda"] == "None" and r.data.params["sources"] == "base"
    assert {r.data.params["gamma"] for r in found} == {"1.0", "3.0"}
