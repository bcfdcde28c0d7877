"""Free-text captions of the embedded music world (DESIGN.md section 5).

MusicLM is trained on (audio, free-text caption) pairs (paper section 3.1), and the paper's
negative prompt "Bad audio quality." only works because some training captions mention
bad quality (appendix B). Captions here are built from a piece's attributes with many
templates and synonyms, so one piece can be described in many ways:

- which attributes a caption mentions is random (genre usually, tempo or key rarely);
- every attribute value has several synonyms; frames (sentence shapes) vary;
- quality words: most flawed pieces carry NONE (as in real data, a bad recording is
  rarely labelled as such); a minority (those of a bad recording session, `composer.BAD_SESSION_P`) say so with varied phrasings,
  matched to the flaw when possible; clean pieces sometimes say "high quality".

Two disjoint phrase banks: TRAIN words / frames (used by the corpus and train prompts) and
EVAL-only words / frames (held-out phrasings for eval prompts, never in the corpus).
"""

from __future__ import annotations

import re

import numpy as np

from suite.music import attributes as A

NEGATIVE_PROMPT = "Bad audio quality."
# World 4: a caption admits its piece's flaws exactly when the piece comes from a bad
# recording session (composer.BAD_SESSION_P, 12 % of pieces, each half bar flawed with odds
# 0.9); the good sessions' flaws (a third of their half bars) are never named. World 3 tied
# the odds to the flawed share of independent segments: the negative prompt then named a
# distribution barely worse than an ordinary one and CFG gained 0.06 (docs/music_world.md).
GOOD_TAG_SHARE = 0.15  # clean pieces whose caption says "high quality"

GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "jazz": ("jazz", "jazzy", "swing jazz", "cool jazz"),
    "rock": ("rock", "rock and roll", "guitar rock", "classic rock"),
    "classical": ("classical", "orchestral", "chamber music", "baroque-style"),
    "ambient": ("ambient", "atmospheric", "ambient electronic", "drone"),
    "electronic": ("electronic", "EDM", "house", "techno"),
    "folk": ("folk", "acoustic folk", "folk-style", "traditional folk"),
    "blues": ("blues", "bluesy", "Chicago blues", "twelve-bar style blues"),
    "bossa nova": ("bossa nova", "Brazilian bossa", "bossa", "samba-jazz"),
    "hip hop": ("hip hop", "hip-hop", "boom bap", "rap beat"),
    "metal": ("metal", "heavy metal", "thrash metal", "hard-hitting metal"),
}
EVAL_GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "jazz": ("bebop-flavoured", "smoky lounge jazz"),
    "rock": ("garage rock", "arena rock"),
    "classical": ("symphonic", "romantic-era classical"),
    "ambient": ("new age", "spacey soundscape"),
    "electronic": ("club dance", "synth-driven dance"),
    "folk": ("campfire folk", "Celtic-tinged folk"),
    "blues": ("delta blues", "juke-joint blues"),
    "bossa nova": ("Rio-style bossa", "bossa-inspired lounge"),
    "hip hop": ("lo-key rap instrumental", "old-school hip hop"),
    "metal": ("headbanging metal", "shred metal"),
}
MOOD_WORDS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "cheerful", "joyful", "uplifting"),
    "sad": ("sad", "melancholic", "sorrowful", "gloomy"),
    "calm": ("calm", "relaxing", "peaceful", "soothing"),
    "energetic": ("energetic", "driving", "lively", "high-energy"),
    "dark": ("dark", "ominous", "brooding", "menacing"),
    "romantic": ("romantic", "tender", "loving", "sentimental"),
}
EVAL_MOOD_WORDS: dict[str, tuple[str, ...]] = {
    "happy": ("sunny", "carefree"),
    "sad": ("heartbroken", "tearful"),
    "calm": ("serene", "tranquil"),
    "energetic": ("pumping", "explosive"),
    "dark": ("sinister", "haunting"),
    "romantic": ("dreamy love", "intimate"),
}
TEMPO_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slow", "slow-paced", "unhurried"),
    "relaxed": ("relaxed", "laid-back", "easy-going"),
    "moderate": ("moderate", "mid-tempo", "medium-paced"),
    "upbeat": ("upbeat", "brisk", "bouncy"),
    "fast": ("fast", "quick", "up-tempo"),
    "very fast": ("very fast", "breakneck", "frantic"),
}
EVAL_TEMPO_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("crawling",),
    "relaxed": ("lazy",),
    "moderate": ("walking-pace",),
    "upbeat": ("peppy",),
    "fast": ("rapid",),
    "very fast": ("lightning-fast",),
}
INSTRUMENT_WORDS: dict[str, tuple[str, ...]] = {
    "piano": ("piano", "grand piano", "acoustic piano"),
    "electric piano": ("electric piano", "Rhodes", "keys"),
    "organ": ("organ", "Hammond organ"),
    "acoustic guitar": ("acoustic guitar", "nylon-string guitar", "strummed guitar"),
    "electric guitar": ("electric guitar", "clean guitar"),
    "distorted guitar": ("distorted guitar", "overdriven guitar", "crunchy guitars"),
    "violin": ("violin", "fiddle", "solo violin"),
    "strings": ("strings", "string section", "string ensemble"),
    "flute": ("flute", "wooden flute"),
    "saxophone": ("saxophone", "sax", "tenor sax"),
    "trumpet": ("trumpet", "muted trumpet", "horn"),
    "synth lead": ("synth lead", "lead synth", "synthesizer melody"),
    "synth pad": ("synth pads", "warm pads", "pad synth"),
    "voice": ("vocals", "singer", "wordless vocals"),
    "choir": ("choir", "vocal harmonies", "choral voices"),
    "acoustic bass": ("upright bass", "double bass", "acoustic bass"),
    "electric bass": ("bass guitar", "electric bass"),
    "synth bass": ("synth bass", "sub bass", "808 bass"),
}
EVAL_INSTRUMENT_WORDS: dict[str, tuple[str, ...]] = {
    "piano": ("ivories",),
    "saxophone": ("alto saxophone",),
    "violin": ("violin bow",),
    "flute": ("airy flute",),
    "synth lead": ("analog synth",),
    "voice": ("crooner",),
    "distorted guitar": ("fuzz guitar",),
    "electric guitar": ("twangy guitar",),
    "trumpet": ("brass",),
    "acoustic guitar": ("six-string acoustic",),
    "electric piano": ("Wurlitzer",),
}
DRUM_WORDS: dict[str, tuple[str, ...]] = {
    "rock beat": ("a rock beat", "steady rock drums", "a backbeat"),
    "jazz swing": ("swinging ride cymbal", "jazz drums", "a swing groove"),
    "four on the floor": ("a four-on-the-floor kick", "a pounding dance beat"),
    "boom bap": ("a boom bap beat", "dusty hip hop drums"),
    "bossa groove": ("a bossa groove", "rim clicks and shaker"),
    "shuffle": ("a shuffle beat", "shuffling drums"),
    "brushes": ("brushed drums", "soft brushes"),
    "double kick": ("double kick drums", "blast beats"),
    "ambient pulse": ("a faint pulse", "sparse percussion"),
    "none": ("no drums", "no percussion"),
}
MODE_WORDS = {"major": "major", "minor": "minor", "dorian": "dorian", "mixolydian": "mixolydian"}
NOUNS = ("piece", "track", "tune", "song", "instrumental", "number", "composition")
EVAL_NOUNS = ("cut", "jam session", "recording")

# Quality phrases. Flaw-specific ones are preferred when the flaw is present.
BAD_PHRASES: dict[str, tuple[str, ...]] = {
    "any": (
        NEGATIVE_PROMPT,
        "Bad audio quality",
        "poor recording",
        "low quality",
        "badly played",
        "amateur recording",
        "bad sound quality",
    ),
    "wrong_notes": ("amateur, out of tune", "full of wrong notes", "off-key playing"),
    "detune": ("out of tune", "detuned and wobbly"),
    "timing": ("sloppy timing", "the band is out of time", "rushed and dragging"),
    "dropout": ("the audio cuts out", "with dropouts", "glitchy playback"),
    "noisy": ("noisy recording", "hiss and hum", "noisy, low quality"),
    "distorted": ("distorted, clipping audio", "harsh distortion"),
    "lo-fi": ("lo-fi, muffled sound", "muffled low fidelity recording"),
}
GOOD_PHRASES = (
    "high quality",
    "studio quality",
    "crisp, well produced",
    "professional recording",
    "clean mix",
    "high fidelity",
)

TRAIN_FRAMES = (
    "{np}.",
    "{np} {adj}.",
    "A {np} {adj}.",
    "{np}, {adj}.",
    "This is a {np} {adj}.",
    "{Np} {adj}.",
    "Music: {np} {adj}.",
    "{np} {adj}, {quality}.",
    "{quality}: {np} {adj}.",
    "{np} {adj}. {Quality}.",
)
EVAL_FRAMES = (
    "Imagine a {np} {adj}.",
    "Could you play a {np} {adj}?",
    "I want to hear {np} {adj}.",
    "Give me some {np} {adj}.",
)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def describe(
    rng: np.random.Generator,
    attrs: dict[str, str],
    flaws: dict[str, int] | None = None,
    heldout: bool = False,
    quality: bool = True,
    require: tuple[str, ...] = (),
    named: dict[str, str] | None = None,
) -> str:
    """One caption of a piece. `heldout` uses the eval-only words and frames.

    `flaws` is the composer's flaw record ({} or None for a clean piece). With `quality`
    False no quality words are added (used for prompts). `require` names attributes the
    caption must mention (among genre, mood, tempo, lead). `named`, if given, is filled
    with the attributes the caption mentions and their values (the same draws either way).
    """
    said: dict[str, str] = {}  # what the noun phrase names
    told: dict[str, str] = {}  # what the adjuncts name (only if the frame has a place for them)
    A.check_attributes(attrs)
    genres = EVAL_GENRE_WORDS if heldout else GENRE_WORDS
    moods = EVAL_MOOD_WORDS if heldout else MOOD_WORDS
    tempos = EVAL_TEMPO_WORDS if heldout else TEMPO_WORDS

    def inst_word(name: str) -> str:
        bank = (
            EVAL_INSTRUMENT_WORDS if heldout and name in EVAL_INSTRUMENT_WORDS else INSTRUMENT_WORDS
        )
        return _pick(rng, bank[name])

    parts = []
    if "mood" in attrs and (rng.random() < 0.65 or "mood" in require):
        parts.append(_pick(rng, moods[attrs["mood"]]))
        said["mood"] = attrs["mood"]
    if "tempo" in attrs and (rng.random() < 0.3 or "tempo" in require):
        parts.append(_pick(rng, tempos[attrs["tempo"]]))
        said["tempo"] = attrs["tempo"]
    if "genre" in attrs and (rng.random() < 0.92 or not parts or "genre" in require):
        parts.append(_pick(rng, genres[attrs["genre"]]))
        said["genre"] = attrs["genre"]
    noun = _pick(rng, EVAL_NOUNS if heldout else NOUNS)
    np_ = " ".join([*parts, noun]) if parts else "a " + noun

    adjuncts = []
    if "lead" in attrs and (rng.random() < 0.6 or "lead" in require):
        lead = inst_word(attrs["lead"])
        told["lead"] = attrs["lead"]
        extra = ""
        if attrs.get("chords", "none") != "none" and rng.random() < 0.35:
            extra = f" and {inst_word(attrs['chords'])}"
            told["chords"] = attrs["chords"]
        adjuncts.append(_pick(rng, ("with ", "featuring ", "led by ")) + lead + extra)
    if attrs.get("bass", "none") != "none" and rng.random() < 0.2:
        adjuncts.append("over " + inst_word(attrs["bass"]))
        told["bass"] = attrs["bass"]
    if "drums" in attrs and rng.random() < 0.3:
        adjuncts.append("with " + _pick(rng, DRUM_WORDS[attrs["drums"]]))
        told["drums"] = attrs["drums"]
    if "tempo" in attrs and rng.random() < 0.12:
        _, lo, hi, _ = next(t for t in A.TEMPOS if t[0] == attrs["tempo"])
        adjuncts.append(f"at {int(rng.integers(lo, hi + 1))} BPM")
        told["tempo"] = attrs["tempo"]
    if "key" in attrs and "mode" in attrs and rng.random() < 0.2:
        adjuncts.append(f"in {attrs['key']} {MODE_WORDS[attrs['mode']]}")
        told.update(key=attrs["key"], mode=attrs["mode"])
    rng.shuffle(adjuncts)
    adj = ", ".join(adjuncts)

    words = ""
    if quality and flaws:
        if flaws.get("bad_session", 0):
            kinds = [k for k in flaws if k in BAD_PHRASES]
            if attrs.get("recording", "clean") != "clean":
                kinds.append(attrs["recording"])
            bank = (
                BAD_PHRASES[_pick(rng, kinds)]
                if kinds and rng.random() < 0.5
                else BAD_PHRASES["any"]
            )
            words = _pick(rng, bank)
    elif quality and rng.random() < GOOD_TAG_SHARE:
        words = _pick(rng, GOOD_PHRASES)

    frames = EVAL_FRAMES if heldout else TRAIN_FRAMES
    if words:
        frames = [f for f in TRAIN_FRAMES if "uality" in f]
    else:
        frames = [f for f in frames if "uality" not in f]
    frame = _pick(rng, frames)
    if named is not None:
        named.update(said, **(told if "{adj}" in frame else {}))
    if not adj:
        frame = frame.replace(" {adj}", "").replace(", {adj}", "")
    text = frame.format(
        np=np_,
        Np=np_[:1].upper() + np_[1:],
        adj=adj,
        quality=words.rstrip("."),
        Quality=words[:1].upper() + words[1:].rstrip("."),
    )
    text = text.replace("  ", " ").replace(" ,", ",").replace("..", ".").replace("a a ", "a ")
    text = re.sub(r"\b([Aa]) ([aeiouAEIOU])", r"\1n \2", text)
    return text[:1].upper() + text[1:]
