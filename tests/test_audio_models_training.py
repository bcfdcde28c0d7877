"""Tests for the audio DataModule's token edits and the three audio LightningModules."""

import lightning as L
import pytest
import torch

from datamodules.audio import (
    AudioDataModule,
    is_clean,
    make_flawed,
    shift_tempo,
    transpose_tokens,
)
from lightning_modules.embedder import EmbedderJob, evaluate_embeddings
from lightning_modules.preference import PreferenceJob
from lightning_modules.scorer import ScorerJob, evaluate_retrieval
from suite.models.preference import PreferenceModel
from suite.models.retrieval import pairwise_accuracy, recall_at_k, roc_auc
from suite.models.vit import AudioEmbedder
from suite.music import tokens as T
from suite.music.attributes import KEYS, TEMPO_NAMES

TINY_ENC = {
    "mel": {"n_mels": 32},
    "vit": {
        "patch_freq": 8,
        "patch_time": 16,
        "width": 32,
        "depth": 1,
        "heads": 2,
        "head_dim": 16,
        "ff_dim": 64,
    },
    "clip_seconds": 1.0,
}


def clean_tokens(n, seed=0):
    """Random grammatical pieces with a clean recording and no performance flaws."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.multinomial(T.allowed_mask().float(), n, replacement=True, generator=g).T
    tok[:, torch.as_tensor(T.track_positions("perf"))] = T.TYPE_RANGES["perf"][0]  # ok, clean
    return tok


def short_render(tokens):
    """A cheap stand-in renderer (2.5 s of a pitch-dependent tone) for the Lightning smoke tests."""
    t = torch.arange(40000) / 16000
    f = 100.0 + 10.0 * (tokens[:, T.HEADER_LEN :].float().mean(1, keepdim=True) % 50)
    return 0.5 * torch.sin(2 * torch.pi * f * t)


# ------------------------------------------------------------------ token edits


def test_transpose_moves_every_note_and_key():
    tok = clean_tokens(16)
    for k in (-2, 1, 3):
        moved = transpose_tokens(tok, torch.full((16,), k))
        assert T.local_indices(moved)[1].all()
        for i in range(4):
            a, b = T.decode(tok[i]), T.decode(moved[i])
            for x, y in zip(a.melody, b.melody):
                assert (x == y) if x < 0 else (y - x) % 12 == k % 12
            for x, y in zip(a.chord, b.chord):
                if x >= 0:
                    assert (y // 8 - x // 8) % 12 == k % 12 and y % 8 == x % 8
            assert (KEYS.index(b.attrs["key"]) - KEYS.index(a.attrs["key"])) % 12 == k % 12


def test_tempo_shift_and_flaws():
    tok = clean_tokens(32)
    faster = shift_tempo(tok, torch.ones(32, dtype=torch.long))
    for i in range(32):
        a, b = (
            TEMPO_NAMES.index(T.decode(tok[i]).attrs["tempo"]),
            TEMPO_NAMES.index(T.decode(faster[i]).attrs["tempo"]),
        )
        assert b == min(a + 1, len(TEMPO_NAMES) - 1)
    assert is_clean(tok).all()
    flawed = make_flawed(tok, torch.Generator().manual_seed(0))
    assert T.local_indices(flawed)[1].all()
    assert (flawed != tok).any(dim=1).all()  # every flawed rendition differs from its source
    assert not is_clean(flawed).all()
    again = make_flawed(tok, torch.Generator().manual_seed(0))
    assert torch.equal(flawed, again)  # seeded


# ------------------------------------------------------------------ eval maths


def test_eval_metrics_against_brute_force():
    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(30, generator=g) + 1, torch.randn(40, generator=g)
    pos[0] = neg[0]  # a tie
    brute = sum((p > n) + 0.5 * (p == n) for p in pos.tolist() for n in neg.tolist()) / (30 * 40)
    assert roc_auc(pos, neg) == pytest.approx(brute)
    q = torch.nn.functional.normalize(torch.randn(12, 5, generator=g), dim=-1)
    it = torch.nn.functional.normalize(torch.randn(12, 5, generator=g), dim=-1)
    correct = torch.eye(12, dtype=torch.bool)
    sim = q @ it.T
    for k in (1, 3):
        brute = sum(int((sim[i] > sim[i, i]).sum() < k) for i in range(12)) / 12
        assert recall_at_k(q, it, correct, k) == pytest.approx(brute)
    assert evaluate_embeddings(q, q)["recall@1"] == 1.0 and evaluate_embeddings(q, q)["auc"] == 1.0
    out = evaluate_retrieval(q, q, [f"c{i}" for i in range(12)])
    assert out["recall@1"] == 1.0 and out["chance@5"] == pytest.approx(5 / 12)
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == 0.5


# ------------------------------------------------------------------ Lightning smoke tests


def _fit(job, dm, steps=3):
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1, val_check_interval=steps, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(job, dm)
    return trainer


def test_embedder_job_fits_and_exports(tmp_path):
    dm = AudioDataModule(
        "embedder",
        tokens=clean_tokens(40),
        batch_size=8,
        val_pieces=10,
        clip_seconds=1.0,
        render=short_render,
    )
    job = EmbedderJob(
        model_config={"encoder": TINY_ENC, "out_dim": 16}, max_steps=3, warmup_steps=1
    )
    trainer = _fit(job, dm)
    assert {"val/recall@1", "val/auc", "train/loss"} <= set(trainer.callback_metrics)
    job.export(tmp_path / "e.pt")
    ckpt = tmp_path / "e.ckpt"
    trainer.save_checkpoint(ckpt)
    x = torch.randn(2, 16000) * 0.1
    a, b = AudioEmbedder.from_checkpoint(tmp_path / "e.pt"), AudioEmbedder.from_checkpoint(ckpt)
    torch.testing.assert_close(a(x), b(x))


def test_preference_and_scorer_jobs_fit():
    dm = AudioDataModule(
        "preference", tokens=clean_tokens(40), batch_size=4, val_pieces=8, render=short_render
    )
    job = PreferenceJob(model_config={"encoder": TINY_ENC, "hidden": 8}, max_steps=2)
    assert "val/pairwise_acc" in _fit(job, dm, 2).callback_metrics
    assert isinstance(job.model, PreferenceModel)

    class Tower:
        def encode(self, prompts):
            return torch.nn.functional.normalize(torch.randn(len(prompts), 384), dim=-1)

    caps = [f"caption {i % 7}" for i in range(40)]
    dm = AudioDataModule(
        "scorer",
        tokens=clean_tokens(40),
        captions=caps,
        batch_size=8,
        val_pieces=10,
        render=short_render,
        text_tower=Tower(),
    )
    job = ScorerJob(
        model_config={"encoder": TINY_ENC, "text_hidden": 16, "joint_dim": 8}, max_steps=2
    )
    metrics = _fit(job, dm, 2).callback_metrics
    assert {"val/recall@1", "val/recall@5"} <= set(metrics)


def test_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        AudioDataModule("nope")
    with pytest.raises(ValueError, match="lr"):
        EmbedderJob(lr=0.0)
    with pytest.raises(ValueError, match="preset"):
        ScorerJob(preset="huge")
    dm = AudioDataModule("scorer", tokens=clean_tokens(20), captions=None)
    with pytest.raises(ValueError, match="caption"):
        dm.setup()


@pytest.mark.parametrize("mode", ["shared", "independent"])
def test_embedder_pairs_share_or_draw_their_pitch_and_tempo_shift(mode):
    """shared: both chunks come from ONE re-rendered, shifted copy of the piece (B rows);
    independent: each chunk from its own shifted copy (2B rows). Noise differs in both."""
    seen = []

    def recording_render(tokens):
        seen.append(tokens.clone())
        return short_render(tokens)

    dm = AudioDataModule(
        "embedder", tokens=clean_tokens(40), batch_size=8, val_pieces=10, clip_seconds=1.0,
        render=recording_render, pair_augment=mode, max_transpose=3,
    )  # fmt: skip
    dm.setup()
    dm.trainer = type("T", (), {"training": True})()
    tokens = dm._tokens[:8]
    out = dm.on_after_batch_transfer({"tokens": tokens, "index": torch.arange(8)}, 0)
    assert out["audio"].shape[0] == 16 and torch.equal(out["label"][:8], out["label"][8:])
    (rendered,) = seen
    assert len(rendered) == (8 if mode == "shared" else 16)
    assert not torch.equal(out["audio"][:8], out["audio"][8:])  # chunks never identical
    with pytest.raises(ValueError, match="pair_augment"):
        AudioDataModule("embedder", tokens=clean_tokens(40), pair_augment="both")
