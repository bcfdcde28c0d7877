"""Token grammar of the music world: mask, encode / decode, crash-free decoding."""

import numpy as np
import pytest
import torch

from suite.music import attributes as A
from suite.music import composer as C
from suite.music import tokens as T


def test_sizes_and_mask_partition():
    assert T.SEQ_LEN <= 256 and 100 <= T.VOCAB_SIZE <= 600
    mask = T.allowed_mask()
    assert mask.shape == (T.SEQ_LEN, T.VOCAB_SIZE) and mask.dtype == torch.bool
    assert mask.any(1).all()  # every position has a type
    assert mask.any(0).all()  # every token is usable somewhere
    # each token belongs to exactly one type: the set of positions allowing a token is the
    # set of positions of one type
    kinds = {}
    for pos, kind in enumerate(T.POSITION_TYPES):
        kinds.setdefault(kind, []).append(pos)
    for kind, positions in kinds.items():
        lo, hi = T.TYPE_RANGES[kind]
        cols = mask[:, lo:hi]
        assert cols[positions].all() and cols.sum() == len(positions) * (hi - lo)
    mask[0, 0] = not mask[0, 0]
    assert T.allowed_mask()[0, 0] != mask[0, 0]  # callers get a copy


def test_encode_decode_roundtrip():
    for i in range(30):
        comp = C.compose(np.random.default_rng([5, i]))
        toks = T.encode(comp.piece)
        assert toks.shape == (T.SEQ_LEN,)
        assert T.allowed_mask()[torch.arange(T.SEQ_LEN), torch.from_numpy(toks)].all()
        dec = T.decode(toks)
        assert dec.n_invalid == 0 and dec.invalid_header == []
        assert dec.attrs == comp.piece.attrs
        for field in T.TRACK_FIELDS.values():
            assert getattr(dec, field) == getattr(comp.piece, field)


def test_decode_never_crashes_and_counts_invalid():
    rng = np.random.default_rng(0)
    mask = T.allowed_mask().numpy()
    for _ in range(20):
        seq = rng.integers(-50, T.VOCAB_SIZE + 50, size=T.SEQ_LEN)
        in_vocab = (seq >= 0) & (seq < T.VOCAB_SIZE)
        ok = np.zeros(T.SEQ_LEN, bool)
        ok[in_vocab] = mask[np.arange(T.SEQ_LEN)[in_vocab], seq[in_vocab]]
        dec = T.decode(seq)
        assert dec.n_invalid == int((~ok).sum())
        assert set(dec.attrs) == set(A.ATTRIBUTE_NAMES)
    assert T.decode([1, 2, 3]).n_invalid >= T.SEQ_LEN - 3  # too short: padded, counted
    assert T.decode(np.zeros(T.SEQ_LEN + 7, int)).n_invalid >= 7  # too long: counted
    assert T.decode(torch.full((T.SEQ_LEN,), float("nan"))).n_invalid == T.SEQ_LEN
    T.decode(torch.tensor([10**12] * T.SEQ_LEN))


def test_local_indices_matches_scalar_decode():
    rng = np.random.default_rng(1)
    toks = torch.from_numpy(rng.integers(0, T.VOCAB_SIZE, size=(4, T.SEQ_LEN)))
    local, valid = T.local_indices(toks)
    for row in range(4):
        for pos in (0, 5, T.HEADER_LEN + 3, T.SEQ_LEN - 1):
            lo, hi = T.TYPE_RANGES[T.POSITION_TYPES[pos]]
            tok = int(toks[row, pos])
            assert bool(valid[row, pos]) == (lo <= tok < hi)
            if lo <= tok < hi:
                assert int(local[row, pos]) == tok - lo


def test_unknown_attribute_value_is_a_clear_error():
    piece = C.compose(np.random.default_rng(0)).piece
    piece.attrs["genre"] = "polka"
    with pytest.raises(ValueError, match="polka"):
        T.encode(piece)
    with pytest.raises(ValueError, match="tempo"):
        A.check_value("tempo", "glacial")
    with pytest.raises(ValueError, match="loudness"):
        A.check_value("loudness", "loud")


def test_note_spans_and_chords():
    track = [60, T.HOLD, T.REST, T.HOLD, 62, 64, T.HOLD] + [T.REST] * (T.N_STEPS - 7)
    assert T.note_spans(track) == [(0, 2, 60), (4, 5, 62), (5, 7, 64)]
    code = T.chord_code(9, "min")  # A minor
    assert sorted(p % 12 for p in T.chord_pitches(code)) == [0, 4, 9]
    assert T.token_name(T.TYPE_RANGES["genre"][0]) == "genre:jazz"
