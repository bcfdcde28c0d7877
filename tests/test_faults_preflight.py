"""Issue 21, items 5-9: what a job refuses before it starts, each in one line (no processes).

`suite.preflight` checks values, names, writable outputs, `ckpt_path` (loaded weights-only:
a malicious file never runs code), and exports of other MLflow experiments. The end-to-end
behaviour (exit status 2, one line, nothing written) is in `test_faults_cli.py`.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from suite import preflight
from suite.preflight import Refused

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder nothing can be written to: chmod'ed read-only, or (root ignores permission
    bits) a folder under /sys, which no one can create files in."""
    if ROOT:
        return Path("/sys/kernel/suite-fault-test")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# ---------------------------------------------------------------------------------------
# values and names (issue item 8: seed=abc, torch_threads=-1; item 9: paths in run names)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, low, allow_none, needle",
    [
        ("seed", "abc", None, False, "seed must be an int, got 'abc'"),
        ("seed", 1.5, None, False, "seed must be an int, got 1.5"),
        ("seed", True, None, False, "seed must be an int, got True"),
        ("torch_threads", -1, 1, True, "torch_threads must be an int >= 1 or null, got -1"),
        ("torch_threads", 0, 1, True, "torch_threads must be an int >= 1 or null, got 0"),
        ("torch_threads", "two", 1, True, "got 'two'"),
    ],
)
def test_bad_numbers_are_refused_naming_their_key(key, value, low, allow_none, needle):
    with pytest.raises(Refused) as info:
        preflight.check_int(key, value, low, allow_none)
    assert needle in str(info.value)


def test_good_numbers_pass():
    assert preflight.check_int("seed", 3) == 3
    assert preflight.check_int("torch_threads", None, 1, allow_none=True) is None


@pytest.mark.parametrize(
    "name, safe",
    [
        ("beta15-seed0", "beta15-seed0"),
        ("beta15-model.export_path=/tmp/x/y.safetensors", "beta15-model.export_path=_tmp_x_y.safetensors"),
        ("toy-a=1,b=two words", "toy-a=1,b=two_words"),
        ("../../etc", "etc"),
        ("", "run"),
    ],
)
def test_run_names_are_safe_file_names(name, safe):
    assert preflight.safe_name(name) == safe
    assert "/" not in preflight.safe_name(name)


def test_long_run_names_keep_a_hash():
    long = "x" * 300
    safe = preflight.safe_name(long)
    assert len(safe) <= 120 and safe != preflight.safe_name("x" * 301)


@pytest.mark.parametrize("name", ["a/b", "../x", ".hidden", "a\\b"])
def test_experiment_names_that_are_paths_are_refused(name):
    with pytest.raises(Refused, match="name must be a plain name"):
        preflight.check_name(name)


# ---------------------------------------------------------------------------------------
# writable outputs (issue items 1 and 8: read-only checkpoints/, models/, run folder)
# ---------------------------------------------------------------------------------------


def test_writable_folder_and_missing_subfolders_pass(tmp_path):
    assert preflight.unwritable(tmp_path / "a" / "b" / "c") is None
    assert not (tmp_path / "a").exists()  # the probe creates nothing
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_is_refused_before_anything(tmp_path):
    ro = unwritable_dir(tmp_path)
    problem = preflight.unwritable(ro / "checkpoints" / "beta15-seed0")
    assert problem is not None and "not writable" in problem
    with pytest.raises(Refused) as info:
        preflight.check_outputs({"paths.ckpt_dir": (ro / "ckpt", False)})
    assert str(info.value).startswith("paths.ckpt_dir: ")
    assert "set paths.ckpt_dir=" in str(info.value)


def test_file_in_the_way_and_folder_for_a_file_are_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert "is a file" in preflight.unwritable(tmp_path / "afile" / "ckpt")
    assert "is a file, not a folder" in preflight.unwritable(tmp_path / "afile")
    (tmp_path / "adir.safetensors").mkdir()
    assert "is a folder" in preflight.unwritable(tmp_path / "adir.safetensors", is_file=True)


def test_store_outputs_cover_database_and_artifacts(tmp_path):
    out = preflight.store_outputs(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "art"))
    assert out == {"paths.mlflow_db": (f"{tmp_path}/m.db", True),
                   "paths.mlflow_artifacts": (str(tmp_path / "art"), False)}  # fmt: skip
    assert preflight.store_outputs("http://mlflow:5000") == {}


@pytest.mark.parametrize(
    "env, overrides, expected",
    [
        ("sqlite:////x/y.db", [], "sqlite:////x/y.db"),
        ("sqlite:////x/y.db", ["paths.mlflow_db=/z.db"], None),  # the command line wins
        ("sqlite:////x/y.db", ["logger=none"], None),
        ("", [], None),
    ],
)
def test_mlflow_tracking_uri_is_honoured_unless_the_command_line_sets_a_store(monkeypatch, env, overrides, expected):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert preflight.tracking_uri_from_env(overrides) == expected


# ---------------------------------------------------------------------------------------
# ckpt_path (issue item 8): random bytes, truncated, malicious, poisoned
# ---------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return (self.target, self.args)


def _lightning_like(path: Path, **state) -> Path:
    torch.save({"state_dict": state or {"w": torch.ones(2)}, "loops": {}, "global_step": 4}, path)
    return path


def test_a_good_checkpoint_passes(tmp_path):
    info = preflight.inspect_checkpoint(_lightning_like(tmp_path / "ok.ckpt"))
    assert info.global_step == 4 and info.mlflow_run_id is None


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.write_bytes(os.urandom(4096)), "not a readable checkpoint (truncated, corrupt or not a torch file: not a zip archive)"),
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: torch.save({"w": torch.ones(2)}, p), "not a Lightning checkpoint (no state_dict)"),
        (lambda p: torch.save({"state_dict": {"w": torch.ones(2)}}, p), "holds weights but no training state"),
        (lambda p: _lightning_like(p, w=torch.tensor([1.0, float("nan")])), "holds non-finite weights (w)"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: None, "checkpoint file not found"),
    ],
    ids=["random-bytes", "empty", "weights-dict", "no-loops", "nan-weights", "folder", "missing"],
)
def test_unusable_checkpoints_are_refused_in_one_line(tmp_path, make, needle):
    path = tmp_path / "x.ckpt"
    make(path)
    with pytest.raises(Refused) as info:
        preflight.inspect_checkpoint(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert "weights_only" not in str(info.value)  # never torch's advice to turn the guard off


def test_a_truncated_checkpoint_is_refused(tmp_path):
    good = _lightning_like(tmp_path / "good.ckpt", w=torch.randn(64, 64))
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(Refused, match="not a readable checkpoint"):
        preflight.inspect_checkpoint(cut)


@pytest.mark.parametrize(
    "target, args",
    [(os.system, ("touch {flag}",)), (exec, ("open('{flag}', 'w')",)), (eval, ("open('{flag}', 'w')",))],
    ids=["os.system", "exec", "eval"],
)
def test_a_malicious_checkpoint_never_runs_and_is_one_line(tmp_path, target, args):
    flag = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "global_step": 1,
                "x": _Evil(target, tuple(a.format(flag=flag) for a in args))}, path)  # fmt: skip
    with pytest.raises(Refused) as info:
        preflight.inspect_checkpoint(path)
    assert "refused: it asks to import" in str(info.value) and "nothing in it was run" in str(info.value)
    assert not flag.exists()


def test_a_legacy_pickle_checkpoint_never_runs(tmp_path):
    flag = tmp_path / "PWNED"
    path = tmp_path / "legacy.ckpt"
    with path.open("wb") as handle:
        pickle.dump({"state_dict": _Evil(os.system, (f"touch {flag}",))}, handle)
    with pytest.raises(Refused, match="not a zip archive"):
        preflight.inspect_checkpoint(path)
    assert not flag.exists()


# ---------------------------------------------------------------------------------------
# exports of another MLflow experiment (issue item 6)
# ---------------------------------------------------------------------------------------


def _record(path: Path, **fields) -> str:
    path.with_suffix(".json").write_text(json.dumps({"kind": "student", "step": 300, **fields}))
    return str(path)


def test_an_export_of_another_experiment_is_not_overwritten(tmp_path):
    export = _record(tmp_path / "beta15-seed0.safetensors", mlflow_run_id="r1", mlflow_experiment="cfg-distill")
    with pytest.raises(Refused) as info:
        preflight.check_export_owner(export, "throwaway", resumed_run=None)
    text = str(info.value)
    assert "run r1" in text and "'cfg-distill'" in text and "'throwaway'" in text
    assert "set model.export_path=" in text


def test_same_experiment_and_resumed_run_may_replace_their_export(tmp_path):
    export = _record(tmp_path / "b.safetensors", mlflow_run_id="r1", mlflow_experiment="cfg-distill")
    preflight.check_export_owner(export, "cfg-distill", resumed_run=None)
    preflight.check_export_owner(export, "other", resumed_run="r1")
    preflight.check_export_owner(str(tmp_path / "absent.safetensors"), "other", resumed_run=None)


def test_an_older_record_is_looked_up_in_the_store(tmp_path):
    class Client:
        def get_run(self, run_id):
            return type("R", (), {"info": type("I", (), {"experiment_id": "7"})})()

        def get_experiment(self, experiment_id):
            return type("E", (), {"name": "cfg-distill"})()

    export = _record(tmp_path / "b.safetensors", mlflow_run_id="r1")  # no experiment recorded
    with pytest.raises(Refused, match="experiment 'cfg-distill'"):
        preflight.check_export_owner(export, "throwaway", None, Client())


# ---------------------------------------------------------------------------------------
# mistakes in a job's own arguments: one line each, naming the key (suite.run_end)
# ---------------------------------------------------------------------------------------


def _student(**kw):
    from lightning_modules.student import DistillStudent

    return DistillStudent(policy={"name": "music", "checkpoint": "base.pt"}, embedder="e.pt", **kw)


def _prompts(**kw):
    from datamodules.prompts import PromptDataModule

    return PromptDataModule(**kw)


@pytest.mark.parametrize(
    "build, needle",
    [
        (lambda: _student(lr=-1.0), "DistillStudent: lr must be a finite number > 0, got -1.0"),
        (lambda: _student(lr="abc"), "lr must be a finite number > 0, got 'abc'"),
        (lambda: _student(beta=-1.0), "beta must be a finite number >= 0"),
        (lambda: _student(temperature=0.0), "temperature must be a finite number > 0"),
        (lambda: _student(n_generations=1), "needs n_generations >= 2"),
        (lambda: _student(kl_kind="bogus"), "kl_kind must be one of"),
        (lambda: _student(eval_every=0), "eval_every must be an int >= 1, got 0"),
        (lambda: _student(export_path="x.pt"), "export_path must be a path ending in .safetensors"),
        (lambda: _prompts(batch_size=0), "PromptDataModule: batch_size must be >= 1, got 0"),
        (lambda: _prompts(train_prompts="/no/such/prompts.txt").records("train"), "does not exist"),
        (lambda: _student().on_load_checkpoint({"state_dict": {}}), "it was not written by DistillStudent"),
    ],
    ids=["lr-negative", "lr-text", "beta-negative", "temperature-0", "n-generations-1", "kl-kind",
         "eval-every-0", "export-pt", "batch-size-0", "prompts-missing", "checkpoint-of-another-job"],  # fmt: skip
)
def test_job_argument_mistakes_are_one_line_naming_the_key(build, needle):
    from suite.run_end import exit_status

    with pytest.raises((ValueError, TypeError, FileNotFoundError)) as info:
        build()
    status, line = exit_status(info.value)
    assert status == 2 and needle in line and "\n" not in line
