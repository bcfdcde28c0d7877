"""Corpus building: determinism, caching, atomic writes, flaw and caption statistics."""

import re

import numpy as np
import pytest

from suite.music import captions as K
from suite.music import composer as C
from suite.music import corpus


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = corpus.build_corpus(3, 60, root=tmp_path / "a", progress=False)
    b = corpus.build_corpus(3, 60, root=tmp_path / "b", progress=False)
    c = corpus.build_corpus(4, 60, root=tmp_path / "c", progress=False)
    for name in ("tokens.npy", "pieces.jsonl", "manifest.json"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes()
    assert (a.path / "tokens.npy").read_bytes() != (c.path / "tokens.npy").read_bytes()
    assert not np.array_equal(a.tokens, c.tokens)
    # a prefix of a larger corpus is the smaller corpus
    big = corpus.generate(3, 80, progress=False)
    assert np.array_equal(big.tokens[:60], a.tokens) and big.captions[:60] == a.captions


def test_cache_is_reused_and_loaded(tmp_path, monkeypatch):
    first = corpus.build_corpus(1, 20, root=tmp_path, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("the cached corpus should have been loaded")

    monkeypatch.setattr(corpus, "generate", boom)
    again = corpus.build_corpus(1, 20, root=tmp_path, progress=False)
    assert np.array_equal(first.tokens, again.tokens) and first.captions == again.captions
    assert again.path == first.path


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(corpus.np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        corpus.build_corpus(2, 10, root=tmp_path, progress=False)
    parent = tmp_path / "artifacts" / "music_corpus"
    assert list(parent.iterdir()) == []  # neither the corpus nor a temp directory


def test_bad_arguments_and_corrupt_cache(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        corpus.generate(-1, 5)
    with pytest.raises(ValueError, match="n must be"):
        corpus.generate(0, 0)
    with pytest.raises(FileNotFoundError, match="manifest"):
        corpus.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        corpus.load(tmp_path)


def test_flaw_and_caption_statistics():
    c = corpus.generate(0, 900, progress=False)
    flawed = c.flawed
    assert 0.27 < flawed.mean() < 0.40  # about a third
    bad = re.compile(
        "|".join(re.escape(p.lower().rstrip(".")) for ps in K.BAD_PHRASES.values() for p in ps)
    )
    good = re.compile("|".join(re.escape(p) for p in K.GOOD_PHRASES))
    tagged = np.array([bool(bad.search(cap.lower())) for cap in c.captions])
    assert not tagged[~flawed].any()  # clean pieces never say they are bad
    share = tagged[flawed].mean()
    assert 0.15 < share < 0.35  # a minority of flawed captions admit it
    good_share = np.mean([bool(good.search(cap.lower())) for cap in np.array(c.captions)[~flawed]])
    assert 0.07 < good_share < 0.25
    assert any(
        cap.startswith(K.NEGATIVE_PROMPT.rstrip(".")) or K.NEGATIVE_PROMPT in cap
        for cap in c.captions
    )
    assert len(set(c.captions)) > 0.8 * len(c)  # varied phrasings
    # held-out genre x mood combinations never appear in the corpus
    pairs = {(a["genre"], a["mood"]) for a in c.attrs}
    assert not pairs & C.HELD_OUT_COMBOS
    # flaws are spread through the sequence, not only in the header
    local = [f for f in c.flaws if set(f) - {"recording"}]
    assert len(local) == flawed.sum()


def test_genres_are_musically_distinct():
    rng = np.random.default_rng(0)
    stats = {}
    for genre in ("metal", "ambient", "jazz", "electronic"):
        pieces = [C.compose_clean(rng, C.sample_attributes(rng, genre=genre)) for _ in range(20)]
        onsets = np.mean([sum(p >= 0 for p in x.melody) for x in pieces])
        kicks = np.mean([sum(h & C.KICK > 0 for h in x.drums) for x in pieces])
        sevenths = np.mean(
            [np.mean([c % 8 in (2, 3, 4) for c in x.chord if c >= 0]) for x in pieces]
        )
        stats[genre] = (onsets, kicks, sevenths)
    assert stats["metal"][0] > 2 * stats["ambient"][0]  # busy vs sparse melodies
    assert stats["metal"][1] > 20 and stats["ambient"][1] < 3  # double kick vs no kick
    assert stats["jazz"][2] > 0.9 and stats["electronic"][2] < 0.1  # seventh chords


def test_corpus_bytes_do_not_depend_on_the_process(tmp_path):
    """Two fresh interpreters with different hash seeds write identical corpora."""
    import os
    import subprocess
    import sys

    for i, hashseed in enumerate(("1", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "suite.music.corpus",
                "--seed",
                "5",
                "--n",
                "40",
                "--root",
                str(tmp_path / str(i)),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    a, b = (corpus.corpus_dir(5, 40, tmp_path / str(i)) for i in range(2))
    for name in ("tokens.npy", "pieces.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
