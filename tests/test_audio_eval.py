"""`python -m suite.audio_eval` refuses bad sizes before loading anything."""

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from suite import audio_eval


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
