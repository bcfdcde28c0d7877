"""MIDI export / re-import, WAV export, MIDI corpus, bad MIDI input."""

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch

from suite.music import composer as C
from suite.music import corpus as music_corpus
from suite.music import midi as M
from suite.music import render as R
from suite.music import tokens as T


def _expected_notes(piece):
    """(program or 'drum', pitch, start, end) computed from the piece, independently."""
    dt = 60.0 / (
        dict(
            (t[0], t[3]) for t in __import__("suite.music.attributes", fromlist=["TEMPOS"]).TEMPOS
        )[piece.attrs["tempo"]]
        * 4
    )
    out = []

    def spans(track):
        cur = None
        for s, v in enumerate(track + [T.REST]):
            if v == T.HOLD and cur:
                cur[1] = s + 1
                continue
            if cur:
                out_spans.append(tuple(cur))
                cur = None
            if v not in (T.REST, T.HOLD):
                cur = [s, s + 1, v]

    for track, kind in ((piece.melody, "mel"), (piece.bass, "bass"), (piece.chord, "chord")):
        out_spans = []
        spans(track)
        for s, e, v in out_spans:
            pitches = T.chord_pitches(v) if kind == "chord" else [v]
            out += [(kind, p, round(s * dt, 3), round(e * dt, 3)) for p in pitches]
    for s, h in enumerate(piece.drums):
        out += [
            ("drum", n, round(s * dt, 3), round((s + 0.5) * dt, 3))
            for b, n in enumerate((36, 38, 42, 51, 37))
            if h >> b & 1
        ]
    return sorted(out)


def _read_notes(path):
    pm = pretty_midi.PrettyMIDI(str(path))
    out = []
    for inst in pm.instruments:
        kind = (
            "drum"
            if inst.is_drum
            else inst.name.split(":")[0].replace("lead", "mel").replace("chords", "chord")
        )
        out += [(kind, n.pitch, round(n.start, 3), round(n.end, 3)) for n in inst.notes]
    return sorted(out)


def test_midi_written_then_read_has_the_same_notes(tmp_path):
    for i in range(12):
        piece = C.compose(np.random.default_rng([2, i]), flawed=False).piece
        path = M.write_midi(T.encode(piece), tmp_path / f"{i}.mid")
        assert _read_notes(path) == _expected_notes(piece)


def test_any_token_sequence_exports(tmp_path):
    garbage = np.random.default_rng(0).integers(-3, T.VOCAB_SIZE + 3, T.SEQ_LEN)
    path = M.write_midi(garbage, tmp_path / "g.mid")
    pretty_midi.PrettyMIDI(str(path))
    flawed = C.compose(np.random.default_rng(4), flawed=True).piece
    pretty_midi.PrettyMIDI(str(M.write_midi(T.encode(flawed), tmp_path / "f.mid")))


def test_import_recovers_composed_tracks(tmp_path):
    for i in range(10):
        piece = C.compose(np.random.default_rng([6, i]), flawed=False).piece
        path = M.write_midi(T.encode(piece), tmp_path / f"{i}.mid")
        toks, report = M.from_midi(
            path, {"genre": piece.attrs["genre"], "mood": piece.attrs["mood"]}
        )
        dec = T.decode(toks)
        assert dec.n_invalid == 0
        assert (dec.melody, dec.bass, dec.chord, dec.drums) == (
            piece.melody,
            piece.bass,
            piece.chord,
            piece.drums,
        )
        for name in ("genre", "mood", "tempo", "lead", "chords", "bass", "drums"):
            assert dec.attrs[name] == piece.attrs[name], name
        assert not report.dropped


def test_import_reports_what_it_dropped(tmp_path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    lead = pretty_midi.Instrument(program=0)
    lead.notes += [
        pretty_midi.Note(90, 72, 0.0, 0.5),
        pretty_midi.Note(90, 76, 0.0, 0.5),
        pretty_midi.Note(90, 74, 9.0, 9.5),
    ]  # a second voice, and a late note
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes += [pretty_midi.Note(90, 36, 0.0, 0.1), pretty_midi.Note(90, 81, 0.5, 0.6)]
    pm.instruments += [lead, drums]
    pm.write(str(tmp_path / "x.mid"))
    toks, report = M.from_midi(tmp_path / "x.mid")
    assert report.dropped["melody polyphony"] == 1
    assert report.dropped["after two bars"] == 1
    assert report.dropped["unmapped drum note"] == 1
    assert T.decode(toks).melody[0] == 76  # the highest voice is kept
    assert report.guessed["genre"] == 1 and "genre" in report.summary()


def test_bad_midi_files(tmp_path):
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"this is not a midi file")
    with pytest.raises(ValueError, match="junk.mid"):
        M.from_midi(junk)
    with pytest.raises(FileNotFoundError, match="missing.mid"):
        M.from_midi(tmp_path / "missing.mid")
    with pytest.raises(ValueError, match="polka"):
        M.from_midi(junk, {"genre": "polka"})


def test_midi_corpus_from_folder(tmp_path):
    folder = tmp_path / "midis"
    for i in range(3):
        piece = C.compose(np.random.default_rng([8, i]), flawed=False).piece
        M.write_midi(T.encode(piece), folder / f"song{i}.mid")
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text("file,caption\nsong0.mid,A calm jazz tune\nsong1.mid,Rock song.\n")
    corpus, report = music_corpus.build_midi_corpus(folder, csv_path, root=tmp_path, progress=False)
    assert len(corpus) == 3 and corpus.captions == ["A calm jazz tune", "Rock song.", ""]
    assert corpus.attrs[0]["genre"] == "jazz" and corpus.attrs[0]["mood"] == "calm"
    assert (corpus.path / "manifest.json").is_file() and len(report.files) == 3
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("name,text\nsong0.mid,x\n")
    with pytest.raises(ValueError, match="bad.csv"):
        music_corpus.build_midi_corpus(folder, bad_csv, root=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        music_corpus.build_midi_corpus(tmp_path / "nowhere", None, root=tmp_path)


def test_wav_export(tmp_path):
    piece = C.compose(np.random.default_rng(1)).piece
    audio = R.render(torch.from_numpy(T.encode(piece))[None])[0]
    path = M.write_wav(audio, tmp_path / "a.wav")
    data, sr = sf.read(path)
    assert sr == R.SAMPLE_RATE and data.shape == (R.AUDIO_SAMPLES,)
    assert np.abs(data - audio.numpy()).max() < 1e-3
    with pytest.raises(ValueError, match="NaN"):
        M.write_wav(np.array([0.0, np.nan]), tmp_path / "b.wav")
    assert not (tmp_path / "b.wav").exists()
