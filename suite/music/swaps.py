"""Attribute-swapped captions: hard negatives for the MuLan-style scorer (paper section 3.1).

The paper's text-adherence metric is MuLan's cosine; a contrastive scorer trained only on
in-batch negatives learns what separates captions in a batch (in this world the genre, which
92 % of captions name) and reads a prompt as a bag of genre words: on the validation
generations the committed scorer's cosine ranks pieces of one prompt at Spearman 0.21 with
the oracle's adherence, while linear probes of its audio embedding hear far more
(docs/music_world.md, session 14). NegCLIP (Yuksekgonul et al. 2023, "When and why
vision-language models behave like bags-of-words") adds, for each image, captions that
differ from the true one in one place. Here: a caption of the piece, and the same caption
(same random stream, so the same frame and words) with ONE named attribute changed to
another value; a swap the caption does not mention gives the same text and is dropped.
"""

from __future__ import annotations

import numpy as np

from suite.music import attributes as A
from suite.music.captions import describe

# What a swap may change: attributes a caption names and the renderer lets an audio judge
# hear (the key is left out: the tiny front end cannot resolve it, docs/music_world.md).
SWAPPABLE: tuple[str, ...] = ("genre", "mood", "tempo", "lead", "drums", "mode")
_VALUES: dict[str, tuple[str, ...]] = {
    "genre": A.GENRES,
    "mood": A.MOODS,
    "tempo": A.TEMPO_NAMES,
    "lead": A.LEAD_INSTRUMENTS,
    "drums": A.DRUM_STYLES,
    "mode": A.MODES,
}
# Each of these is named with odds 1/2 (at least one: the genre), so a caption names one to
# four of them; the corpus captions name genre 92 % of the time and the rest rarely.
_NAMED = ("genre", "mood", "tempo", "lead")


def swapped_captions(
    rng: np.random.Generator, attrs: dict[str, str], named: dict[str, str] | None = None
) -> tuple[str, list[str | None]]:
    """(caption, negatives): `negatives[k]` is the caption with `SWAPPABLE[k]` changed to
    another value, or None when the caption does not name it. `named`, if given, is filled
    with the attributes the caption names (`captions.describe`)."""
    require = tuple(a for a in _NAMED if rng.random() < 0.5) or ("genre",)
    seed = int(rng.integers(2**31))
    text = describe(np.random.default_rng(seed), attrs, None, quality=False, require=require,
                    named=named)  # fmt: skip
    negatives: list[str | None] = []
    for name in SWAPPABLE:
        others = [v for v in _VALUES[name] if v != attrs.get(name)]
        swapped = dict(attrs, **{name: others[int(rng.integers(len(others)))]})
        alt = describe(np.random.default_rng(seed), swapped, None, quality=False, require=require)
        negatives.append(alt if alt != text else None)
    return text, negatives


def swap_table(
    attrs: list[dict[str, str]], draws: int, seed: int = 0, named: list | None = None
) -> tuple[list[str], list[list[str | None]]]:
    """`draws` (caption, negatives) per piece, piece-major: entry `i * draws + d`; `named`,
    if given, gets each caption's named attributes appended in the same order."""
    if draws < 1:
        raise ValueError(f"swap_table: draws must be >= 1, got {draws!r}")
    rng = np.random.default_rng(seed)
    captions, negatives = [], []
    for a in attrs:
        for _ in range(draws):
            said: dict[str, str] = {}
            text, neg = swapped_captions(rng, a, said)
            if named is not None:
                named.append(said)
            captions.append(text)
            negatives.append(neg)
    return captions, negatives
