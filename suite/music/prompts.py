"""Prompt sets of the embedded music world and loaders for user prompt files.

The paper fine-tunes and evaluates on text prompts (section 3.1): training prompts, and
held-out prompts for evaluation; CFG uses the negative prompt "Bad audio quality."
(appendix B). The suite keeps its prompt sets as plain files a user can read and edit,
under `conf/prompts/`:

    train.txt      training prompts (seen attribute combinations, training phrasings)
    eval.jsonl     held-out TEST prompts: {"prompt", "split", "attributes"}; split is
                   "unseen_combination" (a genre x mood pair the corpus never contains,
                   composer.HELD_OUT_COMBOS), "unseen_phrasing" (eval-only words and sentence
                   frames, captions.EVAL_*), or "freeform"; only for reported numbers
    validation.jsonl  held-out VALIDATION prompts, built like eval.jsonl from another seed
                   (disjoint from train and eval, its own free-form prompts): every choice
                   (a scale, omega, a threshold, a checkpoint) is made on these, never on eval
    freeform.txt   free-form prompts ("A peaceful sunset on a beach", "Rock song." ...)
    negative.txt   the negative prompt

`load_prompts(path)` reads a user's own file: .txt (one prompt per line; blank lines and
lines starting with '#' are skipped), .csv or .jsonl with a `prompt` column / key.
Regenerate the default files with `python -m suite.music.prompts --write`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from suite.music import attributes as A
from suite.music import captions as K
from suite.music import composer as C
from suite.music import oracle

NEGATIVE_PROMPT = K.NEGATIVE_PROMPT
FREEFORM_PROMPTS: tuple[str, ...] = (
    "A peaceful sunset on a beach",
    "Rock song.",
    "Opera singer",
    "Male choir harmony",
    "Music for a rainy afternoon",
    "A lively party tune",
    "Romantic dinner music",
    "Horror movie soundtrack",
    "Lullaby for a baby",
    "Workout music",
    "Late night lounge",
    "Sad piano ballad",
    "Meditation music",
    "A wedding dance",
    "Symphony orchestra",
    "Rap instrumental",
)
# Free-form prompts of the validation split (none of them is in FREEFORM_PROMPTS).
VALIDATION_FREEFORM: tuple[str, ...] = (
    "A sunny morning in the countryside",
    "Music for a road trip",
    "Background music for a cafe",
    "A thunderstorm at sea",
    "Video game boss battle",
    "Spa relaxation music",
    "A cowboy riding into town",
    "Christmas morning",
    "Chase scene in a spy film",
    "Dreamy space travel",
    "Children's birthday party",
    "A rainy night in the city",
    "Sunday brunch",
    "Epic movie trailer",
    "Slow dance at a prom",
    "Study music to focus",
)
PROMPT_SETS: dict[str, str] = {
    "train": "train.txt",
    "eval": "eval.jsonl",
    "validation": "validation.jsonl",
    "freeform": "freeform.txt",
    "negative": "negative.txt",
}


def prompts_dir(root: str | Path | None = None) -> Path:
    from suite.music.corpus import project_root

    return (Path(root) if root is not None else project_root()) / "conf" / "prompts"


def train_prompts(seed: int = 0, n: int = 256) -> list[str]:
    """Distinct training prompts over seen attribute combinations, training phrasings."""
    rng = np.random.default_rng([seed, 1])
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        attrs = C.sample_attributes(rng)
        text = K.describe(rng, attrs, None, quality=False, require=("genre",))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def eval_prompts(
    seed: int = 0,
    n_combination: int = 40,
    n_phrasing: int = 40,
    exclude: set[str] | None = None,
    freeform: tuple[str, ...] = FREEFORM_PROMPTS,
    stream: int = 2,
) -> list[dict]:
    """Held-out prompt records: unseen combinations, unseen phrasings, free-form prompts.

    `stream` selects the random stream: 2 for the test split (eval.jsonl), 3 for the
    validation split (`validation_prompts`)."""
    rng = np.random.default_rng([seed, stream])
    exclude = set(exclude or ())
    combos = sorted(C.HELD_OUT_COMBOS)
    records: list[dict] = []
    seen: set[str] = set()

    def add(text: str, split: str) -> bool:
        if text in seen or text in exclude:
            return False
        seen.add(text)
        records.append({"prompt": text, "split": split, "attributes": oracle.parse_prompt(text)})
        return True

    i = 0
    while sum(r["split"] == "unseen_combination" for r in records) < n_combination:
        genre, mood = combos[i % len(combos)]
        attrs = C.sample_attributes(rng, genre=genre)
        attrs["mood"] = mood
        add(
            K.describe(rng, attrs, None, quality=False, require=("genre", "mood")),
            "unseen_combination",
        )
        i += 1
    while sum(r["split"] == "unseen_phrasing" for r in records) < n_phrasing:
        attrs = C.sample_attributes(rng)
        add(
            K.describe(rng, attrs, None, heldout=True, quality=False, require=("genre",)),
            "unseen_phrasing",
        )
    for text in freeform:
        add(text, "freeform")
    return records


def validation_prompts(seed: int = 0, exclude: set[str] | None = None) -> list[dict]:
    """The validation split: built like the test split from another random stream, with
    its own free-form prompts, and none of `exclude` (the train and test prompts). Its
    unseen combinations are the same held-out genre x mood pairs as the test split's (in
    other words): validation measures generalisation to those pairs as the test does, so a
    choice made on it is not blind to which pairs are held out, only to the test prompts."""
    return eval_prompts(seed, exclude=exclude, freeform=VALIDATION_FREEFORM, stream=3)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_prompt_files(directory: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the default prompt sets (atomically) and return their paths."""
    directory = Path(directory) if directory is not None else prompts_dir()
    train = train_prompts(seed)
    evals = eval_prompts(seed, exclude=set(train))
    valid = validation_prompts(seed, exclude=set(train) | {r["prompt"] for r in evals})
    header = "# {} prompts of the embedded music world; one per line, '#' lines are comments.\n"
    paths = {name: directory / file for name, file in PROMPT_SETS.items()}
    _atomic_text(paths["train"], header.format("Training") + "\n".join(train) + "\n")
    _atomic_text(paths["eval"], "".join(json.dumps(r, sort_keys=True) + "\n" for r in evals))
    _atomic_text(paths["validation"], "".join(json.dumps(r, sort_keys=True) + "\n" for r in valid))
    _atomic_text(paths["freeform"], header.format("Free-form") + "\n".join(FREEFORM_PROMPTS) + "\n")
    _atomic_text(paths["negative"], header.format("Negative (CFG)") + NEGATIVE_PROMPT + "\n")
    return paths


# ------------------------------------------------------------------------- loading


def load_prompt_records(path: str | Path) -> list[dict]:
    """Records {"prompt", "attributes", ...} from a .txt, .csv or .jsonl prompt file.

    attributes are taken from the file when it has them (JSONL), else parsed from the text.
    Raises FileNotFoundError / ValueError naming the file for a missing, unreadable,
    malformed or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"prompt file {path} is unreadable: {err}") from err
    suffix = path.suffix.lower()
    records: list[dict] = []
    if suffix in (".txt", ".text", ".prompts"):
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                records.append({"prompt": line})
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise ValueError(
                f"prompt file {path}: CSV needs a 'prompt' column, found {reader.fieldnames}"
            )
        for row in reader:
            if (row.get("prompt") or "").strip():
                records.append({**row, "prompt": row["prompt"].strip()})
    elif suffix in (".jsonl", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"prompt file {path}, line {lineno}: invalid JSON: {err}") from err
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(
                    f"prompt file {path}, line {lineno}: expected an object with a string 'prompt'"
                )
            if row["prompt"].strip():
                records.append({**row, "prompt": row["prompt"].strip()})
    else:
        raise ValueError(
            f"prompt file {path}: unsupported extension '{suffix}' (use .txt, .csv or .jsonl)"
        )
    if not records:
        raise ValueError(f"prompt file {path} contains no prompts")
    for rec in records:
        attrs = rec.get("attributes")
        if isinstance(attrs, dict):
            A.check_attributes({k: v for k, v in attrs.items() if k != "quality"})
        else:
            rec["attributes"] = oracle.parse_prompt(rec["prompt"])
    return records


def load_prompts(path: str | Path) -> list[str]:
    """The prompt strings of a .txt / .csv / .jsonl prompt file (see load_prompt_records)."""
    return [r["prompt"] for r in load_prompt_records(path)]


def prompt_set(name: str, root: str | Path | None = None) -> Path:
    """Path of a named default prompt set ('train', 'eval', 'validation', 'freeform', 'negative')."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; expected one of {list(PROMPT_SETS)}")
    return prompts_dir(root) / PROMPT_SETS[name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write / show the default prompt sets.")
    parser.add_argument("--write", action="store_true", help="(re)write conf/prompts/*")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.write:
        for name, path in write_prompt_files(args.dir, args.seed).items():
            print(f"{name}: {path} ({len(load_prompts(path))} prompts)")
    else:
        for name in PROMPT_SETS:
            path = Path(args.dir) / PROMPT_SETS[name] if args.dir else prompt_set(name)
            print(f"{name}: {path}")


if __name__ == "__main__":
    main()
