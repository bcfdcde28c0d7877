"""Judges for real audio: the audio-folder DataModule for E, CLAP as the MuLan-style scorer,
and resampling between a policy's rate and a judge's (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.audio_folder import AudioFolderDataModule, list_audio
from lightning_modules.judges import Resampled, at_rate
from suite.models.clap import ClapScorer
from suite.models.judge_specs import load_judge
from suite.models.mel import resample


def _folder(tmp_path, n: int = 12, seconds: float = 7.0, rate: int = 22050):
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (110 + 37 * i) * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
        suffix = (".wav", ".flac", ".ogg")[i % 3]
        sf.write(d / ("sub" if i % 2 else "") / f"f{i:02d}{suffix}", tone.astype(np.float32), rate)
    sf.write(d / "short.wav", np.zeros(rate, dtype=np.float32), rate)  # 1 s: left out
    (d / "notes.txt").write_text("not audio")
    return d


def test_pairs_are_two_non_overlapping_chunks_of_one_file_at_the_embedders_rate(tmp_path):
    folder = _folder(tmp_path)
    assert len(list_audio(folder)) == 13
    dm = AudioFolderDataModule(str(folder), batch_size=4, clip_seconds=3.0, val_files=2, seed=0)
    dm.setup("fit")
    assert len(dm.splits["train"]) == 10 and len(dm.splits["val"]) == 2  # short.wav left out
    batch = next(iter(dm.val_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)  # no trainer: validation pairs, no augmentation
    a, b = out["audio_a"], out["audio_b"]
    assert a.shape == (2, 48000) and b.shape == (2, 48000)
    i = dm.splits["val"][0]
    whole, _ = sf.read(dm._files[i], dtype="float32")
    ref = resample(torch.from_numpy(whole), 22050, 16000)
    torch.testing.assert_close(a[0], ref[:48000], atol=2e-3, rtol=0)  # chunk 1 = [0, 3) s
    torch.testing.assert_close(b[0], ref[48000:96000], atol=2e-3, rtol=0)  # chunk 2 = [3, 6) s


def test_training_batches_have_the_embedder_jobs_layout(tmp_path):
    dm = AudioFolderDataModule(str(_folder(tmp_path)), batch_size=4, clip_seconds=2.0, val_files=2)
    dm.setup("fit")

    class _Trainer:
        training = True

    dm.trainer = _Trainer()
    out = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert out["audio"].shape == (8, 32000) and torch.equal(out["label"][:4], out["label"][4:])
    assert torch.isfinite(out["audio"]).all() and out["audio"].abs().max() <= 1.0


def test_bad_folders_are_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_audio(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .wav/.flac/.ogg files"):
        list_audio(tmp_path / "empty")
    few = AudioFolderDataModule(str(_folder(tmp_path, n=4)), batch_size=2)
    with pytest.raises(ValueError, match="at least 10 are needed"):
        few.setup("fit")
    with pytest.raises(ValueError, match="only the embedder task"):
        AudioFolderDataModule(str(tmp_path), task="scorer")


@pytest.mark.slow
def test_the_embedder_artifact_builds_from_a_folder_spec(tmp_path):
    from lightning_modules.artifacts import resolve
    from suite.models.vit import AudioEmbedder

    spec = {"seed": 0, "data": {"folder": str(_folder(tmp_path)), "batch_size": 4, "val_files": 2,
                                "clip_seconds": 3.0},
            "model": {"preset": "tiny"}, "train": {"max_steps": 2, "val_every": 2, "accelerator": "cpu"}}  # fmt: skip
    path = resolve("embedder", spec, root=tmp_path)
    assert AudioEmbedder.from_checkpoint(path).sample_rate == 16000
    from lightning_modules.artifacts import _sources

    names = [p.name for p in _sources("embedder", spec)]
    assert "audio_folder.py" in names and "audio.py" not in names  # its code is in the hash
    assert "folder" in (path.parent / "record.json").read_text()


def test_clap_scores_are_cosines_and_judge_specs_pick_it():
    clap = load_judge("scorer", {"name": "clap", "tiny": True}, resolve=None)
    assert isinstance(clap, ClapScorer) and clap.sample_rate == 48000
    audio = 0.1 * torch.randn(3, 48000)
    emb = clap.embed_audio(audio)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    scores = clap.score(audio, ["Rock song.", "A calm piano piece", "Jazz"])
    assert scores.shape == (3,) and (scores.abs() <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="unknown model spec name 'clap'; for a embedder"):
        load_judge("embedder", {"name": "clap", "tiny": True}, resolve=None)
    with pytest.raises(ValueError, match="either checkpoint"):
        ClapScorer.from_spec()
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        ClapScorer.from_spec(checkpoint="/nonexistent/clap")


def test_a_32k_policy_feeds_the_48k_clap_through_the_resampler():
    clap = ClapScorer.from_spec(tiny=True)
    judge = at_rate(clap, 32000, "scorer", "test")
    assert isinstance(judge, Resampled) and judge.sample_rate == 32000
    audio = 0.1 * torch.randn(2, 32000)
    torch.testing.assert_close(judge.score(audio, ["a", "b"]),
                               clap.score(resample(audio, 32000, 48000), ["a", "b"]))  # fmt: skip
    assert at_rate(clap, 48000, "scorer", "test") is clap
