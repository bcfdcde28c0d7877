"""The embedded symbolic music world (DESIGN.md section 5).

Stands in for the paper's MusicLM / MuLan data (section 3.1): a seeded composer over
attributes, a fixed-length token grammar, a batched torch renderer, MIDI / WAV export and
import, captions and prompt sets, and a rule-based oracle judge. Modules:

- attributes: attribute vocabularies (genre, mood, tempo, key, mode, instruments, ...)
- tokens: the grammar (`VOCAB_SIZE`, `SEQ_LEN`, `allowed_mask`, `encode`, `decode`)
- render: tokens -> 16 kHz audio (`SAMPLE_RATE`, `AUDIO_SAMPLES`, `render`);
  render_tables: its timbres, chord tables and drum kits
- conventions: genre and mood conventions (`GENRE_PROFILES`, drum patterns)
- composer, captions, corpus: the cached, deterministic training corpus (corpus also
  builds one from a folder of MIDI files)
- oracle: rule-based judge (`judge`, `compare`, `distance`, `parse_prompt`), made of
  oracle_features (content reading), oracle_judge, oracle_distance, oracle_prompt
- prompts: prompt sets under conf/prompts and prompt-file loaders
- midi: MIDI / WAV export; midi_import: MIDI import (`from_midi`)
- report: the measurements and figure of docs/music_world.md (`python -m
  suite.world_report` adds the text tower's)

Nothing here imports Lightning, Hydra or a network module, and no module imports one that
imports it back.
"""
