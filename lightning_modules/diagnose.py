"""`python -m suite diagnose --config conf/beta15.yaml`: the world's shortcut diagnostics.

Runs `suite.world_diagnostics` on the artifacts a student config names (its base policy
and its embedder E, with its scorers for the judge checks) over held-out prompts (the
validation split by default, `diagnose.prompts`: omega is chosen from it) at each of
`diagnose.seeds` (three by default: one draw is an anecdote), prints the table and writes
it to a CSV (`docs/diagnostics.csv` by default; one row per measurement: name, mean value,
95 % t-interval over seeds, number of seeds, limit, verdict on the interval, each seed's
value). It never builds an artifact: a missing one is refused, naming it and the
command that builds it, before anything is computed or written.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("suite.diagnose")


def _built(kind: str, spec: Any, root: Path) -> Path:
    """The file of an artifact that must already exist (path or built spec)."""
    from lightning_modules.artifacts import JOBS, MODEL_FILE
    from suite import artifacts

    if isinstance(spec, str):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"diagnose: {kind} checkpoint not found: {spec}")
        return Path(spec)
    # The folder of THIS version of the kind (find_built's "highest version" could be a
    # leftover of a newer world with the same spec).
    folder = artifacts.artifact_dir(kind, JOBS[kind][3], spec, root)
    if artifacts.read_record(folder) is None:
        raise FileNotFoundError(
            f"diagnose: the {kind} artifact of this config is not built; run `python -m suite "
            f"prepare --config conf/prepare.yaml` (or this config's own prepare) first"
        )
    return folder / MODEL_FILE


def diagnose(policy: dict, embedder: Any, prompts_file: str, negative_prompt: str, gamma: float,
             generations: int, body_candidates: int, out: str, root: str, seed: int = 0,
             scorer: Any = None, preference: Any = None,
             seeds: list[int] | None = None) -> list[dict]:  # fmt: skip
    """Run the diagnostics at each of `seeds` (default `[seed]`) and write `out`; returns the
    aggregated rows. With `scorer` and `preference` (artifact specs or paths) the CFG sweep's
    judge checks run too (suite.judge_diagnostics)."""
    from lightning_modules.artifacts import artifact_metrics
    from suite.models.preference import PreferenceModel
    from suite.models.scorer import MuLanScorer
    from suite.models.vit import AudioEmbedder
    from suite.music.prompts import PROMPT_SETS, load_prompt_records, prompt_set
    from suite.policies.music import MusicPolicy
    from suite.world_diagnostics import _verdict, aggregate_seeds, cfg_share_rows, embedder_rows

    seeds = [int(s) for s in (seeds if seeds is not None else [seed])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"diagnose: diagnose.seeds must be distinct integers, got {seeds!r}")

    if policy.get("name") != "music":
        raise ValueError(f"diagnose: measures the embedded music world's shortcuts; generator "
                         f"{policy.get('name')!r} is not it (use generator=music)")  # fmt: skip
    root_path = Path(root) / "artifacts"
    lm_path = _built("base_lm", policy["checkpoint"], root_path)
    e_path = _built("embedder", embedder, root_path)
    judges = None
    if scorer is not None and preference is not None:
        try:
            judges = (_built("scorer", scorer, root_path), _built("preference", preference, root_path))
        except FileNotFoundError as err:  # the shortcut checks need base_lm and E only
            log.warning("diagnose: %s; the CFG sweep's judge checks are skipped", err)
    path = prompt_set(prompts_file, root) if prompts_file in PROMPT_SETS else Path(prompts_file)
    prompts = [r["prompt"] for r in load_prompt_records(path)]
    world = MusicPolicy.from_spec(str(lm_path), use_grammar_mask=policy.get("use_grammar_mask", True))
    E = AudioEmbedder.from_checkpoint(e_path).eval()
    log.info("diagnose: base model %s, embedder %s, %d prompts x %d, seeds %s", lm_path, e_path,
             len(prompts), generations, seeds)  # fmt: skip
    judge_models = None
    if judges is not None:
        judge_models = (MuLanScorer.from_checkpoint(judges[0]).eval(),
                        PreferenceModel.from_checkpoint(judges[1]).eval())  # fmt: skip
    per_seed = []
    for s in seeds:
        log.info("diagnose: seed %d", s)
        rows = cfg_share_rows(world, prompts, negative_prompt, n=generations, gamma=gamma, seed=s,
                              body_candidates=body_candidates)  # fmt: skip
        rows += embedder_rows(world, E, prompts, seed=s)
        if judge_models is not None:
            from suite.judge_diagnostics import judge_rows, sweep_measurements

            sweep = sweep_measurements(world, E, *judge_models, prompts, negative_prompt,
                                       n=generations, seed=s)  # fmt: skip
            names = {r["name"] for r in rows}  # the sweep's no-CFG quality is measured above
            rows += [r for r in judge_rows(sweep) if r["name"] not in names]
        per_seed.append(rows)
    rows = aggregate_seeds(per_seed)
    recall = artifact_metrics(e_path).get("val/recall@1")
    if recall is not None:  # measured on held-out pieces when E was built (no seed to vary)
        rows += aggregate_seeds([[_verdict({"name": "E_recall@1_held_out_pieces",
                                            "value": float(recall), "limit": ">= 0.9"})]])  # fmt: skip
    width = max(len(r["name"]) for r in rows)
    print(f"\n{'measurement':<{width}}  {'mean':>8}  {'95% interval':>17}  {'verdict':<7}  limit")
    for r in rows:
        interval = f"[{r['low']:.3f}, {r['high']:.3f}]" if r["n_seeds"] > 1 else ""
        print(f"{r['name']:<{width}}  {r['value']:>8.3f}  {interval:>17}  {r['verdict']:<7}  {r['limit']}")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        fields = ["name", "value", "low", "high", "n_seeds", "limit", "verdict", "detail"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**r, **{k: f"{r[k]:.4f}" for k in ("value", "low", "high")}} for r in rows)
    tmp.replace(target)
    log.info("diagnose: wrote %s", target)
    return rows
