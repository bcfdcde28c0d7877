"""The artifact cache: build once, reuse, rebuild or refuse stale, never half-written."""

import json

import pytest

from suite.artifacts import StaleArtifactError, artifact_dir, ensure, read_record


def writer(calls):
    def build(folder):
        calls.append(folder)
        (folder / "weights.txt").write_text("w")

    return build


def test_builds_once_then_reuses(tmp_path):
    calls = []
    first = ensure("toy", 1, {"n": 3}, writer(calls), root=tmp_path)
    second = ensure("toy", 1, {"n": 3}, writer(calls), root=tmp_path)
    assert first == second and len(calls) == 1
    record = read_record(first)
    assert record["kind"] == "toy" and record["version"] == 1 and record["config"] == {"n": 3}
    assert (first / "weights.txt").read_text() == "w"


def test_config_change_gets_its_own_folder(tmp_path):
    calls = []
    a = ensure("toy", 1, {"n": 3}, writer(calls), root=tmp_path)
    b = ensure("toy", 1, {"n": 4}, writer(calls), root=tmp_path)
    assert a != b and len(calls) == 2


def test_stale_version_is_rebuilt_or_refused(tmp_path):
    calls = []
    folder = ensure("toy", 1, {"n": 3}, writer(calls), root=tmp_path)
    # Simulate an artifact made by older code that lives at the folder of the new version.
    new_folder = artifact_dir("toy", 2, {"n": 3}, tmp_path)
    folder.rename(new_folder)
    with pytest.raises(StaleArtifactError, match="version 1 on disk, code is version 2"):
        ensure("toy", 2, {"n": 3}, writer(calls), root=tmp_path, on_stale="refuse")
    ensure("toy", 2, {"n": 3}, writer(calls), root=tmp_path)
    assert read_record(new_folder)["version"] == 2 and len(calls) == 2


def test_failed_build_leaves_nothing(tmp_path):
    def broken(folder):
        (folder / "half.bin").write_text("x")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        ensure("toy", 1, {"n": 3}, broken, root=tmp_path)
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_source_hash_is_recorded(tmp_path):
    src = tmp_path / "builder.py"
    src.write_text("x = 1\n")
    folder = ensure("toy", 1, {}, writer([]), sources=[src], root=tmp_path / "a")
    assert len(json.loads((folder / "record.json").read_text())["source_hash"]) == 12
