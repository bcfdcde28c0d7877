"""The report's listening page (suite/report_listen.py) built from a synthetic MLflow store.

Runs log samples as the jobs do (`PolicyJob.write_samples`: `sample<m>.wav`, `.mid` and
`sample_prompts.tsv` under `samples/` or `samples/step<N>/`); the page is parsed with
html.parser and every audio file it names must exist beside it and decode.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from suite.report import build_report
from suite.report_listen import read_index

STUDENT = "lightning_modules.student.DistillStudent"
EVALUATOR = "lightning_modules.merged_eval.MergedEvaluator"
PROMPTS = ["A peaceful sunset on a beach", "Rock song.", "Jazz & <blues> \"live\"", "Opera singer"]
RATE = 16_000
ROOT = "/proj/models"


class Page(HTMLParser):
    """Audio sources, links and table rows (cells as text / audio) of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[str] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self.rows: list[list[str]] = []  # per <tr>: each cell's audio src or its text
        self.tables: dict[str, list[list[str]]] = {}  # the rows under each heading
        self._heading: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "audio":
            self.audio.append(attrs["src"])
            if self._cell is not None:
                self._cell.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag in ("h2", "h3"):
            self._heading = ""
        elif tag == "tr":
            self.rows.append([])
            self.tables.setdefault(self.headings[-1], []).append(self.rows[-1])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self._heading is not None:
            self.headings.append(self._heading)
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._cell is not None and not any(c.endswith((".wav", ".mp3")) for c in self._cell):
            self._cell.append(data)


def _tone(freq: float, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _log_samples(client, run_id: str, folder: str, tmp: Path, freqs: dict[str, float]) -> None:
    """What write_samples logs: sample<m>.wav + .mid and the prompt index."""
    import pretty_midi

    local = tmp / run_id / folder
    local.mkdir(parents=True)
    lines = []
    for m, (prompt, freq) in enumerate(freqs.items()):
        sf.write(local / f"sample{m}.wav", _tone(freq), RATE, subtype="PCM_16")
        midi = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=0)
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=60 + m, start=0.0, end=0.5))
        midi.instruments.append(inst)
        midi.write(str(local / f"sample{m}.mid"))
        lines.append(f"sample{m}\t{prompt}")
    (local / "sample_prompts.tsv").write_text("\n".join(lines) + "\n")
    client.log_artifacts(run_id, str(local), artifact_path=folder)


def _freq(run: int, prompt: int, step: int = 0) -> float:
    return 200.0 + 40 * run + 7 * prompt + 100 * step  # a different tone per clip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    tmp = tmp_path_factory.mktemp("listen_store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cfg-distill", artifact_location=str(tmp / "art"))
    ids: dict[str, str] = {}

    def run(name, params, metrics, samples=(), tags=None):
        r = client.create_run(exp, run_name=name, tags=tags or {})
        ids[name] = r.info.run_id
        for k, v in params.items():
            client.log_param(r.info.run_id, k, v)
        for k, v in metrics.items():
            client.log_metric(r.info.run_id, k, v)
        for folder, freqs in samples:
            _log_samples(client, r.info.run_id, folder, tmp / "logged", freqs)
        client.set_terminated(r.info.run_id, "FINISHED")

    n = len(ids)
    for beta in (15, 0):  # logged in this order; the page sorts the students by beta
        n = len(ids)
        steps = [(f"samples/step{s}", {p: _freq(n, i, s) for i, p in enumerate(PROMPTS)})
                 for s in (0, 4)]  # fmt: skip
        run(f"beta{beta}-seed0", {"model._target_": STUDENT, "diversity.beta": beta,
                                  "model.export_path": f"{ROOT}/beta{beta}-seed0.safetensors",
                                  "model.temperature": 0.99},
            {"eval/quality": 3.0 + beta / 10, "eval/diversity": 0.3}, steps, {"stage": "fit"})  # fmt: skip
    run("beta5-seed0", {"model._target_": STUDENT, "diversity.beta": 5},
        {"eval/quality": 3.1})  # no samples: not on the page  # fmt: skip
    for lam in (0.0, 1.0):
        n = len(ids)
        run(f"lerp-lambda={lam}",
            {"model._target_": EVALUATOR, "front": "LERP(0,15)", "lambda": lam, "gamma": 1.0,
             "model.sources.0": f"{ROOT}/beta0-seed0.safetensors",
             "model.sources.1": f"{ROOT}/beta15-seed0.safetensors", "model.method": "lerp",
             "model.lam": lam, "model.gamma": 1.0, "model.temperature": 0.99},
            {"eval/quality": 3.5 - lam, "eval/diversity": 0.3 + lam / 2, "eval/vendi": 2.0},
            [("samples", {p: _freq(n, i) for i, p in enumerate(PROMPTS)})])  # fmt: skip
    n = len(ids)
    run("student-beta15-seed1", {"model._target_": EVALUATOR, "front": "students", "beta": "15",
                                 "sources": "beta15-seed1",
                                 "model.sources.0": f"{ROOT}/beta15-seed1.safetensors",
                                 "model.method": "single", "model.lam": "None", "model.gamma": 1.0,
                                 "model.temperature": 0.99},
        {"eval/quality": 3.2}, [("samples", {p: _freq(n, i) for i, p in enumerate(PROMPTS)})])  # fmt: skip
    n = len(ids)
    other = ["Male choir harmony", *PROMPTS[1:]]  # one prompt the others lack
    run("cfg-gamma=3.0", {"model._target_": EVALUATOR, "front": "CFG(base,negative)",
                          "gamma": 3.0, "model.sources.0": "base", "model.method": "single",
                          "model.lam": "None", "model.gamma": 3.0,
                          "model.negative_prompt": "Bad audio quality.",
                          "model.temperature": 0.99},
        {"eval/quality": 3.6}, [("samples", {p: _freq(n, i) for i, p in enumerate(other)})])  # fmt: skip
    baseline = {"base_cfg": ("base", "cfg3", ["base"], 3.0, "None"),
                "beta15_lerp": (f"{ROOT}/beta15-seed0.safetensors", "lerp(0,15)",
                                [f"{ROOT}/beta0-seed0.safetensors", f"{ROOT}/beta15-seed0.safetensors"],
                                1.0, 0.5)}  # fmt: skip
    for pair, (a_source, b_name, b_sources, b_gamma, b_lam) in baseline.items():
        n = len(ids)
        a, b = pair.split("_")
        params = {"model._target_": EVALUATOR, "front": "side-by-side", "pair": pair,
                  "model_a": a, "model_b": b, f"models.{a}.name": a, f"models.{b}.name": b_name,
                  "baseline": b_name, "model.sources.0": a_source, "model.method": "single",
                  "model.lam": "None", "model.gamma": 1.0, "model.temperature": 0.99,
                  "model.baseline.name": b_name, "model.baseline.method": "lerp",
                  "model.baseline.lambda": b_lam, "model.baseline.gamma": b_gamma,
                  "model.baseline.negative_prompt": "Bad audio quality.",
                  "model.baseline.temperature": 0.99}  # fmt: skip
        params.update({f"model.baseline.sources.{i}": s for i, s in enumerate(b_sources)})
        run(f"sbs-pair={pair}", params,
            {"eval/quality": 3.0, "eval/winrate_quality": 0.25, "eval/winrate_diversity": 0.75},
            [("samples", {p: _freq(n, i) for i, p in enumerate(PROMPTS)})], {"sweep": "sbs"})  # fmt: skip
    return uri, ids


def _decoded_freq(path: Path) -> float:
    data, rate = sf.read(str(path), dtype="float32")
    assert rate == RATE and len(data) > 1000
    spectrum = np.abs(np.fft.rfft(data))
    return float(np.fft.rfftfreq(len(data), 1 / rate)[spectrum.argmax()])


def _parse(page: Path) -> Page:
    parser = Page()
    parser.feed(page.read_text())
    return parser


def test_listen_page_plays_every_model_side_by_side(store, tmp_path):
    uri, ids = store
    out = tmp_path / "report"
    written = build_report(uri, "cfg-distill", out, reference=(0.0, 0.0), log_to_mlflow=False)
    assert {"listen.html", "listen"} <= set(written)
    page = _parse(out / "listen.html")
    # Every audio file it names exists beside it and decodes; every MIDI link exists.
    assert len(page.audio) >= 20
    for src in page.audio:
        assert not src.startswith("/") and (out / src).is_file(), src
        _decoded_freq(out / src)
    midis = [h for h in page.links if h.endswith(".mid")]
    assert midis and all((out / h).is_file() for h in midis)
    import pretty_midi

    assert pretty_midi.PrettyMIDI(str(out / midis[0])).instruments[0].notes
    # Students by beta, at their last evaluation (step 4), a run without samples left out.
    assert page.headings[0] == "Students (last evaluation)"
    header = page.rows[0]
    assert header[0] == "prompt" and header[1].startswith("beta=0") and header[2].startswith("beta=15")
    assert "samples/step4" in header[1] and "quality 3.000" in header[1]
    assert not any("beta5" in cell for row in page.rows for cell in row)
    beta0 = [row[1] for row in page.rows[1:5]]
    beta0_run = list(ids).index("beta0-seed0")
    for i, src in enumerate(beta0):
        assert _decoded_freq(out / src) == pytest.approx(_freq(beta0_run, i, 4), abs=5)
    # The prompts most models share (the first eval prompts), in their order, escaped safely.
    assert [row[0] for row in page.rows[1:5]] == PROMPTS
    assert "Male choir harmony" not in (out / "listen.html").read_text()
    assert "Jazz &amp; &lt;blues&gt;" in (out / "listen.html").read_text()
    # Fronts in their order; the CFG run lacks one prompt: "no clip" there.
    assert {"LERP(0,15) (along lambda)", "CFG(base,negative)"} <= set(page.headings)
    cfg_rows = page.tables["CFG(base,negative)"]
    assert cfg_rows[1][1] == "no clip" and cfg_rows[2][1].endswith(".wav")
    # The students' exports on the test prompts: a group of their own, not a front.
    tested = page.tables["Students on the test prompts (each training seed's export)"]
    assert tested[0][1].startswith("student-beta15-seed1") and tested[1][1].endswith(".wav")
    assert not any(h.startswith("students") for h in page.headings)


def test_side_by_side_pairs_put_a_next_to_b(store, tmp_path):
    uri, ids = store
    out = tmp_path / "sbs"
    build_report(uri, "cfg-distill", out, sweep=None, reference=(0.0, 0.0), log_to_mlflow=False)
    page = _parse(out / "listen.html")
    text = (out / "listen.html").read_text()
    assert "A: base vs B: cfg3" in page.headings and "A: beta15 vs B: lerp(0,15)" in page.headings
    # base vs CFG: A from the pair's own run, B from the run that evaluated CFG (gamma 3).
    rows = page.tables["A: base vs B: cfg3"]
    assert rows[0] == ["prompt", "A: base", "B: cfg3"]
    a_dir = f"listen/sbs-pair=base_cfg-{ids['sbs-pair=base_cfg'][:8]}/"
    b_dir = f"listen/cfg-gamma=3.0-{ids['cfg-gamma=3.0'][:8]}/"
    assert rows[2][1].startswith(a_dir) and rows[2][2].startswith(b_dir)
    assert rows[1][2] == "no clip"  # CFG logged no clip for the first prompt
    assert "win rate against B: quality 0.250, diversity 0.750" in text
    # beta15 vs LERP(0, 15) at lambda 0.5: no run evaluated that merge.
    rows = page.tables["A: beta15 vs B: lerp(0,15)"]
    assert all(r[2] == "no clip" for r in rows[1:]) and "no run logged B's clips" in text


def test_mp3_clips_and_a_second_report_replaces_the_first(store, tmp_path):
    import mlflow

    uri, _ = store
    out = tmp_path / "again"
    build_report(uri, "cfg-distill", out, reference=(0.0, 0.0), log_to_mlflow=False)
    stale = out / "listen" / "stale.wav"
    stale.write_bytes(b"old")
    build_report(uri, "cfg-distill", out, reference=(0.0, 0.0), listen_audio="mp3", listen_prompts=2)
    assert not stale.exists()
    page = _parse(out / "listen.html")
    assert page.audio and all(src.endswith(".mp3") for src in page.audio)
    # the two prompts most models have (the CFG run lacks the first), in their order
    assert [row[0] for row in page.tables["Students (last evaluation)"][1:]] == PROMPTS[1:3]
    for src in page.audio:
        data, rate = sf.read(str(out / src), dtype="float32")
        assert rate == RATE and len(data) > 1000
    # The report's MLflow run holds the page and its clips.
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cfg-distill")
    (report,) = client.search_runs([exp.experiment_id], "tags.stage = 'report'")
    assert "report/listen.html" in {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert client.list_artifacts(report.info.run_id, "report/listen")


def test_bad_listen_arguments_write_nothing(store, tmp_path):
    uri, _ = store
    out = tmp_path / "nothing"
    with pytest.raises(ValueError, match=r"listen_prompts \(--listen-prompts\) must be an int >= 0"):
        build_report(uri, "cfg-distill", out, listen_prompts=-1)
    with pytest.raises(ValueError, match="listen_audio .* 'wav' or 'mp3', got 'ogg'"):
        build_report(uri, "cfg-distill", out, listen_audio="ogg")
    assert not out.exists()
    written = build_report(uri, "cfg-distill", out, listen_prompts=0, log_to_mlflow=False)
    assert "listen.html" not in written


def test_read_index_refuses_a_bad_line(tmp_path):
    index = tmp_path / "sample_prompts.tsv"
    index.write_text("sample0\tRock song.\nsample1 no tab\n")
    with pytest.raises(ValueError, match=r"sample_prompts.tsv:2: expected 'name<TAB>prompt'"):
        read_index(index)
