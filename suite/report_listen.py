"""The report's listening page: each compared model's generations for the same prompts.

The paper's evaluation is listening (its website plays every model's generations per
prompt); `write_listen_page` gives the suite's runs the same: `listen.html` beside the
report's figures, plain HTML that opens from disk (no server), with the clips it plays
copied into `listen/` next to it (relative links):

- one table per group of models (the students at their last evaluation, then each front
  of figure 3 in its order: LERP over lambda, CFG over gamma, temperatures, merges): a
  row per prompt, a column per model with its `<audio>` player and a link to its MIDI, the
  column headed by the model's name and metrics (quality, diversity, Vendi, oracle);
- the side-by-side pairs (sweeps/sbs.yaml, tables 2-3): for each pair, model A's clip next
  to model B's on each prompt, with A's win rates against B.

Where the clips come from: every evaluation logs samples to its MLflow run
(`lightning_modules.policy_job.PolicyJob.write_samples`): `sample<m>.wav`, the policy's
extras (`sample<m>.mid`) and `sample_prompts.tsv` (name TAB prompt), under `samples/` for
an evaluator run and `samples/step<N>/` for a student (the page takes the last step, whose
metrics are the run's final ones). Each is the first generation for one of the first eval
prompts, drawn with the same seed in every run, so the same prompts recur across models;
the page shows the `max_prompts` prompts most models have. A side-by-side run logs only
model A's clips: B's come from another run that evaluated the same model (same sources,
merge, lambda, gamma, temperature), preferring side-by-side runs; "no clip" when none did.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from suite.report_runs import SIDE_BY_SIDE, Front, RunPoint, student_exports, student_label

PAGE = "listen.html"
FOLDER = "listen"
INDEX = "sample_prompts.tsv"
AUDIO_FORMATS = ("wav", "mp3")
METRICS = (("quality", "eval/quality"), ("diversity", "eval/diversity"), ("Vendi", "eval/vendi"),
           ("oracle quality", "eval/oracle_quality"), ("MuLan", "eval/mulan"))  # fmt: skip
_STEP = re.compile(r"^samples/step(\d+)$")


@dataclass
class Clip:
    """One logged generation: its audio and MIDI as copied next to the page (relative)."""

    audio: str
    midi: str | None = None


@dataclass
class Model:
    """A run with its logged clips, keyed by prompt, and where they were logged."""

    run: RunPoint
    label: str
    source: str  # the artifact folder, e.g. samples/step300
    clips: dict[str, Clip] = field(default_factory=dict)


def sample_folder(client, run_id: str) -> str | None:
    """The run's last logged samples folder (`samples` or the highest `samples/step<N>`)."""
    entries = client.list_artifacts(run_id, "samples")
    if any(e.path == f"samples/{INDEX}" for e in entries):
        return "samples"
    steps = [(int(m.group(1)), e.path) for e in entries if e.is_dir and (m := _STEP.match(e.path))]
    return max(steps)[1] if steps else None


def read_index(path: Path) -> list[tuple[str, str]]:
    """`sample_prompts.tsv` -> [(sample name, prompt)]; a bad line is a ValueError naming it."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        name, tab, prompt = line.partition("\t")  # written as is by suite.rollout.save_samples
        if not line.strip():
            continue
        if not tab or not name:
            raise ValueError(f"listen page: {path}:{number}: expected 'name<TAB>prompt', got {line!r}")
        rows.append((name, prompt))
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:60] or "run"


def _copy_audio(src: Path, dst: Path, audio_format: str) -> Path:
    if audio_format == "wav":
        return Path(shutil.copyfile(src, dst.with_suffix(".wav")))
    import soundfile as sf

    data, rate = sf.read(str(src), dtype="float32")
    out = dst.with_suffix(".mp3")
    sf.write(str(out), data, rate, format="MP3", subtype="MPEG_LAYER_III")
    return out


def fetch_model(client, run: RunPoint, label: str, out: Path, audio_format: str) -> Model | None:
    """Download the run's last samples and copy its clips under `out/listen/<run>/`."""
    folder = sample_folder(client, run.run_id)
    if folder is None:
        return None
    model = Model(run, label, folder)
    target = out / FOLDER / f"{_slug(run.name)}-{run.run_id[:8]}"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        local = Path(client.download_artifacts(run.run_id, folder, tmp))
        for name, prompt in read_index(local / INDEX):
            wav = local / f"{name}.wav"
            if prompt in model.clips or not wav.is_file():
                continue
            audio = _copy_audio(wav, target / name, audio_format)
            midi = local / f"{name}.mid"
            copied = Path(shutil.copyfile(midi, target / midi.name)) if midi.is_file() else None
            model.clips[prompt] = Clip(audio.relative_to(out).as_posix(),
                                       copied.relative_to(out).as_posix() if copied else None)  # fmt: skip
    return model


@contextmanager
def _quiet_downloads():
    """No MLflow progress bar per run (a report reads dozens of runs' samples)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


# ------------------------------------------------------------------ which model is which
def _number(raw: str | None) -> float | None:
    try:
        return None if raw in (None, "", "None", "null") else round(float(raw), 6)
    except ValueError:
        return None


def _listed(params: dict[str, str], prefix: str) -> tuple[str, ...]:
    keys = sorted((int(k[len(prefix):]), k) for k in params
                  if k.startswith(prefix) and k[len(prefix):].isdigit())  # fmt: skip
    return tuple(params[k] for _, k in keys)


def model_key(params: dict[str, str], prefix: str, lam: str, export: bool = False) -> tuple | None:
    """What a run evaluated (sources, merge, lambda, gamma, x- under CFG, temperature), from
    its params under `prefix` (`model.` for the run, `model.baseline.` for its baseline)."""
    sources = (params.get(f"{prefix}export_path"),) if export else _listed(params, f"{prefix}sources.")
    if not sources or None in sources:
        return None
    gamma = _number(params.get(f"{prefix}gamma")) if not export else 1.0
    single = len(sources) == 1
    return (
        sources,
        "single" if single else params.get(f"{prefix}method", "lerp"),
        None if single else _number(params.get(f"{prefix}{lam}")),
        1.0 if gamma is None else gamma,
        params.get(f"{prefix}negative_prompt") if gamma not in (None, 1.0) else None,
        _number(params.get(f"{prefix}temperature")),
    )


def _is_student(run: RunPoint) -> bool:
    return run.target.endswith("DistillStudent")


def _is_pair(run: RunPoint) -> bool:
    return run.params.get("front") == SIDE_BY_SIDE


def _pair_names(run: RunPoint) -> tuple[str, str]:
    a, b = run.params.get("model_a", "A"), run.params.get("model_b", "B")
    name_b = run.params.get("model.baseline.name") or run.params.get("baseline") or b
    return run.params.get(f"models.{a}.name", a), run.params.get(f"models.{b}.name", name_b)


def _beta(run: RunPoint) -> tuple[float, str]:
    values = [run.value(k) for k in ("diversity.beta", "model.beta", "beta")]
    return next((v for v in values if v is not None), float("inf")), run.name


def _own_key(run: RunPoint) -> tuple | None:
    return model_key(run.params, "model.", "lam", export=_is_student(run))


# ------------------------------------------------------------------ the page
def write_listen_page(client, runs: Sequence[RunPoint], fronts_: Sequence[Front], out: Path,
                      title: str, max_prompts: int = 4, audio_format: str = "wav") -> Path:  # fmt: skip
    """Write `out/listen.html` and `out/listen/` (module docstring); returns the page."""
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"listen page: audio format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
    if not isinstance(max_prompts, int) or max_prompts < 1:
        raise ValueError(f"listen page: max_prompts must be an int >= 1, got {max_prompts!r}")
    out = Path(out)
    students = sorted((r for r in runs if _is_student(r)), key=_beta)
    groups: list[tuple[str, list[RunPoint]]] = [("Students (last evaluation)", students)]
    tested = [r for members in student_exports(runs).values() for r in members]
    if tested:  # each seed's export on the test prompts (the fronts' prompts)
        groups.append(("Students on the test prompts (each training seed's export)", tested))
    groups += [(f"{f.name}" + (f" (along {f.varies})" if f.varies else ""), f.runs) for f in fronts_]
    pairs = [r for r in runs if _is_pair(r)]
    models: dict[str, Model] = {}
    for run in [r for _, members in groups for r in members] + pairs:
        if run.run_id not in models:
            label = (_pair_names(run)[0] if _is_pair(run)
                     else student_label(run) if _is_student(run) else run.name)  # fmt: skip
            model = fetch_model(client, run, label, out, audio_format)
            if model is not None:
                models[run.run_id] = model
    counts = Counter(p for m in models.values() for p in m.clips)
    order = {p: i for i, p in enumerate(dict.fromkeys(p for m in models.values() for p in m.clips))}
    prompts = sorted(counts, key=lambda p: (-counts[p], order[p]))[:max_prompts]
    prompts.sort(key=order.__getitem__)

    body = [f"<h1>{_e(title)}</h1>", _INTRO]
    if not models:
        body.append("<p><em>No run logged samples (WAV under <code>samples/</code>): nothing "
                    "to listen to.</em></p>")  # fmt: skip
    for name, members in groups:
        shown = [models[r.run_id] for r in members if r.run_id in models]
        if shown:
            body.append(f"<section><h2>{_e(name)}</h2>")
            body.append(_table(prompts, [(_header(m), m) for m in shown]))
            body.append("</section>")
    if pairs:
        body.append("<section><h2>Side by side (tables 2-3)</h2>")
        for run in pairs:
            body.append(_pair(run, prompts, models, runs))
        body.append("</section>")
    page = out / PAGE
    page.write_text(_HEAD.format(title=_e(title)) + "\n".join(body) + "\n</body>\n</html>\n")
    return page


def _pair(run: RunPoint, prompts: list[str], models: dict[str, Model],
          runs: Sequence[RunPoint]) -> str:  # fmt: skip
    name_a, name_b = _pair_names(run)
    want = model_key(run.params, "model.baseline.", "lambda")
    b_model = None
    if want is not None:  # side-by-side runs first: their draws are the judged ones
        for other in sorted(runs, key=lambda r: not _is_pair(r)):
            if other.run_id in models and other.run_id != run.run_id and _own_key(other) == want:
                b_model = models[other.run_id]
                break
    rates = ", ".join(f"{kind} {run.metrics[f'eval/winrate_{kind}']:.3f}" for kind in
                      ("quality", "diversity") if f"eval/winrate_{kind}" in run.metrics)  # fmt: skip
    where = f"B's clips from run {_e(b_model.run.name)}" if b_model else "no run logged B's clips"
    head = (f"<h3>A: {_e(name_a)} vs B: {_e(name_b)}</h3><p class=note>run {_e(run.name)}; "
            f"A's win rate against B: {_e(rates or 'not logged')}; {where}</p>")  # fmt: skip
    columns = [(f"A: {_e(name_a)}", models.get(run.run_id)), (f"B: {_e(name_b)}", b_model)]
    return head + _table(prompts, columns)


def _header(model: Model) -> str:
    metrics = " &middot; ".join(f"{name} {model.run.metrics[key]:.3f}"
                                for name, key in METRICS if key in model.run.metrics)  # fmt: skip
    return (f"{_e(model.label)}<br><span class=metrics>{metrics or 'no metrics'}</span>"
            f"<br><span class=note>{_e(model.source)}</span>")


def _table(prompts: list[str], columns: list[tuple[str, Model | None]]) -> str:
    rows = ["<div class=scroll><table><thead><tr><th>prompt</th>"
            + "".join(f"<th>{head}</th>" for head, _ in columns) + "</tr></thead><tbody>"]  # fmt: skip
    for prompt in prompts:
        cells = []
        for _, model in columns:
            clip = model.clips.get(prompt) if model is not None else None
            if clip is None:
                cells.append("<td class=none>no clip</td>")
                continue
            midi = f'<br><a href="{_e(clip.midi)}">MIDI</a>' if clip.midi else ""
            cells.append(f'<td><audio controls preload="none" src="{_e(clip.audio)}"></audio>{midi}</td>')
        rows.append(f"<tr><td class=prompt>{_e(prompt)}</td>{''.join(cells)}</tr>")
    rows.append("</tbody></table></div>")
    return "\n".join(rows)


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.4em; vertical-align: top; text-align: left; }}
td.prompt {{ max-width: 18em; font-style: italic; }}
td.none {{ color: #999; }}
.metrics {{ font-weight: normal; font-size: 0.85em; }}
.note {{ color: #666; font-size: 0.85em; font-weight: normal; }}
audio {{ width: 15em; }}
</style>
</head>
<body>
"""

_INTRO = (
    "<p class=note>Written by <code>python -m suite report</code>. Each clip is the first "
    "generation for the prompt at the run's last evaluation (the same seed in every run), "
    "rendered by the policy's synthesiser, with its MIDI; metrics are the run's final "
    "ones. The files are in <code>listen/</code> beside this page.</p>"
)
