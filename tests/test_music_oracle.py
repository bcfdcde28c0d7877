"""Oracle judge: separates clean from flawed, recognises attributes, compare, distance."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from suite.music import attributes as A
from suite.music import composer as C
from suite.music import oracle as O
from suite.music import tokens as T


@pytest.fixture(scope="module")
def pieces():
    comps = [C.compose(np.random.default_rng([11, i])) for i in range(500)]
    return comps, [T.encode(c.piece) for c in comps]


def test_quality_separates_clean_from_flawed(pieces):
    comps, toks = pieces
    quality = np.array([O.judge(t).quality for t in toks])
    flawed = np.array([c.flawed for c in comps])
    assert ((quality >= 0) & (quality <= 1)).all()
    u = mannwhitneyu(quality[~flawed], quality[flawed], alternative="greater").statistic
    auc = u / (flawed.sum() * (~flawed).sum())
    assert auc >= 0.95


def test_recognises_attributes_of_clean_pieces(pieces):
    comps, toks = pieces
    hits = {a: [] for a in A.ATTRIBUTE_NAMES}
    for comp, tok in zip(comps, toks):
        if comp.flawed:
            continue
        seen = O.recognise(tok)
        for a in A.ATTRIBUTE_NAMES:
            hits[a].append(seen[a] == comp.piece.attrs[a])
    for a, h in hits.items():
        assert np.mean(h) >= 0.9, (a, np.mean(h))


def test_recognition_reads_content_not_the_genre_token():
    comp = C.compose(np.random.default_rng(3), flawed=False)
    comp.piece.attrs["genre"] = "metal" if comp.piece.attrs["genre"] != "metal" else "jazz"
    true_genre = O.recognise(T.encode(comp.piece))["genre"]
    assert true_genre != comp.piece.attrs["genre"]
    j = O.judge(T.encode(comp.piece), {"genre": comp.piece.attrs["genre"]})
    assert j.adherence["genre"] == 0.5  # the header says it, the content does not


def test_flaw_scores_follow_injected_flaws():
    rng = np.random.default_rng(0)
    attrs = C.sample_attributes(rng, genre="rock")
    piece = C.compose_clean(rng, attrs)
    clean = O.judge(T.encode(piece))
    assert clean.in_key == 1.0 and clean.quality > 0.95
    scale = set(C.scale_pitch_classes(attrs["key"], attrs["mode"]))
    bad = T.Piece(
        dict(attrs), list(piece.melody), piece.chord, piece.bass, piece.drums, [0] * T.N_STEPS
    )
    notes = [i for i, p in enumerate(bad.melody) if p >= 0]
    wrong = 0
    for i in notes[::2]:
        q = bad.melody[i] + 1 if (bad.melody[i] + 1) % 12 not in scale else bad.melody[i] - 1
        if q % 12 not in scale:
            bad.melody[i] = q
            wrong += 1
    j = O.judge(T.encode(bad))
    n_pitches = (
        len(notes)
        + sum(p >= 0 for p in piece.bass)
        + sum(len(T.chord_pitches(c)) for _, _, c in T.note_spans(piece.chord))
    )
    assert j.flaws["out_of_key"] == pytest.approx(wrong / n_pitches)
    assert j.quality < clean.quality
    bad.perf[4:8] = [3] * 4
    assert O.judge(T.encode(bad)).flaws["dropout"] == pytest.approx(4 / T.N_STEPS)


def test_compare_and_prompt_adherence():
    rng = np.random.default_rng(5)
    attrs = C.sample_attributes(rng, genre="jazz")
    clean = C.compose(rng, attrs, flawed=False).piece
    flawed = T.Piece(
        dict(clean.attrs),
        list(clean.melody),
        list(clean.chord),
        list(clean.bass),
        list(clean.drums),
        list(clean.perf),
    )
    C.add_flaws(np.random.default_rng(1), flawed)
    a, b = T.encode(clean), T.encode(flawed)
    assert O.compare(a, b, "A jazz piece") == "win"
    assert O.compare(b, a, "A jazz piece") == "loss"
    assert O.compare(a, a, "A jazz piece") == "tie"
    rock = T.encode(C.compose(rng, C.sample_attributes(rng, genre="rock"), flawed=False).piece)
    assert O.compare(a, rock, {"genre": "jazz"}) == "win"
    j = O.judge(b, {"quality": "bad"})
    assert j.adherence["quality"] == pytest.approx(1 - j.quality)
    with pytest.raises(ValueError, match="polka"):
        O.judge(a, {"genre": "polka"})


def test_distance_is_musically_aware():
    rng = np.random.default_rng(8)
    base = C.compose(rng, C.sample_attributes(rng, genre="folk"), flawed=False).piece
    a = T.encode(base)
    assert O.distance(a, a) == 0.0
    # the same music transposed: near; a metal piece: far
    shifted = T.Piece(
        {**base.attrs, "key": A.KEYS[(A.KEYS.index(base.attrs["key"]) + 2) % 12]},
        [p + 2 if p >= 0 else p for p in base.melody],
        [((c // 8 + 2) % 12) * 8 + c % 8 if c >= 0 else c for c in base.chord],
        [p + 2 if p >= 0 else p for p in base.bass],
        base.drums,
        base.perf,
    )
    other = T.encode(C.compose(rng, C.sample_attributes(rng, genre="metal"), flawed=False).piece)
    assert O.distance(a, T.encode(shifted)) < 0.1 < O.distance(a, other)
    assert O.distance(a, other) == pytest.approx(O.distance(other, a))
    assert 0.0 <= O.distance(a, other) <= 1.0


def test_parse_prompt():
    assert O.parse_prompt("Rock song.") == {"genre": "rock"}
    assert O.parse_prompt("A peaceful sunset on a beach")["mood"] == "calm"
    assert O.parse_prompt("Opera singer") == {"genre": "classical", "lead": "voice"}
    assert O.parse_prompt("Male choir harmony") == {"chords": "choir"}
    assert O.parse_prompt("Bad audio quality.") == {"quality": "bad"}
    got = O.parse_prompt("Melancholic jazz at 100 BPM in F# dorian, led by tenor sax")
    assert got == {
        "genre": "jazz",
        "mood": "sad",
        "tempo": "relaxed",
        "key": "F#",
        "mode": "dorian",
        "lead": "saxophone",
    }
    assert "quality" not in O.parse_prompt("metal with distorted guitar")
    assert O.parse_prompt("") == {}
    with pytest.raises(TypeError):
        O.parse_prompt(None)
