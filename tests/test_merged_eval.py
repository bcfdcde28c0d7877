"""Tests of the merged evaluator (paper sections 2.4, 3.4, 3.5; appendices D.4, E, G).

Tiny random-init TokenLMs and audio models are saved to a temp dir once per module
(tests/tiny_models.py): the base as a TokenLM file (the policy's checkpoint), the sources
as exports with their records, so every test goes through the same loading as a run.
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
from tiny_models import PROMPTS, lm_state, make_evaluator, save_tiny_models, tiny_lm

from datamodules.prompts import PromptDataModule
from suite.models.lm import TokenLM
from suite.music import oracle
from suite.music.corpus import generate as compose
from suite.music.render import render
from suite.music.tokens import SEQ_LEN
from suite.policies.exports import load_export, save_export, sidecar, weights_hash
from suite.policies.music import MusicOracle, MusicPolicy
from suite.rollout import one_minus_mean

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("merged_ckpts"))


make = make_evaluator


def trained(m) -> dict[str, torch.Tensor]:
    return m.policy.trainable.state_dict()


# ------------------------------------------------------------------------ building the model
def test_lerp_endpoints_reproduce_the_sources_exactly_and_midpoint_is_the_mean(ckpts):
    a, b = lm_state(ckpts["beta0-seed0"]), lm_state(ckpts["beta15-seed0"])
    for lam, want in ((0.0, a), (1.0, b)):
        m = make(ckpts, lam=lam)
        m.setup("test")
        got = trained(m)
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want), lam
    m = make(ckpts, lam=0.5)
    m.setup("test")
    got = trained(m)
    for k in a:  # independent reference: numpy float64 mean
        ref = (a[k].double().numpy() + b[k].double().numpy()) / 2
        np.testing.assert_allclose(got[k].double().numpy(), ref, rtol=1e-6, atol=1e-7)
    assert m.coefficients_used == [0.5, 0.5]
    # the base policy (the KL teacher) is not touched by the merge
    base = lm_state(ckpts["base"])
    assert all(torch.equal(m.teacher.trainable.state_dict()[k], base[k]) for k in base)


def test_uniform_merge_is_the_arithmetic_mean_and_exports_with_its_record(ckpts, tmp_path):
    names = ["beta0-seed0", "beta5-seed0", "beta15-seed0"]
    out = tmp_path / "soup.safetensors"
    m = make(ckpts, sources=[ckpts[n] for n in names], method="merge", lam=None,
             export_path=str(out))  # fmt: skip
    m.setup("test")
    states = [lm_state(ckpts[n]) for n in names]
    got = trained(m)
    for k in states[0]:
        ref = np.mean([s[k].double().numpy() for s in states], axis=0)
        np.testing.assert_allclose(got[k].double().numpy(), ref, rtol=1e-6, atol=1e-7)
    weights, record = load_export(out)
    assert record["coefficients"] == pytest.approx([1 / 3] * 3)
    assert record["kind"] == "merge" and record["method"] == "merge" and record["name"] == "soup"
    assert [s["label"] for s in record["sources"]] == names
    assert [s["beta"] for s in record["sources"]] == ["0", "5", "15"]
    assert [s["source"] for s in record["sources"]] == [ckpts[n] for n in names]
    assert record["base_hash"] == ckpts["base_hash"]
    assert record["weights_hash"] == weights_hash(got)
    assert set(weights) == set(got) and all(torch.equal(weights[k], got[k]) for k in weights)
    rebuilt = TokenLM.from_config(record["policy"]["architecture"])
    rebuilt.load_state_dict_checked(weights)  # the export round-trips into a TokenLM
    assert record["policy"]["name"] == "music"
    assert json.loads(sidecar(out).read_text()) == record
    # ... and the export is itself a source: evaluating it alone gives the same weights
    again = make(ckpts, sources=[str(out)], method="single", lam=None)
    again.setup("test")
    assert all(torch.equal(trained(again)[k], got[k]) for k in got)
    assert again.run_params()["beta"] == "?"  # a merge has no single beta


def test_base_source_and_weighted_merge(ckpts):
    m = make(ckpts, sources=[ckpts["beta0-seed0"], "base"], method="merge", lam=None,
             coefficients=[0.25, 0.75])  # fmt: skip
    m.setup("test")
    a, base = lm_state(ckpts["beta0-seed0"]), lm_state(ckpts["base"])
    for k in ("cond_proj.weight", "tok_emb.weight"):
        ref = 0.25 * a[k].double().numpy() + 0.75 * base[k].double().numpy()
        np.testing.assert_allclose(trained(m)[k].double().numpy(), ref, atol=1e-7)
    assert m.coefficients_used == [0.25, 0.75]
    assert m.run_params()["sources"] == "beta0-seed0,base"
    assert m.run_params()["beta"] == "0,base"
    assert m.run_params()["method"] == "merge"


def test_mismatched_architectures_are_refused_naming_keys(ckpts, tmp_path):
    # A legacy .pt knows its architecture: refused by the architecture, naming the key.
    m = make(ckpts, sources=[ckpts["beta0-seed0"], ckpts["wide"]])
    with pytest.raises(ValueError, match="another architecture") as info:
        m.setup("test")
    assert "wide.pt" in str(info.value) and "d_model: export 48 vs base 32" in str(info.value)
    assert "policy" not in m._frozen  # nothing built, nothing generated
    # An export whose record names no architecture: refused by its weights, naming the keys.
    wide = tiny_lm(4, d_model=48)
    path = tmp_path / "wide.safetensors"
    save_export(wide.state_dict(), path, {"kind": "student", "policy": {"name": "music"},
                                          "base_hash": ckpts["base_hash"], "beta": 15})  # fmt: skip
    m = make(ckpts, sources=[ckpts["beta0-seed0"], str(path)])
    with pytest.raises(ValueError, match="cannot merge") as info:
        m.setup("test")
    text = str(info.value)
    assert "tok_emb.weight" in text
    assert "wide.safetensors" in text and "differs in shape" in text
    assert "policy" not in m._frozen
    # ... and alone (nothing to merge with): it does not fit the base policy.
    m = make(ckpts, sources=[str(path)], method="single", lam=None)
    with pytest.raises(ValueError, match="do not fit the base policy") as info:
        m.setup("test")
    assert "tok_emb.weight" in str(info.value)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(lam=1.3), "lambda must be a number in [0, 1], got 1.3"),
        (dict(lam=-0.1), "lambda must be a number in [0, 1]"),
        (dict(lam=True), "lambda must be a number"),
        (dict(sources=[]), "sources must be a non-empty list"),
        (dict(lam=None), "needs lambda"),
        (dict(method="average"), "method must be one of"),
        (dict(method="merge", lam=None, coefficients=[0.5, 0.6]), "sum to 1"),
        (dict(method="merge", lam=None, coefficients=[1.0]), "1 coefficients for 2 sources"),
        (dict(method="merge"), "not lambda=0.5"),
        (dict(sources=["base"]), "needs two sources"),
        (dict(policy=None), "policy must be a mapping with a 'name'"),
        (dict(policy={"checkpoint": "x.pt"}), "policy must be a mapping with a 'name'"),
        (dict(embedder=None), "embedder"),
        (dict(n_generations=3, n_vendi_generations=2), "n_vendi_generations"),
        (dict(temperature=0.0), "temperature"),
        (dict(fad_reference_size=1), "fad_reference_size"),
        (dict(export_path="merged.pt"), "export_path must be a path ending in .safetensors"),
        (dict(common_random_numbers="no"), "common_random_numbers must be true or false"),
        (
            dict(win_rates=True, baseline={"name": "b", "sources": ["base"], "lam": 2}),
            "unknown keys",
        ),
        (dict(win_rates=True, baseline={"name": "", "sources": ["base"]}), "non-empty 'name'"),
        (dict(win_rates=True, baseline={"name": "b", "sources": []}), "baseline: sources"),
    ],
)
def test_bad_arguments_raise_at_construction(ckpts, kw, needle):
    with pytest.raises(ValueError) as info:
        make(ckpts, **kw)
    assert needle in str(info.value)


def test_missing_export_names_what_to_do(ckpts, tmp_path):
    missing = tmp_path / "models" / "beta15-seed0.safetensors"
    m = make(ckpts, sources=[str(missing), ckpts["beta0-seed0"]])
    with pytest.raises(FileNotFoundError) as info:
        m.setup("test")
    text = str(info.value)
    assert str(missing) in text and "train it first" in text
    assert "models/<name>-seed<seed>.safetensors" in text
    assert "policy" not in m._frozen
    # a missing baseline source is named as the baseline's
    m = make(ckpts, win_rates=True, baseline={"name": "b", "sources": [str(missing)]})
    with pytest.raises(FileNotFoundError, match="baseline: export not found"):
        m.setup("test")


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
    policy = MusicPolicy(tiny_lm(0), encode=lambda prompts: torch.zeros(len(prompts), 384))
    audio = policy.reference_audio(6, seed=1, root=str(tmp_path))
    pool = compose(1, 48, progress=False)  # the 8x pool reference_audio draws from
    clean = [i for i, f in enumerate(pool.flawed) if not f][:6]
    assert len(clean) == 6 and clean != list(range(6))  # some flawed pieces were skipped
    tokens = torch.as_tensor(pool.tokens[clean]).long()
    assert audio.shape[0] == 6 and torch.equal(audio, render(tokens))
    train = compose(0, 12, progress=False).tokens
    assert not any((train == row.numpy()).all(-1).any() for row in tokens)


def test_pair_distances_are_the_oracle_distance():
    pool = torch.as_tensor(compose(2, 6, progress=False).tokens).long().view(2, 3, 1, SEQ_LEN)
    got = MusicOracle().pair_distances(pool)
    assert got.shape == (2,) and got.dtype == torch.float64
    for p in range(2):
        g = pool[p, :, 0].numpy()
        ref = np.mean([oracle.distance(g[i], g[j]) for i, j in ((0, 1), (0, 2), (1, 2))])
        assert got[p].item() == pytest.approx(ref)


# ------------------------------------------------------------------------ the test stage
def _datamodule(tmp_path, prompts=PROMPTS):
    file = tmp_path / "prompts.txt"
    file.write_text("\n".join(prompts) + "\n")
    return PromptDataModule(eval_prompts=str(file), train_prompts=str(file), batch_size=2)


METRICS = ("quality", "mulan", "preference", "diversity", "vendi", "oracle_quality",
           "oracle_adherence", "entropy", "kl_teacher", "fad", "fad_mulan", "fad_n",
           "fad_n_ref", "one_minus_mean", "n_vendi_generations", "winrate_quality",
           "winrate_quality_p_ttest", "winrate_quality_p_wilcoxon", "winrate_quality_p_sign",
           "winrate_quality_ci_low", "winrate_quality_ci_high", "winrate_quality_wins",
           "winrate_quality_losses", "winrate_quality_ties", "winrate_quality_n",
           "winrate_diversity", "winrate_diversity_p_ttest", "winrate_diversity_p_wilcoxon",
           "winrate_diversity_p_sign", "winrate_diversity_wins", "winrate_diversity_losses",
           "winrate_diversity_ties")  # fmt: skip


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
    assert run.data.metrics["eval/n_vendi_generations"] == 3
    assert (
        run.data.metrics["eval/winrate_quality_wins"]
        + run.data.metrics["eval/winrate_quality_losses"]
        + run.data.metrics["eval/winrate_quality_ties"]
        == 3  # one duel per prompt (its generations averaged), not 3 x 2
    )
    for name in ("quality", "diversity", "oracle_quality"):  # every mean has its interval
        low, high = run.data.metrics[f"eval/{name}_ci_low"], run.data.metrics[f"eval/{name}_ci_high"]
        assert low <= run.data.metrics[f"eval/{name}"] <= high, name
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
    m = make(ckpts, sources=["base"], method="single", lam=None, gamma=3.0,
             n_vendi_generations=2, win_rates=True, win_rate_resamples=49)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    out = trainer.test(m, datamodule=_datamodule(tmp_path), verbose=False)[0]
    assert out["eval/winrate_quality"] == 0.5 and out["eval/winrate_quality_ties"] == 3
    assert out["eval/winrate_diversity"] == 0.5 and out["eval/winrate_diversity_ties"] == 3
    assert out["eval/winrate_quality_p_ttest"] == 1.0  # every score difference is exactly 0
    assert out["eval/kl_teacher"] == pytest.approx(0.0, abs=1e-4)  # it is the teacher, too
    # ... and another model does not tie everything: the check could fail.
    m2 = make(ckpts, n_vendi_generations=2, win_rates=True, win_rate_resamples=49)
    out2 = trainer.test(m2, datamodule=_datamodule(tmp_path), verbose=False)[0]
    # (The oracle scores every tiny random model's piece 0, so the quality duels tie for any
    # pair of them; the musical distances behind the diversity duels do differ.)
    assert out2["eval/winrate_diversity_p_ttest"] < 1.0  # (ties by the 0.02 margin may remain)
    assert out2["eval/kl_teacher"] > 1e-3
    # Without common random numbers the same model against itself is drawn independently:
    # its pairs differ, so the diversity duels no longer all tie exactly.
    m3 = make(ckpts, sources=["base"], method="single", lam=None, gamma=3.0,
              n_vendi_generations=2, win_rates=True, win_rate_resamples=49,
              common_random_numbers=False)  # fmt: skip
    out3 = trainer.test(m3, datamodule=_datamodule(tmp_path), verbose=False)[0]
    assert out3["eval/winrate_diversity_p_ttest"] < 1.0


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
    """Tiny models from the cwd's models/ (where the students export: beta0-seed0.safetensors,
    ...) and few prompts; the overridden keys are kept out of the run names, which must say
    only what the sweep varies."""
    paths = save_tiny_models(tmp_path / "models")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS[:2]) + "\n")
    overrides = {
        "generator.checkpoint": paths["base"], "model.embedder": paths["emb"],
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
        assert r.data.params["negative_prompt"] in ("", "None", "''")
        assert r.data.params["front"] == "CFG(base,unconditional)"
        assert r.data.params["lambda"] == "None" and r.data.params["sources"] == "base"
    assert {r.data.params["gamma"] for r in found} == {"1.0", "3.0"}


def test_quality_duels_are_one_per_prompt_and_the_sign_test_is_scipys():
    from scipy.stats import binomtest

    from lightning_modules.win_rates import WinRates

    class Oracle:  # overall score = the first token / 100; diversity: the second
        def scores(self, tokens, prompts):
            return {"overall": tokens[:, :, 0, 0].double() / 100}

        def pair_distances(self, tokens):
            return tokens[:, :, 0, 1].double().mean(1) / 100

    P, N = 12, 3
    g = torch.Generator().manual_seed(0)
    ours = torch.randint(0, 100, (P, N, 1, 4), generator=g)
    theirs = torch.randint(0, 100, (P, N, 1, 4), generator=g)
    rates = WinRates({"name": "b"}, Oracle(), 0.02, 0.02, resamples=99, seed=0)
    rates.update(ours, theirs, [f"p{i}" for i in range(P)])
    out = rates.compute()
    assert out["eval/winrate_quality_n"] == P  # not P * N
    diff = ours[:, :, 0, 0].double().mean(1) / 100 - theirs[:, :, 0, 0].double().mean(1) / 100
    wins, losses = int((diff > 0.02).sum()), int((diff < -0.02).sum())
    assert (out["eval/winrate_quality_wins"], out["eval/winrate_quality_losses"]) == (wins, losses)
    assert out["eval/winrate_quality"] == pytest.approx((wins + (P - wins - losses) / 2) / P)
    assert out["eval/winrate_quality_p_sign"] == pytest.approx(binomtest(wins, wins + losses).pvalue)
