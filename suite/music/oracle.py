"""Rule-based oracle judge of the embedded music world (DESIGN.md sections 4 and 5).

The paper evaluates with human raters: side-by-side preferences turned into win rates
(section 3.1, appendix F). The embedded world replaces raters with this oracle, which reads
a piece's tokens and the prompt's attributes and scores:

- adherence per attribute in [0, 1]: header agreement, and for attributes the content
  shows (genre, key, mode, drum style, mood) agreement of what the CONTENT says, so a
  piece whose header says "jazz" but plays a rock beat gets half credit;
- in-key ratio (notes in the header's key and mode), rhythmic regularity, flaw rates
  (out-of-key notes, early / late, detuned, dropout steps, recording flaw, invalid tokens);
- quality in [0, 1] (a product of flaw factors, prompt-independent) and overall =
  quality * (1 + adherence) / 2 when the prompt names attributes.

`compare` gives win / loss / tie; `distance` is a musically aware distance between two
pieces (header, intervals, rhythm, harmony relative to the key, drums) for judging the
diversity of pairs; `parse_prompt` recognises attributes in free text. The oracle stands in
for human raters only: it is never a training signal.

This module is the oracle's public face; the parts live in oracle_features.py (content
reading), oracle_judge.py (scores, `compare`), oracle_distance.py and oracle_prompt.py.
"""

from suite.music.oracle_distance import distance
from suite.music.oracle_features import (
    Features,
    detect_drum_style,
    estimate_genre,
    estimate_key,
    features,
    mood_consistency,
    recognise,
)
from suite.music.oracle_judge import (
    CONTENT_ATTRIBUTES,
    TIE_MARGIN,
    Judgement,
    compare,
    judge,
    judge_batch,
)
from suite.music.oracle_prompt import BAD_WORDS, FREEFORM_HINTS, GOOD_WORDS, parse_prompt

__all__ = [
    "BAD_WORDS",
    "CONTENT_ATTRIBUTES",
    "FREEFORM_HINTS",
    "GOOD_WORDS",
    "TIE_MARGIN",
    "Features",
    "Judgement",
    "compare",
    "detect_drum_style",
    "distance",
    "estimate_genre",
    "estimate_key",
    "features",
    "judge",
    "judge_batch",
    "mood_consistency",
    "parse_prompt",
    "recognise",
]
