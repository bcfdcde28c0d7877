"""Prompt sets and prompt-file loaders."""

import json
import re

import pytest

from suite.music import captions as K
from suite.music import composer as C
from suite.music import prompts as P


def test_default_files_exist_and_hold_the_required_prompts():
    sets = {name: P.load_prompts(P.prompt_set(name)) for name in P.PROMPT_SETS}
    assert len(sets["train"]) >= 200 and len(sets["eval"]) >= 60
    for text in (
        "A peaceful sunset on a beach",
        "Rock song.",
        "Opera singer",
        "Male choir harmony",
    ):
        assert text in sets["freeform"] and text in sets["eval"]
    assert sets["negative"] == ["Bad audio quality."]
    assert not set(sets["train"]) & set(sets["eval"])
    assert len(sets["validation"]) >= 60
    assert not set(sets["validation"]) & (set(sets["train"]) | set(sets["eval"]))


def test_the_validation_split_is_built_like_the_test_split():
    valid = P.load_prompt_records(P.prompt_set("validation"))
    test = P.load_prompt_records(P.prompt_set("eval"))
    count = lambda recs, split: sum(r["split"] == split for r in recs)  # noqa: E731
    for split in ("unseen_combination", "unseen_phrasing", "freeform"):
        assert count(valid, split) == count(test, split), split
    assert [r["prompt"] for r in valid if r["split"] == "freeform"] == list(P.VALIDATION_FREEFORM)


def test_default_files_match_the_generator(tmp_path):
    paths = P.write_prompt_files(tmp_path, seed=0)
    for name, path in paths.items():
        assert path.read_text() == P.prompt_set(name).read_text(), name


def test_eval_prompts_are_held_out():
    records = P.load_prompt_records(P.prompt_set("eval"))
    train_text = " ".join(P.load_prompts(P.prompt_set("train"))).lower()
    splits = {r["split"] for r in records}
    assert splits == {"unseen_combination", "unseen_phrasing", "freeform"}
    for r in records:
        if r["split"] == "unseen_combination":
            pair = (r["attributes"]["genre"], r["attributes"]["mood"])
            assert pair in C.HELD_OUT_COMBOS, r["prompt"]
        if r["split"] == "unseen_phrasing":
            frame = re.match(r"(Imagine|Could you play|I want to hear|Give me some)", r["prompt"])
            assert frame, r["prompt"]
            assert frame.group(1).lower() not in train_text
            words = [w for bank in K.EVAL_GENRE_WORDS.values() for w in bank]
            assert any(w.lower() in r["prompt"].lower() for w in words)
    for words in K.EVAL_GENRE_WORDS.values():
        for w in words:
            assert w.lower() not in train_text


def test_loaders_txt_csv_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\nRock song.\n\n  Jazz trio  \n")
    assert P.load_prompts(tmp_path / "p.txt") == ["Rock song.", "Jazz trio"]
    (tmp_path / "p.csv").write_text('id,prompt\n1,"Calm, slow piano"\n2,Metal\n')
    assert P.load_prompts(tmp_path / "p.csv") == ["Calm, slow piano", "Metal"]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "Sad blues"}) + "\n\n")
    recs = P.load_prompt_records(tmp_path / "p.jsonl")
    assert recs[0]["prompt"] == "Sad blues"
    assert recs[0]["attributes"] == {"mood": "sad", "genre": "blues"}


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        P.load_prompts(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="empty.txt.*no prompts"):
        P.load_prompts(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x9c")
    with pytest.raises(ValueError, match="bin.txt.*unreadable"):
        P.load_prompts(tmp_path / "bin.txt")
    (tmp_path / "nocol.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="nocol.csv.*'prompt' column"):
        P.load_prompts(tmp_path / "nocol.csv")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2"):
        P.load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "p.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match="p.yaml.*extension"):
        P.load_prompts(tmp_path / "p.yaml")
    (tmp_path / "attr.jsonl").write_text(
        json.dumps({"prompt": "x", "attributes": {"genre": "polka"}})
    )
    with pytest.raises(ValueError, match="polka"):
        P.load_prompt_records(tmp_path / "attr.jsonl")
    with pytest.raises(ValueError, match="unknown prompt set"):
        P.prompt_set("tuning")
