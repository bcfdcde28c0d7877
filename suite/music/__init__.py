"""The embedded symbolic music world (DESIGN.md section 5).

Stands in for the paper's MusicLM / MuLan data (section 3.1): a seeded composer over
attributes, a fixed-length token grammar, a batched torch renderer, MIDI / WAV export and
import, captions and prompt sets, and a rule-based oracle judge. Modules:

- attributes: attribute vocabularies (genre, mood, tempo, key, mode, instruments, ...)
- tokens: the grammar (`VOCAB_SIZE`, `SEQ_LEN`, `allowed_mask`, `encode`, `decode`)
- render: tokens -> 16 kHz audio (`SAMPLE_RATE`, `AUDIO_SAMPLES`, `render`)
- composer, captions, corpus: the cached, deterministic training corpus
- oracle: rule-based judge (`judge`, `compare`, `distance`, `parse_prompt`)
- prompts: prompt sets under conf/prompts and prompt-file loaders
- midi: MIDI / WAV export, MIDI import
- report: the measurements and figure of docs/music_world.md

Nothing here imports Lightning or Hydra.
"""
