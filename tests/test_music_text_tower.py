"""The text tower on music-world captions: paraphrases are closer than other genres."""

import numpy as np
import pytest
import torch

from suite.music import captions as K
from suite.music import composer as C


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    from suite.models.text_tower import TextTower

    return TextTower(cache_dir=tmp_path_factory.mktemp("text_cache"), progress=False)


def test_paraphrases_are_closer_than_other_genres(tower):
    rng = np.random.default_rng(0)
    genres = ["jazz", "rock", "classical", "ambient", "electronic", "folk", "blues", "metal"]
    groups = []
    for genre in genres:
        attrs = C.sample_attributes(rng, genre=genre)
        # four captions of the same piece (same attributes), different phrasings
        texts = {
            K.describe(rng, attrs, None, quality=False, require=("genre", "mood"))
            for _ in range(12)
        }
        groups.append(sorted(texts)[:4])
    flat = [t for g in groups for t in g]
    emb = tower.encode(flat).double()  # [G * 4, 384]
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(flat), dtype=torch.float64), atol=1e-5)
    sim = (emb @ emb.T).numpy()
    label = np.repeat(np.arange(len(groups)), 4)
    same = (label[:, None] == label[None, :]) & ~np.eye(len(flat), dtype=bool)
    other = label[:, None] != label[None, :]
    gap = sim[same].mean() - sim[other].mean()
    assert gap > 0.1, gap
    # and per caption: its paraphrases beat the other genres on average
    per_row = [(sim[i][same[i]].mean() > sim[i][other[i]].mean()) for i in range(len(flat))]
    assert np.mean(per_row) >= 0.9


def test_null_prompt_is_zero(tower):
    emb = tower.encode(["", "Rock song."])
    assert torch.count_nonzero(emb[0]) == 0 and emb[1].norm() > 0.99
