"""The scorer's frozen-trunk stage: cached trunk features (`datamodules.trunk_features`),
`ScorerJob(train_trunk=False)` on them, and the artifact spec that selects them."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from datamodules.trunk_features import TrunkFeatureDataModule
from lightning_modules import artifacts as artifact_jobs
from lightning_modules.artifacts import TRUNK_DATA, _data_kwargs, _data_target
from lightning_modules.scorer import ScorerJob
from suite.models.scorer import MuLanScorer, ScorerConfig
from suite.music.corpus import generate
from tests.test_swap_negatives import MODEL, HashTower, short_render


@pytest.fixture(scope="module")
def corpus():
    return generate(seed=4, n=100, progress=False)


@pytest.fixture()
def trunk(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "scorer.pt"
    MuLanScorer(ScorerConfig.from_dict(MODEL)).save(path)
    return path


def module(corpus, trunk, **kw):
    return TrunkFeatureDataModule(str(trunk), tokens=torch.as_tensor(corpus.tokens),
                                  captions=corpus.captions, attrs=corpus.attrs, batch_size=16,
                                  val_pieces=20, render=short_render, text_tower=HashTower(), **kw)  # fmt: skip


def test_features_are_the_trunk_on_each_rendered_piece(corpus, trunk):
    dm = module(corpus, trunk, swap_draws=1)
    dm.setup("fit")
    encoder = MuLanScorer.from_checkpoint(trunk).audio_encoder.eval()
    rows = torch.tensor([0, 37, 99])
    with torch.no_grad():
        want = encoder(short_render(torch.as_tensor(corpus.tokens)[rows]))
    torch.testing.assert_close(dm.features[rows], want, rtol=1e-4, atol=1e-5)
    assert len(dm.train_idx) == 80 and len(dm.val_idx) == 20
    assert set(dm.train_idx).isdisjoint(dm.val_idx)


def test_the_frozen_trunk_stage_trains_only_the_heads(corpus, trunk):
    dm = module(corpus, trunk, swap_draws=1)
    job = ScorerJob(model_config=MODEL, init_weights=str(trunk), train_trunk=False,
                    max_steps=3, negative_weight=4.0)  # fmt: skip
    before = {k: v.clone() for k, v in job.model.state_dict().items()}
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1, val_check_interval=3, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(job, dm)
    after = job.model.state_dict()
    trunk_keys = [k for k in after if k.startswith("audio_encoder.")]
    assert trunk_keys and all(torch.equal(before[k], after[k]) for k in trunk_keys)
    assert not torch.equal(before["audio_proj.weight"], after["audio_proj.weight"])
    assert not torch.equal(before["text_proj.0.weight"], after["text_proj.0.weight"])
    assert "val/recall@1" in trainer.callback_metrics


def test_a_scorer_spec_naming_a_trunk_selects_the_feature_data():
    spec = {"data": {"trunk": "artifacts/x/model.pt", "swap_draws": 2}}
    assert _data_target("scorer", spec) == TRUNK_DATA
    assert _data_kwargs("scorer", spec) == spec["data"]  # no fixed task argument
    assert _data_target("scorer", {"data": {"swap_draws": 2}}) != TRUNK_DATA


def test_nested_specs_are_built_first_and_given_as_files(monkeypatch, tmp_path):
    # a stage names the stage before it by spec: train_artifact hands the job and the
    # DataModule that artifact's file, resolved by kind; a path passes through untouched
    calls = []

    def fake_resolve(kind, value):
        calls.append((kind, value))
        return tmp_path / f"{kind}-{value['seed']}" / "model.pt"

    monkeypatch.setattr(artifact_jobs, "resolve", fake_resolve)
    inner, other = {"seed": 7, "model": {"preset": "tiny"}}, {"seed": 8}
    spec = {"seed": 0, "data": {"trunk": inner, "batch_size": 4},
            "model": {"init_weights": other, "preset": "tiny"}}  # fmt: skip
    out = artifact_jobs._resolve_references("scorer", spec)
    assert out["data"] == {"trunk": str(tmp_path / "scorer-7" / "model.pt"), "batch_size": 4}
    assert out["model"]["init_weights"] == str(tmp_path / "scorer-8" / "model.pt")
    assert sorted(calls, key=lambda c: c[1]["seed"]) == [("scorer", inner), ("scorer", other)]
    assert spec["data"]["trunk"] is inner  # the spec itself (what the hash saw) is unchanged
    calls.clear()
    embedder = artifact_jobs._resolve_references("embedder", {"model": {"init_weights": other}})
    assert calls == [("embedder", other)] and embedder["model"]["init_weights"].endswith("embedder-8/model.pt")
    path = {"model": {"init_weights": "/some/file.pt"}}
    assert artifact_jobs._resolve_references("scorer", path) == path and len(calls) == 1


def test_bad_values_are_refused(corpus, trunk, tmp_path):
    with pytest.raises(FileNotFoundError, match="trunk"):
        TrunkFeatureDataModule(str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="swap_draws"):
        TrunkFeatureDataModule(str(trunk), swap_draws=-1)
    with pytest.raises(ValueError, match="train_trunk"):
        ScorerJob(model_config=MODEL, train_trunk="no")
    too_big = TrunkFeatureDataModule(str(trunk), tokens=torch.as_tensor(corpus.tokens),
                                     captions=corpus.captions, batch_size=200,
                                     render=short_render, text_tower=HashTower())  # fmt: skip
    with pytest.raises(ValueError, match="too few"):
        too_big.setup("fit")
    no_attrs = TrunkFeatureDataModule(str(trunk), tokens=torch.as_tensor(corpus.tokens),
                                      captions=corpus.captions, swap_draws=1, batch_size=16,
                                      render=short_render, text_tower=HashTower())  # fmt: skip
    with pytest.raises(ValueError, match="attribute dict"):
        no_attrs.setup("fit")
