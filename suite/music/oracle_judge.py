"""Judging of the oracle: scores, side-by-side comparisons (DESIGN.md sections 4 and 5).

The paper's raters give side-by-side preferences turned into win rates (section 3.1,
appendix F); the oracle gives per piece and prompt:

- adherence per attribute in [0, 1]: header agreement, and for the attributes the content
  shows (`CONTENT_ATTRIBUTES`) half credit for what the CONTENT says (oracle_features.py);
- in-key ratio, rhythmic regularity and flaw rates (out-of-key notes, early / late,
  detuned, dropout steps, recording flaw, invalid tokens, silence);
- quality in [0, 1] (a product of flaw factors, prompt-independent) and overall =
  quality * (1 + adherence) / 2 when the prompt names attributes.

`compare` turns two judgements into win / loss / tie with a margin of `TIE_MARGIN`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from suite.music import attributes as A
from suite.music import composer as C
from suite.music import tokens as T
from suite.music.oracle_features import Features, features, mood_consistency, recognise
from suite.music.oracle_prompt import parse_prompt

TIE_MARGIN = 0.02
CONTENT_ATTRIBUTES = ("genre", "key", "mode", "drums", "mood")


@dataclass
class Judgement:
    """The oracle's scores for one piece and prompt."""

    adherence: dict[str, float] = field(default_factory=dict)
    in_key: float = 1.0
    rhythm: float = 1.0
    flaws: dict[str, float] = field(default_factory=dict)
    quality: float = 1.0
    overall: float = 1.0

    @property
    def adherence_mean(self) -> float:
        return float(np.mean(list(self.adherence.values()))) if self.adherence else 1.0


def _in_key(f: Features) -> float:
    scale = set(C.scale_pitch_classes(f.decoded.attrs["key"], f.decoded.attrs["mode"]))
    pitches = [p for _, _, p in f.melody_notes + f.bass_notes]
    for _, _, c in f.chord_spans:
        pitches += T.chord_pitches(c)
    if not pitches:
        return 1.0
    return float(np.mean([p % 12 in scale for p in pitches]))


def _bar_similarity(track: list[int], onset=lambda v: v >= 0) -> float:
    a = np.array([onset(v) for v in track[:16]])
    b = np.array([onset(v) for v in track[16:32]])
    return 1.0 - float(np.mean(a != b))


def _rhythm(f: Features, timing_frac: float) -> float:
    """Rhythmic regularity: bars repeat their drum / bass / comping onsets, notes on grid."""
    d = f.decoded
    parts = [_bar_similarity(d.bass), _bar_similarity(d.chord)]
    if any(d.drums):
        parts.append(_bar_similarity(d.drums, onset=lambda v: v))
    return float(np.mean(parts)) * (1.0 - timing_frac)


def judge(tokens, attrs: dict[str, str] | None = None) -> Judgement:
    """Score one token sequence (any integers) against the prompt's attributes.

    attrs: attributes the prompt asks for (a subset of `attributes.ATTRIBUTE_NAMES`, plus
    optionally "quality": "good" | "bad"), e.g. from `parse_prompt`.
    """
    attrs = dict(attrs or {})
    want_quality = attrs.pop("quality", None)
    A.check_attributes(attrs)
    f = features(tokens)
    d = f.decoded
    perf = np.array(d.perf)
    onset_steps = sorted({s for s, _, _ in f.melody_notes + f.bass_notes + f.chord_spans})
    n_on = max(len(onset_steps), 1)
    flaws = {
        "out_of_key": 1.0 - _in_key(f),
        "timing": float(np.isin(perf[onset_steps], (1, 2)).sum() / n_on)
        if onset_steps
        else float(np.isin(perf, (1, 2)).mean()),
        "detune": float((perf[onset_steps] == 4).sum() / n_on)
        if onset_steps
        else float((perf == 4).mean()),
        "dropout": float((perf == 3).mean()),
        "recording": float((np.array(d.rec) != 0).mean()),  # share of badly recorded steps
        "invalid": d.n_invalid / T.SEQ_LEN,
        "silent": float(not f.melody_notes),
    }
    quality = (
        (1.0 - flaws["out_of_key"]) ** 3
        * max(0.0, 1.0 - 1.5 * flaws["timing"])
        * max(0.0, 1.0 - 1.5 * flaws["detune"])
        * max(0.0, 1.0 - 3.0 * flaws["dropout"])
        * max(0.0, 1.0 - 1.5 * flaws["recording"])
        * (1.0 - flaws["invalid"]) ** 2
        * (0.3 if flaws["silent"] else 1.0)
    )
    adherence: dict[str, float] = {}
    if attrs:
        seen = recognise(tokens) if any(a in CONTENT_ATTRIBUTES for a in attrs) else {}
        for name, value in attrs.items():
            header = float(d.attrs[name] == value)
            if name == "mood":
                adherence[name] = 0.5 * header + 0.5 * mood_consistency(f, value)
            elif name in CONTENT_ATTRIBUTES:
                adherence[name] = 0.5 * header + 0.5 * float(seen[name] == value)
            else:
                adherence[name] = header
    if want_quality is not None:
        adherence["quality"] = quality if want_quality == "good" else 1.0 - quality
    j = Judgement(
        adherence=adherence,
        in_key=1.0 - flaws["out_of_key"],
        rhythm=_rhythm(f, flaws["timing"]),
        flaws=flaws,
        quality=float(quality),
    )
    j.overall = j.quality * (0.5 + 0.5 * j.adherence_mean) if adherence else j.quality
    return j


def judge_batch(tokens, prompts_or_attrs) -> list[Judgement]:
    """Judge a batch [B, L]; each entry a prompt string (parsed) or an attribute dict."""
    rows = np.asarray(tokens.detach().cpu() if hasattr(tokens, "detach") else tokens)
    if len(prompts_or_attrs) != len(rows):
        raise ValueError(
            f"oracle.judge_batch: {len(rows)} pieces but {len(prompts_or_attrs)} prompts"
        )
    out = []
    for row, p in zip(rows, prompts_or_attrs):
        out.append(judge(row, parse_prompt(p) if isinstance(p, str) else p))
    return out


def compare(
    tokens_a, tokens_b, attrs: dict[str, str] | str | None = None, margin: float = TIE_MARGIN
) -> str:
    """Side-by-side judgement of A against B for one prompt: 'win', 'loss' or 'tie'."""
    if isinstance(attrs, str):
        attrs = parse_prompt(attrs)
    a, b = judge(tokens_a, attrs).overall, judge(tokens_b, attrs).overall
    if a > b + margin:
        return "win"
    if b > a + margin:
        return "loss"
    return "tie"
