"""Tests for the frozen MiniLM text tower (suite/models/text_tower.py)."""

import pytest
import torch

from suite.models.text_tower import COND_DIM, TextTower


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    return TextTower(cache_dir=tmp_path_factory.mktemp("text_cache"), progress=False)


def test_shape_norm_and_null(tower):
    emb = tower.encode(["Rock song.", "", "A calm piano piece.", "   "])
    assert emb.shape == (4, COND_DIM) and emb.dtype == torch.float32
    norms = emb.norm(dim=1)
    torch.testing.assert_close(norms[[0, 2]], torch.ones(2))
    assert torch.count_nonzero(emb[1]) == 0 and torch.count_nonzero(emb[3]) == 0
    assert tower.encode([]).shape == (0, COND_DIM)


def test_duplicates_and_order(tower):
    a = tower.encode(["jazz", "blues", "jazz"])
    torch.testing.assert_close(a[0], a[2])
    b = tower.encode(["blues", "jazz"])
    torch.testing.assert_close(a[:2].flip(0), b)


def test_cache_hits_never_call_the_model(tower, monkeypatch):
    prompts = ["Upbeat bossa nova with nylon guitar.", "Dark ambient drone."]
    first = tower.encode(prompts)

    def boom(*_):
        raise AssertionError("the model was called on a cached prompt")

    monkeypatch.setattr(tower, "_embed_batch", boom)
    assert torch.equal(tower.encode(prompts), first)  # memory hit
    fresh = TextTower(cache_dir=tower.cache_path.parent, progress=False)
    monkeypatch.setattr(fresh, "_embed_batch", boom)
    assert torch.equal(fresh.encode(prompts), first)  # disk hit, new process-like instance
    assert not fresh.model_loaded  # lazy loading: nothing loaded for a full cache hit


def test_paraphrases_closer_than_other_genres(tower):
    groups = [
        [
            "A fast rock song with distorted electric guitars.",
            "Energetic rock track, loud guitars.",
        ],
        ["Smooth jazz with a walking bass and saxophone.", "A mellow jazz tune featuring sax."],
        ["Slow classical piece for string quartet.", "Calm chamber music played by strings."],
    ]
    emb = tower.encode([p for g in groups for p in g]).view(3, 2, COND_DIM)
    same = torch.stack([emb[g, 0] @ emb[g, 1] for g in range(3)])
    other = torch.stack([emb[g, 0] @ emb[h, 1] for g in range(3) for h in range(3) if g != h])
    assert same.min() > other.max()


def test_bad_input(tower):
    with pytest.raises(TypeError, match="list of strings"):
        tower.encode("Rock song.")
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        tower.encode(["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        TextTower(batch_size=0, disk_cache=False)
