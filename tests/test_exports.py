"""Exports with provenance (suite/policies/exports.py) and the merge recipes that read them.

An export is safetensors + a JSON record (in the header and in a `.json` sidecar); merges
must refuse what they cannot trust: exports of different base models, truncated or
modified files, non-finite weights, and they must take each source's beta from its record,
never from its file name. Legacy `.pt` TokenLM exports still load, with a deprecation note.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_models import export, make_evaluator, record, save_tiny_models, tiny_lm

from suite.policies.exports import (
    FORMAT,
    load_export,
    read_record,
    save_export,
    sidecar,
    weights_hash,
)
from suite.policies.music import MusicPolicy
from suite.policies.recipes import build_merged, load_source

OTHER_BASE = "0123456789abcdef"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("export_ckpts"))


@pytest.fixture(scope="module")
def base():
    """theta_init as a policy (tiny_lm(0) is the base of save_tiny_models); no text tower."""
    return MusicPolicy(tiny_lm(0), encode=lambda prompts: torch.zeros(len(prompts), 384)).eval()


def header_record(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["suite_export"])


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------ (a) round trip
def test_round_trip_keeps_tensors_and_record_and_the_sidecar_is_the_header(tmp_path):
    lm = tiny_lm(5)  # tied embeddings: two keys sharing one storage
    state = {**lm.state_dict(), "extra.half": torch.randn(3, 4).half(),
             "extra.bf16": torch.randn(5).bfloat16(), "extra.steps": torch.arange(7),
             "extra.empty": torch.zeros(0, 3)}  # fmt: skip
    rec = record(lm, "feedfacefeedface", beta=2.5, mlflow_run_id="abc", lambdas=[0.5, 0.5])
    path = save_export(state, tmp_path / "student.safetensors", rec)
    assert files(tmp_path) == ["student.json", "student.safetensors"]  # no temporary left over
    got, got_record = load_export(path)
    assert set(got) == set(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    assert got_record == {**rec, "format": FORMAT, "weights_hash": weights_hash(state)}
    assert read_record(path) == got_record == header_record(path)
    assert json.loads(sidecar(path).read_text()) == got_record
    assert sidecar(path) == tmp_path / "student.json"
    # the loaded weights go back into a TokenLM of the recorded architecture
    rebuilt = tiny_lm(9)
    rebuilt.load_state_dict_checked({k: v for k, v in got.items() if not k.startswith("extra.")})
    assert torch.equal(rebuilt.tok_emb.weight, lm.tok_emb.weight)


def test_weights_hash_sees_values_keys_and_dtypes():
    state = {"a": torch.ones(3), "b": torch.zeros(2, 2)}
    h = weights_hash(state)
    assert len(h) == 16 and h == weights_hash({"b": torch.zeros(2, 2), "a": torch.ones(3)})
    assert weights_hash({**state, "a": torch.tensor([1.0, 1.0, 1.0 + 1e-7])}) != h
    assert weights_hash({**state, "a": torch.ones(3, dtype=torch.float64)}) != h
    assert weights_hash({"c": state["a"], "b": state["b"]}) != h
    assert weights_hash({**state, "b": torch.zeros(4)}) != h  # same bytes, another shape


# ------------------------------------------------------------------------ (b) base models
def test_build_merged_refuses_exports_of_different_base_models(ckpts, base, tmp_path):
    base_hash = weights_hash(base.trainable.state_dict())
    assert base_hash == ckpts["base_hash"]
    other = export(tiny_lm(6), tmp_path / "beta15-seed0.safetensors", OTHER_BASE, beta=15)
    sources = [load_source(p, base, base_hash) for p in (ckpts["beta0-seed0"], other)]
    with pytest.raises(ValueError, match="different base models") as info:
        build_merged(base, sources, "lerp", None, 0.5)
    text = str(info.value)
    assert ckpts["beta0-seed0"] in text and other in text
    assert base_hash in text and OTHER_BASE in text
    # both from the same other base: each is refused against this job's base model
    again = export(tiny_lm(7), tmp_path / "beta0-seed0.safetensors", OTHER_BASE, beta=0)
    sources = [load_source(p, base, base_hash) for p in (again, other)]
    with pytest.raises(ValueError, match="fine-tuned from base model") as info:
        build_merged(base, sources, "merge", None, None)
    assert OTHER_BASE in str(info.value) and base_hash in str(info.value)
    # and a single source of another base is refused, too
    with pytest.raises(ValueError, match=OTHER_BASE):
        build_merged(base, sources[:1], "single", None, None)


def test_merged_evaluator_refuses_exports_of_different_base_models(ckpts, tmp_path):
    other = export(tiny_lm(6), tmp_path / "beta15-seed0.safetensors", OTHER_BASE, beta=15)
    out = tmp_path / "out" / "lerp.safetensors"
    m = make_evaluator(ckpts, sources=[ckpts["beta0-seed0"], other], export_path=str(out))
    with pytest.raises(ValueError, match="different base models") as info:
        m.setup("test")
    text = str(info.value)
    assert ckpts["beta0-seed0"] in text and other in text
    assert ckpts["base_hash"] in text and OTHER_BASE in text
    assert "policy" not in m._frozen and not out.exists() and not out.parent.exists()


# ------------------------------------------------------------------------ (c, d) tampering
def test_a_truncated_export_is_refused_naming_the_path(ckpts, tmp_path):
    path = Path(export(tiny_lm(1), tmp_path / "beta0-seed0.safetensors", ckpts["base_hash"], 0))
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * 0.7))
    with pytest.raises(ValueError) as info:
        load_export(path)
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    # the evaluator refuses it before writing anything
    out = tmp_path / "exports" / "lerp.safetensors"
    m = make_evaluator(ckpts, sources=[str(path), ckpts["beta15-seed0"]], export_path=str(out))
    with pytest.raises(ValueError) as info:
        m.setup("test")
    assert str(path) in str(info.value)
    assert not out.exists() and not sidecar(out).exists() and not out.parent.exists()
    assert "policy" not in m._frozen


def test_a_file_cut_inside_its_header_is_refused(tmp_path):
    path = save_export({"w": torch.ones(4)}, tmp_path / "x.safetensors",
                       {"kind": "student", "policy": None, "base_hash": None})  # fmt: skip
    path.write_bytes(path.read_bytes()[:20])
    for read in (load_export, read_record):
        with pytest.raises(ValueError, match="cannot be read") as info:
            read(path)
        assert str(path) in str(info.value)


def test_modified_weights_are_refused_as_not_matching_their_hash(ckpts, tmp_path):
    path = Path(export(tiny_lm(2), tmp_path / "beta15-seed0.safetensors", ckpts["base_hash"], 15))
    data = bytearray(path.read_bytes())
    size = len(data)
    for i in range(size - 16, size - 8):  # tensor bytes, near the end of the file
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="do not match the hash in its record") as info:
        load_export(path)
    assert str(path) in str(info.value) and read_record(path)["weights_hash"] in str(info.value)
    m = make_evaluator(ckpts, sources=[ckpts["beta0-seed0"], str(path)])
    with pytest.raises(ValueError, match="modified after it was written"):
        m.setup("test")


# ------------------------------------------------------------------------ (e) legacy .pt
def test_a_legacy_pt_export_loads_with_a_deprecation_warning(ckpts, base, tmp_path, caplog):
    lm = tiny_lm(8)
    path = tmp_path / "beta15-seed0.pt"
    lm.save(path)
    with caplog.at_level(logging.WARNING, logger="suite.policies.exports"):
        state, rec = load_export(path)
    warnings = [r for r in caplog.records if r.name == "suite.policies.exports"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(path) in warnings[0].getMessage() and "deprecated" in warnings[0].getMessage()
    assert "safetensors" in warnings[0].getMessage()
    assert all(torch.equal(state[k], v) for k, v in lm.state_dict().items())
    assert rec["format"] == "legacy-pt" and rec["base_hash"] is None
    assert rec["architecture"] == lm.config
    assert "beta" not in rec  # the file name says 15; the record knows nothing
    source = load_source(str(path), base, weights_hash(base.trainable.state_dict()))
    assert source.beta == "?" and source.label == "beta15-seed0"
    # ... and it merges with an export of the suite's format
    m = make_evaluator(ckpts, sources=[ckpts["beta0-seed0"], str(path)])
    m.setup("test")
    assert m.run_params()["beta"] == "0,?"


# ------------------------------------------------------------------------ (f) refused saves
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_save_export_refuses_non_finite_weights_writing_nothing(tmp_path, bad):
    state = {"ok": torch.ones(3), "bad.weight": torch.tensor([0.0, bad])}
    rec = {"kind": "student", "policy": None, "base_hash": None}
    with pytest.raises(ValueError, match="non-finite") as info:
        save_export(state, tmp_path / "m.safetensors", rec)
    assert "bad.weight" in str(info.value) and "m.safetensors" in str(info.value)
    assert files(tmp_path) == []


@pytest.mark.parametrize("name", ["m.pt", "m.safetensors.tmp", "m", "m.json"])
def test_save_export_refuses_a_path_not_ending_in_safetensors(tmp_path, name):
    rec = {"kind": "student", "policy": None, "base_hash": None}
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_export({"w": torch.ones(2)}, tmp_path / name, rec)
    assert files(tmp_path) == []


def test_save_export_refuses_an_incomplete_or_unserialisable_record(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['base_hash'\]"):
        save_export({"w": torch.ones(2)}, tmp_path / "m.safetensors", {"kind": "x", "policy": None})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_export({"w": torch.ones(2)}, tmp_path / "m.safetensors",
                    {"kind": "x", "policy": None, "base_hash": None, "when": object()})  # fmt: skip
    assert files(tmp_path) == []


def test_a_safetensors_file_without_a_record_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(ValueError, match="no 'suite_export' record") as info:
        load_export(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="export not found"):
        load_export(tmp_path / "absent.safetensors")


# ------------------------------------------------------------------------ (g) betas from records
def test_source_betas_come_from_the_records_never_from_file_names(ckpts, tmp_path):
    misleading = export(tiny_lm(2), tmp_path / "beta99-seed0.safetensors", ckpts["base_hash"], 15)
    out = tmp_path / "lerp.safetensors"
    m = make_evaluator(ckpts, sources=[ckpts["beta0-seed0"], misleading], export_path=str(out))
    m.setup("test")
    params = m.run_params()
    assert params["beta"] == "0,15"
    assert params["sources"] == "beta0-seed0,beta99-seed0"  # labels may say what they like
    _, rec = load_export(out)
    assert [s["beta"] for s in rec["sources"]] == ["0", "15"]
    assert [s["weights_hash"] for s in rec["sources"]] == [
        read_record(ckpts["beta0-seed0"])["weights_hash"],
        read_record(misleading)["weights_hash"],
    ]
    # a record's own name is the label; a fractional beta keeps its digits; none is "?"
    named = export(tiny_lm(3), tmp_path / "x.safetensors", ckpts["base_hash"], 2.5, name="soft")
    unknown = export(tiny_lm(4), tmp_path / "beta5-seed0.safetensors", ckpts["base_hash"])
    m = make_evaluator(ckpts, sources=[named, unknown, "base"], method="merge", lam=None)
    m.setup("test")
    assert m.run_params()["beta"] == "2.5,?,base"
    assert m.run_params()["sources"] == "soft,beta5-seed0,base"


def test_exports_survive_a_rename_with_their_sidecar(ckpts, tmp_path):
    path = Path(export(tiny_lm(1), tmp_path / "a.safetensors", ckpts["base_hash"], 0))
    moved = tmp_path / "moved" / "b.safetensors"
    moved.parent.mkdir()
    os.replace(path, moved)
    state, rec = load_export(moved)  # the header holds the record: no sidecar needed
    assert rec["beta"] == 0 and not sidecar(moved).exists()
    assert rec["weights_hash"] == weights_hash(state)
