"""Pitch-aware embedder batches: transposed twins and key/mode labels
(`datamodules.pitch_negatives`), and the embedder job's auxiliary key/mode head."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.audio import AudioDataModule
from datamodules.pitch_negatives import (
    MAX_TWIN_SHIFT,
    key_mode_labels,
    transposed_twins,
    twin_shifts,
)
from lightning_modules.embedder import EmbedderJob
from suite.models.vit import AudioEmbedder
from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.edits import transpose_tokens
from tests.test_audio_models_training import TINY_ENC, _fit, clean_tokens, short_render


def test_key_mode_labels_read_the_header_and_follow_a_transposition():
    tok = clean_tokens(24)
    key, mode = key_mode_labels(tok)
    for i in range(24):  # independent reading: header positions 3 and 4 (tokens.py grammar)
        assert A.KEYS[int(key[i])] == A.ATTRIBUTES["key"][int(tok[i, 3]) - T.TYPE_RANGES["key"][0]]
        assert int(mode[i]) == int(tok[i, 4]) - T.TYPE_RANGES["mode"][0]
    moved, _ = key_mode_labels(transpose_tokens(tok, torch.full((24,), 5)))
    assert torch.equal(moved, (key + 5) % 12)
    bad = tok.clone()
    bad[0, 3] = T.TYPE_RANGES["melody"][0]
    with pytest.raises(ValueError, match="key or mode header"):
        key_mode_labels(bad)


def test_twin_shifts_cover_every_nonzero_shift_and_only_those():
    s = twin_shifts(4000, torch.Generator().manual_seed(0))
    assert set(s.tolist()) == set(range(-MAX_TWIN_SHIFT, 0)) | set(range(1, MAX_TWIN_SHIFT + 1))


def test_transposed_twins_change_the_key_and_take_labels_of_their_own():
    tok, index = clean_tokens(8), torch.arange(100, 108)
    chunks, labels, twins = transposed_twins(
        tok, index, 0.5, torch.Generator().manual_seed(1), lambda t: t[:, :5].float()
    )
    assert chunks.shape == (4, 5) and torch.equal(labels, -(index[:4] + 1))
    assert not set(labels.tolist()) & set(index.tolist())
    k0, m0 = key_mode_labels(tok[:4])
    k1, m1 = key_mode_labels(twins)
    assert (k0 != k1).all() and torch.equal(m0, m1)  # a new key, the same mode
    with pytest.raises(ValueError, match="no piece"):
        transposed_twins(tok, index, 0.01, torch.Generator(), lambda t: t.float())


def _embedder_dm(**kw):
    dm = AudioDataModule(
        "embedder", tokens=clean_tokens(40), batch_size=8, val_pieces=10, clip_seconds=1.0,
        render=short_render, **kw,
    )  # fmt: skip
    dm.setup()
    return dm


@pytest.mark.parametrize("recording", [False, True])
def test_training_batches_append_twins_with_their_keys(recording):
    dm = _embedder_dm(transposed_negatives=0.25, recording_augment=recording)
    dm.trainer = type("T", (), {"training": True})()
    tokens, index = dm._tokens[:8], torch.arange(8)
    out = dm.on_after_batch_transfer({"tokens": tokens, "index": index}, 0)
    assert out["audio"].shape[0] == 18 and out["label"].shape == (18,)
    assert torch.equal(out["label"][16:], -(index[:2] + 1))
    assert out["key"].shape == out["mode"].shape == (18,)
    # the pair's chunks share the pair's (shifted) key; each twin's key is another one
    assert torch.equal(out["key"][:8], out["key"][8:16])
    assert (out["key"][16:] != out["key"][:2]).all()
    assert torch.equal(out["mode"][16:], out["mode"][:2])


def test_validation_batches_carry_the_unshifted_keys():
    dm = _embedder_dm(transposed_negatives=0.25)
    dm.trainer = type("T", (), {"training": False})()
    tokens = dm._tokens[:8]
    out = dm.on_after_batch_transfer({"tokens": tokens, "index": torch.arange(8)}, 0)
    assert out["audio_a"].shape[0] == 8 and torch.equal(out["key"], key_mode_labels(tokens)[0])


def test_transposed_negatives_refuse_bad_settings():
    for kw in (
        {"transposed_negatives": 1.5},
        {"transposed_negatives": 0.01},  # no twin in a batch of 8
        {"transposed_negatives": 0.5, "pair_augment": "independent"},
    ):
        with pytest.raises(ValueError, match="transposed_negatives"):
            AudioDataModule("embedder", tokens=clean_tokens(40), batch_size=8, **kw)
    with pytest.raises(ValueError, match="transposed_negatives"):
        AudioDataModule("scorer", tokens=clean_tokens(40), transposed_negatives=0.5)


def test_key_head_loss_is_the_mean_of_two_cross_entropies():
    job = EmbedderJob(model_config={"encoder": TINY_ENC, "out_dim": 16}, key_weight=0.5)
    emb = F.normalize(torch.randn(6, 16), dim=-1)
    key, mode = torch.tensor([0, 3, 11, 5, 5, 2]), torch.tensor([0, 1, 2, 3, 0, 1])
    k_logits, m_logits = job.key_logits(emb)
    assert k_logits.shape == (6, 12) and m_logits.shape == (6, 4)
    full = job.key_head(emb)  # independent reference: log-softmax by hand over each block
    ref_k = -(full[:, :12].log_softmax(-1)[torch.arange(6), key]).mean()
    ref_m = -(full[:, 12:].log_softmax(-1)[torch.arange(6), mode]).mean()
    torch.testing.assert_close(F.cross_entropy(k_logits, key), ref_k)
    torch.testing.assert_close(F.cross_entropy(m_logits, mode), ref_m)
    # the job's auxiliary loss against numpy: mean over the batch of -log softmax, per block
    logits = full.detach().double().numpy()
    def nll(block, target):  # noqa: E306
        z = block - block.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -logp[np.arange(len(target)), target.numpy()].mean()
    aux, acc = job.key_loss(emb, key, mode)
    expected = (nll(logits[:, :12], key) + nll(logits[:, 12:], mode)) / 2
    assert aux.item() == pytest.approx(expected, rel=1e-5)
    assert acc.item() == pytest.approx((logits[:, :12].argmax(1) == key.numpy()).mean())
    assert {id(p) for p in job.key_head.parameters()} <= {id(p) for p in job.trained_parameters()}
    with pytest.raises(ValueError, match="key_weight"):
        EmbedderJob(key_weight=-1.0)


def test_embedder_job_with_key_head_and_twins_fits_and_exports_only_e(tmp_path):
    dm = AudioDataModule(
        "embedder", tokens=clean_tokens(40), batch_size=8, val_pieces=10, clip_seconds=1.0,
        render=short_render, transposed_negatives=0.25,
    )  # fmt: skip
    job = EmbedderJob(
        model_config={"encoder": TINY_ENC, "out_dim": 16}, max_steps=3, warmup_steps=1,
        key_weight=0.5,
    )  # fmt: skip
    metrics = _fit(job, dm).callback_metrics
    assert {"val/recall@1", "val/key_acc", "val/mode_acc", "train/key_ce"} <= set(metrics)
    job.export(tmp_path / "e.pt")
    exported = AudioEmbedder.from_checkpoint(tmp_path / "e.pt")  # E alone, without the head
    assert exported.state_dict().keys() == job.model.state_dict().keys()
