"""Auxiliary attribute targets for the MuLan-style scorer's audio trunk
(`AudioDataModule(attribute_labels=True)`, `ScorerJob(attribute_weight=...)`): linear heads
on the trunk's features predict each piece's attribute values; the loss adds their mean
cross-entropy to InfoNCE, and the heads never reach the exported scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.audio import AudioDataModule
from lightning_modules.scorer import ScorerJob
from suite.models.scorer import MuLanScorer
from suite.music.corpus import generate
from tests.test_attribute_positives import audio_datamodule, fit_batch
from tests.test_swap_negatives import MODEL


@pytest.fixture(scope="module")
def corpus():
    return generate(seed=5, n=80, progress=False)


def datamodule(corpus, **kw):
    return audio_datamodule(corpus, batch_size=16, val_pieces=16, **kw)


def test_batches_carry_each_pieces_attribute_codes(corpus):
    dm = datamodule(corpus, attribute_labels=True)
    raw, batch = fit_batch(dm)
    keys = dm.label_keys
    assert {"genre", "mood", "tempo", "lead"} <= set(keys) and len(dm.label_sizes) == len(keys)
    for row, i in zip(batch["labels"].tolist(), raw["index"].tolist()):  # codes decode to values
        values = [sorted({str(a.get(k, "")) for a in corpus.attrs}) for k in keys]
        assert [values[j][c] for j, c in enumerate(row)] == [str(corpus.attrs[i].get(k, "")) for k in keys]
    assert "labels" not in fit_batch(datamodule(corpus))[1]
    with pytest.raises(ValueError, match="attribute_labels"):
        AudioDataModule("embedder", attribute_labels=True)


def log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def test_the_loss_adds_the_heads_mean_cross_entropy(corpus):
    dm = datamodule(corpus, attribute_labels=True)
    raw, batch = fit_batch(dm)
    torch.manual_seed(0)
    job = ScorerJob(model_config=MODEL, attribute_weight=0.5)
    job.attribute_heads = job.make_attribute_heads(dm.label_sizes)
    job.eval()  # no dropout: the same features twice
    with torch.no_grad():
        got = job.training_step(batch, 0).item()
        contrastive = job.model.loss(batch["audio"], batch["cond"]).item()
        feats = job.model.audio_encoder(batch["audio"]).numpy()
    labels = batch["labels"].numpy()
    ce = [-log_softmax(feats @ h.weight.detach().numpy().T + h.bias.detach().numpy())[np.arange(len(labels)), labels[:, k]].mean()
          for k, h in enumerate(job.attribute_heads)]  # fmt: skip
    assert got == pytest.approx(contrastive + 0.5 * np.mean(ce), rel=1e-5)
    heads = {id(p) for p in job.attribute_heads.parameters()}
    optimised = {id(p) for g in job.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert heads <= optimised and {id(p) for p in job.model.parameters()} <= optimised


def test_the_exported_scorer_has_no_heads(corpus, tmp_path):
    job = ScorerJob(model_config=MODEL, attribute_weight=1.0)
    job.attribute_heads = job.make_attribute_heads([3, 4])
    job.export(tmp_path / "s.pt")
    again = MuLanScorer.from_checkpoint(tmp_path / "s.pt")
    assert set(again.state_dict()) == set(job.model.state_dict())


def test_bad_attribute_targets_are_refused(corpus):
    with pytest.raises(ValueError, match="attribute_weight"):
        ScorerJob(model_config=MODEL, attribute_weight=-1)
    with pytest.raises(ValueError, match="attribute_weight"):
        ScorerJob(model_config=MODEL, attribute_weight=1.0, train_trunk=False)
    job = ScorerJob(model_config=MODEL, attribute_weight=1.0)
    job.attribute_heads = job.make_attribute_heads([3])
    _, batch = fit_batch(datamodule(corpus))
    with pytest.raises(ValueError, match="attribute_labels: true"):
        job.training_step(batch, 0)
