"""Measurements and figure for docs/music_world.md (DESIGN.md section 5).

`python -m suite.music.report` measures the acceptance figures of the embedded music world
and writes the spectrogram figure:

- corpus determinism (same seed -> same bytes, different seeds differ) and build time;
- oracle: ROC AUC of quality, clean vs flawed (500 pieces), and attribute recognition
  accuracy on clean pieces;
- renderer: output length / range, spectral flatness clean vs flawed recordings, and
  rendering time of 128 pieces (wall and process CPU time);
- text tower: mean cosine of paraphrases minus mean cosine across genres, given an
  `encode` function (the music world imports no network: `python -m suite.world_report`
  passes the text tower's; here the measure is skipped without one);
- docs/music_world_spectrograms.png: log-mel-like spectrograms of a few pieces, including
  the same piece under each recording flaw.

It prints a markdown table; nothing here is used by training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from suite.music import attributes as A
from suite.music import captions as K
from suite.music import composer as C
from suite.music import corpus as music_corpus
from suite.music import oracle as O
from suite.music import render as R
from suite.music import tokens as T


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def measure_oracle(n: int = 500, seed: int = 11) -> dict[str, float]:
    comps = [C.compose(np.random.default_rng([seed, i])) for i in range(n)]
    toks = [T.encode(c.piece) for c in comps]
    quality = np.array([O.judge(t).quality for t in toks])
    flawed = np.array([c.flawed for c in comps])
    out = {
        "oracle_auc": _auc(quality[~flawed], quality[flawed]),
        "clean_quality_mean": float(quality[~flawed].mean()),
        "flawed_quality_mean": float(quality[flawed].mean()),
    }
    hits: dict[str, list[bool]] = {a: [] for a in A.ATTRIBUTE_NAMES}
    for comp, tok in zip(comps, toks):
        seen = O.recognise(tok)
        hits["recording"].append(seen["recording"] == comp.piece.attrs["recording"])  # all pieces
        if not comp.flawed:
            for a in A.HEADER_NAMES:
                hits[a].append(seen[a] == comp.piece.attrs[a])
    out.update({f"recognise_{a}": float(np.mean(h)) for a, h in hits.items()})
    return out


def spectral_flatness(audio: np.ndarray) -> np.ndarray:
    from scipy.signal import welch

    _, power = welch(audio, fs=R.SAMPLE_RATE, nperseg=1024)
    power = power + 1e-12
    return np.exp(np.log(power).mean(-1)) / power.mean(-1)


def measure_render(n_pieces: int = 128, threads: int = 2) -> dict[str, float]:
    torch.set_num_threads(threads)
    comps = [C.compose(np.random.default_rng([0, i])) for i in range(n_pieces)]
    batch = torch.from_numpy(np.stack([T.encode(c.piece) for c in comps]))
    R.render(batch[:2])  # tables
    walls, cpus = [], []
    for _ in range(5):  # the minimum is the least disturbed by other jobs on the machine
        w0, c0 = time.perf_counter(), time.process_time()
        audio = R.render(batch)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    clean = [C.compose(np.random.default_rng([1, i]), flawed=False).piece for i in range(32)]
    rows = [
        T.Piece({**p.attrs, "recording": rec}, p.melody, p.chord, p.bass, p.drums, p.perf,
                [A.RECORDINGS.index(rec)] * T.N_STEPS)  # fmt: skip
        for p in clean
        for rec in A.RECORDINGS
    ]
    flat = spectral_flatness(
        R.render(torch.from_numpy(np.stack([T.encode(r) for r in rows]))).numpy()
    ).reshape(len(clean), len(A.RECORDINGS))
    out = {
        "render_wall_s_128": min(walls),
        "render_cpu_s_128": min(cpus),
        "audio_samples": audio.shape[1],
        "audio_max_abs": float(audio.abs().max()),
        "audio_finite": float(torch.isfinite(audio).all()),
    }
    out.update({f"flatness_{rec}": float(flat[:, j].mean()) for j, rec in enumerate(A.RECORDINGS)})
    return out


def measure_corpus(n: int = 2000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        a = music_corpus.build_corpus(0, n, root=Path(tmp) / "a", progress=False)
        build = time.perf_counter() - t0
        b = music_corpus.build_corpus(0, n, root=Path(tmp) / "b", progress=False)
        c = music_corpus.build_corpus(1, n, root=Path(tmp) / "c", progress=False)
        same = all(
            (a.path / f).read_bytes() == (b.path / f).read_bytes()
            for f in ("tokens.npy", "pieces.jsonl")
        )
        differ = (a.path / "tokens.npy").read_bytes() != (c.path / "tokens.npy").read_bytes()
        bad = sum(bool(O.BAD_WORDS.search(cap.lower())) for cap, f in zip(a.captions, a.flaws) if f)
        return {
            f"corpus_build_s_{n}": build,
            "same_seed_identical": float(same),
            "different_seed_differs": float(differ),
            "flawed_share": float(a.flawed.mean()),
            "bad_tag_share_of_flawed": bad / max(1, int(a.flawed.sum())),
            "unique_caption_share": len(set(a.captions)) / n,
        }


def measure_text_tower(
    encode: Callable[[list[str]], torch.Tensor], seed: int = 0
) -> dict[str, float]:
    """Paraphrase vs cross-genre cosine of caption embeddings; `encode`: texts -> [n, D]."""
    rng = np.random.default_rng(seed)
    groups = []
    for genre in A.GENRES:
        attrs = C.sample_attributes(rng, genre=genre)
        texts = {
            K.describe(rng, attrs, None, quality=False, require=("genre", "mood"))
            for _ in range(16)
        }
        groups.append(sorted(texts)[:5])
    flat = [t for g in groups for t in g]
    emb = encode(flat).double().numpy()
    sim = emb @ emb.T
    label = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    same = (label[:, None] == label[None, :]) & ~np.eye(len(flat), dtype=bool)
    other = label[:, None] != label[None, :]
    return {
        "paraphrase_cos": float(sim[same].mean()),
        "cross_genre_cos": float(sim[other].mean()),
        "cosine_gap": float(sim[same].mean() - sim[other].mean()),
    }


def spectrogram_figure(path: Path) -> Path:
    """Spectrograms of four genres (clean) and one piece under each recording flaw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(3)
    pieces, titles = [], []
    for genre in ("jazz", "metal", "ambient", "electronic"):
        attrs = C.sample_attributes(rng, genre=genre)
        pieces.append(C.compose(rng, attrs, flawed=False).piece)
        titles.append(f"{genre}, {attrs['mood']}, {attrs['tempo']} (clean)")
    base = C.compose(rng, C.sample_attributes(rng, genre="rock"), flawed=False).piece
    for rec in A.RECORDINGS[1:]:
        pieces.append(
            T.Piece(
                {**base.attrs, "recording": rec},
                base.melody,
                base.chord,
                base.bass,
                base.drums,
                base.perf,
                [A.RECORDINGS.index(rec)] * T.N_STEPS,
            )
        )
        titles.append(f"rock, {rec} recording")
    sloppy = T.Piece(
        dict(base.attrs),
        list(base.melody),
        list(base.chord),
        list(base.bass),
        list(base.drums),
        list(base.perf),
    )
    C.add_flaws(np.random.default_rng(0), sloppy)
    sloppy.attrs["recording"], sloppy.rec = "clean", [0] * T.N_STEPS
    pieces.append(sloppy)
    titles.append("rock, local flaws: " + ", ".join(sorted(_flaw_kinds(base, sloppy))))
    audio = R.render(torch.from_numpy(np.stack([T.encode(p) for p in pieces]))).numpy()
    fig, axes = plt.subplots(4, 2, figsize=(12, 11), constrained_layout=True)
    for ax, wav, title in zip(axes.T.reshape(-1), audio, titles):
        with np.errstate(divide="ignore"):  # dropouts are exact silence: log10(0)
            ax.specgram(wav, NFFT=512, Fs=R.SAMPLE_RATE, noverlap=384, cmap="magma", vmin=-120)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 8000)
        ax.set_xlabel("s")
        ax.set_ylabel("Hz")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _flaw_kinds(clean: T.Piece, flawed: T.Piece) -> set[str]:
    kinds = set()
    if flawed.melody != clean.melody or flawed.bass != clean.bass:
        kinds.add("wrong_notes")
    perf = set(flawed.perf)
    kinds |= {"timing"} if perf & {1, 2} else set()
    kinds |= {"dropout"} if 3 in perf else set()
    kinds |= {"detune"} if 4 in perf else set()
    return kinds


def main(
    argv: list[str] | None = None,
    text_encoder: Callable[[], Callable[[list[str]], torch.Tensor]] | None = None,
    prog: str | None = None,
) -> None:
    """The CLI; `text_encoder` makes the `encode` of `measure_text_tower` (None: skipped)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--figure",
        default=str(music_corpus.project_root() / "docs" / "music_world_spectrograms.png"),
    )
    parser.add_argument("--corpus-n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    results.update(measure_corpus(args.corpus_n))
    results.update(measure_oracle())
    results.update(measure_render(threads=args.threads))
    if not args.skip_text and text_encoder is not None:
        results.update(measure_text_tower(text_encoder()))
    elif not args.skip_text:
        print("text tower: not measured here; `python -m suite.world_report` measures it")
    print(f"figure: {spectrogram_figure(Path(args.figure))}")
    print("| measure | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value:.4g} |")


if __name__ == "__main__":
    main()
