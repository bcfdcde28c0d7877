"""Deterministic, cached corpus building for the embedded music world (DESIGN.md section 5).

The paper pretrains MusicLM on captioned music (section 3.1); the suite pretrains its token
LM on this corpus: `n` composed pieces (composer.py) with captions (captions.py). Piece `i`
of seed `s` is composed from its own generator `default_rng([s, i])`, so a corpus is the
same byte for byte for a seed, and a prefix of a larger corpus equals the smaller one.

Cache layout (`<root>/artifacts/music_corpus/<name>/`, written to a temporary directory
and renamed into place, so a crash never leaves a half-written corpus):

    tokens.npy     int16 [n, SEQ_LEN]
    pieces.jsonl   one JSON object per piece: caption, attrs, flaws
    manifest.json  seed, n, world version, vocabulary size, sha256 of the two files

`build_midi_corpus` makes a corpus from a user's folder of .mid files instead (the import
itself is midi_import.py), cached the same way under `music_corpus/midi-<hash>/`.

Run on its own: `python -m suite.music.corpus --seed 0 --n 20000`, or from MIDI files:
`python -m suite.music.corpus --midi-dir my_midis/ --captions captions.csv`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from suite.artifacts import default_root, project_root  # noqa: F401 (re-exported)
from suite.music import attributes as A
from suite.music import captions, composer
from suite.music import tokens as T
from suite.music.midi_import import ImportReport, from_midi
from suite.music.oracle_prompt import parse_prompt

WORLD_VERSION = "2"  # 2: the recording lives in the steps, not in a header token


def artifacts_dir(root: str | Path | None = None) -> Path:
    """`<root>/artifacts`, root defaulting to the project root."""
    return Path(root) / "artifacts" if root is not None else default_root()


@dataclass
class Corpus:
    """An in-memory corpus: tokens [n, SEQ_LEN] plus per-piece caption, attrs, flaws."""

    tokens: np.ndarray
    captions: list[str]
    attrs: list[dict[str, str]]
    flaws: list[dict[str, int]]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def flawed(self) -> np.ndarray:
        return np.array([bool(f) for f in self.flaws])


def generate(seed: int, n: int, progress: bool = True) -> Corpus:
    """Compose n pieces for a seed (no caching). Piece i uses `default_rng([seed, i])`."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"music corpus: seed must be a non-negative int, got {seed!r}")
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"music corpus: n must be a positive int, got {n!r}")
    toks = np.empty((n, T.SEQ_LEN), dtype=np.int16)
    caps, attrs, flaws = [], [], []
    for i in tqdm(
        range(n),
        desc=f"composing corpus seed={seed}",
        disable=not progress,
        unit="piece",
        mininterval=0.5,
    ):
        rng = np.random.default_rng([int(seed), i])
        comp = composer.compose(rng)
        toks[i] = T.encode(comp.piece)
        caps.append(captions.describe(rng, comp.piece.attrs, comp.flaws))
        attrs.append(comp.piece.attrs)
        flaws.append(comp.flaws)
    return Corpus(toks, caps, attrs, flaws)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(corpus: Corpus, directory: Path, meta: dict) -> Path:
    """Write a corpus atomically: temporary sibling directory, then rename into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        np.save(tmp / "tokens.npy", corpus.tokens.astype(np.int16), allow_pickle=False)
        with (tmp / "pieces.jsonl").open("w", encoding="utf-8") as handle:
            for cap, att, fl in zip(corpus.captions, corpus.attrs, corpus.flaws):
                handle.write(
                    json.dumps({"caption": cap, "attrs": att, "flaws": fl}, sort_keys=True) + "\n"
                )
        manifest = {
            **meta,
            "n": len(corpus),
            "world_version": WORLD_VERSION,
            "seq_len": T.SEQ_LEN,
            "vocab_size": T.VOCAB_SIZE,
            "sha256": {name: _sha256(tmp / name) for name in ("tokens.npy", "pieces.jsonl")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.replace(tmp, directory)
        except OSError:
            if not (directory / "manifest.json").is_file():  # not a concurrent twin: re-raise
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process wrote the same corpus
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load(directory: str | Path) -> Corpus:
    """Read a cached corpus, checking its manifest; clear errors name the file."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"music corpus: no manifest.json in {directory}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"music corpus: {manifest_path} is not valid JSON: {err}") from err
    if manifest.get("seq_len") != T.SEQ_LEN or manifest.get("vocab_size") != T.VOCAB_SIZE:
        raise ValueError(
            f"music corpus {directory} was built for seq_len={manifest.get('seq_len')}, "
            f"vocab_size={manifest.get('vocab_size')}; this code has {T.SEQ_LEN}, {T.VOCAB_SIZE}"
        )
    toks = np.load(directory / "tokens.npy", allow_pickle=False).astype(np.int64)
    caps, attrs, flaws = [], [], []
    with (directory / "pieces.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            caps.append(row["caption"])
            attrs.append(row["attrs"])
            flaws.append(row["flaws"])
    if len(caps) != len(toks) or len(toks) != manifest["n"]:
        raise ValueError(
            f"music corpus {directory}: {len(toks)} token rows, {len(caps)} "
            f"captions, manifest says {manifest['n']}"
        )
    return Corpus(toks, caps, attrs, flaws, path=directory)


def corpus_dir(seed: int, n: int, root: str | Path | None = None) -> Path:
    return artifacts_dir(root) / "music_corpus" / f"v{WORLD_VERSION}-seed{seed}-n{n}"


def build_corpus(
    seed: int = 0,
    n: int = 20000,
    root: str | Path | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> Corpus:
    """The corpus for (seed, n), from the cache under `<root>/artifacts/` or built now."""
    directory = corpus_dir(seed, n, root)
    if not rebuild and (directory / "manifest.json").is_file():
        return load(directory)
    corpus = generate(seed, n, progress=progress)
    save(corpus, directory, {"seed": int(seed), "source": "composer"})
    corpus.path = directory
    return corpus


def build_midi_corpus(
    folder: str | Path,
    captions_csv: str | Path | None = None,
    root: str | Path | None = None,
    progress: bool = True,
) -> tuple[Corpus, ImportReport]:
    """A corpus from a folder of .mid files, captions from a CSV (columns file, caption).

    Header attributes are parsed from each caption where it names them. Returns (Corpus,
    ImportReport); the corpus is cached under `<root>/artifacts/music_corpus/midi-<hash>`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"build_midi_corpus: MIDI folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        raise ValueError(f"build_midi_corpus: no .mid files in {folder}")
    caption_of: dict[str, str] = {}
    if captions_csv is not None:
        captions_csv = Path(captions_csv)
        if not captions_csv.is_file():
            raise FileNotFoundError(f"build_midi_corpus: captions CSV {captions_csv} not found")
        with captions_csv.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
                raise ValueError(
                    f"build_midi_corpus: {captions_csv} needs 'file' and 'caption' "
                    f"columns, found {reader.fieldnames}"
                )
            for row in reader:
                caption_of[Path(row["file"]).name] = row["caption"] or ""
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    digest.update(repr(sorted(caption_of.items())).encode())
    report = ImportReport()
    toks, caps, attrs = [], [], []
    for p in tqdm(files, desc="importing MIDI", disable=not progress):
        caption = caption_of.get(p.name, "")
        parsed = {k: v for k, v in parse_prompt(caption).items() if k in A.ATTRIBUTES}
        row, rep = from_midi(p, parsed)
        report.merge(rep)
        toks.append(row)
        caps.append(caption)
        attrs.append(T.decode(row).attrs)
    corpus = Corpus(np.stack(toks), caps, attrs, [{} for _ in files])
    directory = artifacts_dir(root) / "music_corpus" / f"midi-{digest.hexdigest()[:12]}"
    save(corpus, directory, {"source": str(folder), "import": report.summary()})
    corpus.path = directory
    return corpus, report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the embedded music corpus (cached).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--root", default=None, help="project root (artifacts/ goes under it)")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--midi-dir", default=None, help="build from a folder of .mid files")
    parser.add_argument("--captions", default=None, help="CSV with file,caption columns")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.midi_dir:
        corpus, report = build_midi_corpus(args.midi_dir, args.captions, root=args.root)
        print(report.summary())
    else:
        corpus = build_corpus(args.seed, args.n, root=args.root, rebuild=args.rebuild)
    flawed = corpus.flawed.mean() if len(corpus) else 0.0
    print(
        f"corpus: {len(corpus)} pieces at {corpus.path} ({flawed:.1%} flawed), "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
