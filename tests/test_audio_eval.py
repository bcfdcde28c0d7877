"""`python -m suite.audio_eval` refuses bad sizes before loading anything."""

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from suite import artifacts, audio_eval


@pytest.mark.parametrize("argv", [["--n", "1"], ["--skip", "-5"]])
def test_bad_sizes_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        audio_eval.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--n >= 2 and --skip >= 0" in err and "Traceback" not in err


def test_default_skip_is_past_the_tiny_corpus():
    # every artifact and student trains on pieces of the 20000-piece tiny corpus
    corpus = OmegaConf.load(Path(__file__).parents[1] / "conf/artifacts/tiny.yaml").corpus
    skip = inspect.signature(audio_eval.evaluate).parameters["skip"].default
    assert skip >= corpus.n_pieces


def test_missing_artifact_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    # the default artifacts are looked up, never built here: `suite prepare` builds them
    monkeypatch.setenv("SUITE_ARTIFACTS", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        audio_eval.main(["--n", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no built embedder artifact")
    assert "python -m suite prepare --config conf/prepare.yaml" in err
    assert list(tmp_path.iterdir()) == []


def test_find_built_looks_artifacts_up_by_spec(tmp_path):
    spec = {"seed": 0, "model": {"preset": "tiny"}, "train": {"lr": 1e-3}}
    assert artifacts.find_built("embedder", spec, root=tmp_path) is None

    def build(folder):
        (folder / "model.pt").write_text("weights")

    old = artifacts.ensure("embedder", 1, spec, build, root=tmp_path)
    assert artifacts.find_built("embedder", spec, root=tmp_path) == old
    new = artifacts.ensure("embedder", 2, spec, build, root=tmp_path)
    assert artifacts.find_built("embedder", spec, root=tmp_path) == new  # newest version
    assert artifacts.find_built("embedder", {**spec, "seed": 1}, root=tmp_path) is None
    assert artifacts.find_built("scorer", spec, root=tmp_path) is None


def test_miss_attribute_shares_count_what_the_retrieved_piece_shares():
    import torch

    from suite.audio_eval import miss_attribute_shares

    attrs = [{"genre": "rock", "key": "C"}, {"genre": "rock", "key": "D"},
             {"genre": "jazz", "key": "C"}, {"genre": "jazz", "key": "D"}]  # fmt: skip
    sim = torch.eye(4)
    sim[0, 1] = sim[2, 0] = 2.0  # query 0 retrieves piece 1 (same genre), query 2 piece 0 (same key)
    out = miss_attribute_shares(sim, attrs)
    assert out["embedder_misses"] == 2
    assert out["embedder_miss_same_genre"] == 0.5 and out["embedder_miss_same_key"] == 0.5
    # 12 ordered pairs of distinct pieces, 4 of them in the same genre, 4 in the same key
    assert out["pairs_same_genre"] == pytest.approx(4 / 12) and out["pairs_same_key"] == pytest.approx(4 / 12)
    assert "embedder_miss_same_mood" not in out  # no piece has a mood here


def test_default_specs_find_the_committed_judges():
    # the preference spec nests the base LM's (with conf/lm/tiny.yaml): read raw, it matched
    # no artifact; composed, every default is found without building anything
    specs = audio_eval.default_specs()
    assert "n_layers" in specs["preference"]["data"]["base_lm"]["model"]
    for kind in ("embedder", "scorer", "preference"):
        path = audio_eval._checkpoint(kind, specs[kind])
        assert path.is_file() and path.parent.name.startswith(f"{kind}-")


def test_the_scorer_stages_name_each_other_by_spec():
    # conf/artifacts/tiny.yaml builds the scorer in three stages; each names the one before
    # by its spec (not an absolute path), so the chain hashes the same in every checkout
    specs = audio_eval.default_specs()
    assert specs["scorer"]["model"]["init_weights"] == specs["scorer_frozen_trunk"]
    frozen = specs["scorer_frozen_trunk"]
    assert frozen["data"]["trunk"] == frozen["model"]["init_weights"] == specs["scorer_contrastive"]
    assert frozen["model"]["train_trunk"] is False
    folders = {audio_eval._checkpoint("scorer", specs[k]).parent for k in
               ("scorer_contrastive", "scorer_frozen_trunk", "scorer")}  # fmt: skip
    assert len(folders) == 3
