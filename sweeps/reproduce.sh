#!/usr/bin/env bash
# Run: bash sweeps/reproduce.sh [STEP ...]
# The whole protocol of docs/REPRODUCTION.md (issue 10) on the tiny default, with the
# suite's own commands, into the MLflow experiment `repro` (EXPERIMENT=... to change).
# Steps (default: all, in this order): students sbs gamma lerp lerp_base lerp_other
# uniform temperature exports n_study n_exports report listen. Two jobs at a time, one torch thread each
# (JOBS=... to change); each step prints its wall time. Needs the committed artifacts (or
# builds them on first use) and ~4 h 20 min on 2 CPU cores (~2 h with SEEDS=0: one seed per student).
# Resumable across machines: a finished step's runs are exported to
# $STEPS_DIR/<step>.runs.csv (+ .history.csv; suite/report_store.py; commit them), a step
# whose CSV exists is skipped (FORCE=1 reruns it), and the report step reads the CSVs, not
# the MLflow store, so a protocol can be assembled from several machines' steps. The
# students' exports (models/beta<b>-seed<s>.*, 3 MB each) are kept beside the CSVs in
# $STEPS_DIR/models (commit them too): the later steps merge and evaluate them, and a
# machine that lacks them gets them back from there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EXP=${EXPERIMENT:-repro}
JOBS=${JOBS:-2}
PAR="hydra/launcher=joblib hydra.launcher.n_jobs=$JOBS torch_threads=1 experiment=$EXP"
STEPS=${*:-students sbs gamma lerp lerp_base lerp_other uniform temperature exports n_study n_exports report listen}
STEPS_DIR=${STEPS_DIR:-docs/repro/steps}
SEEDS=${SEEDS:-0,1,2}  # the students' training seeds (the merges and the side-by-side use seed 0)
# The grids of docs/REPRODUCTION.md (about 4 h 20 min on 2 cores with 3 seeds); FULL=1 runs the sweep files' own
# grids instead (21 lambdas, gamma 1..7 x 2, 6 temperatures x 2: about 3 h more).
if [[ ${FULL:-0} == 1 ]]; then
  LAMBDAS=0.0,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95,1.0
  LAMBDAS_COARSE=$LAMBDAS; GAMMA_NEG=1.0,2.0,3.0,4.0,5.0,6.0,7.0; GAMMA_UNC=2.0,3.0,4.0,5.0,6.0,7.0
  TEMPS=0.6,0.8,0.99,1.2,1.4,1.6
else
  LAMBDAS=0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0
  LAMBDAS_COARSE=0.0,0.25,0.5,0.75,1.0; GAMMA_NEG=1.0,2.0,3.0,5.0,7.0; GAMMA_UNC=2.0,3.0,5.0,7.0
  TEMPS=0.8,0.99,1.2
fi

timed() {  # timed NAME CMD...: run, print the wall time
  local name=$1 t0=$SECONDS; shift
  echo "== $name: $*"
  "$@"
  echo "== $name: $((SECONDS - t0)) s"
}

# The runs each step makes (what its export keeps): a sweep tag, or a tag KEY=VALUE.
declare -A FILTER=([students]="--sweep beta" [sbs]="--sweep sbs" [gamma]="--sweep gamma"
  [lerp]="--sweep lambda" [lerp_base]="--sweep lerp_base" [lerp_other]="--sweep lambda"
  [uniform]="--sweep uniform" [temperature]="--sweep temperature"
  [exports]="--sweep exports" [n_study]="--sweep n_study" [n_exports]="--sweep n_exports")

keep_models() {  # after the students and n_study steps: their exports go beside the CSVs
  mkdir -p "$STEPS_DIR/models"
  local b s f
  for b in 0 5 10 15; do
    for s in ${SEEDS//,/ }; do
      for f in beta$b-seed$s.safetensors beta$b-seed$s.json; do
        if [[ -f models/$f ]]; then cp -p "models/$f" "$STEPS_DIR/models/"; fi
      done
    done
  done
  for f in models/beta15-N{2,4,8}-seed0.{safetensors,json}; do  # the N study's (seed 0)
    if [[ -f $f ]]; then cp -p "$f" "$STEPS_DIR/models/"; fi
  done
}
restore_models() {  # before any step: a machine that lacks the students' exports gets them
  local f
  for f in "$STEPS_DIR"/models/*; do
    if [[ -f $f && $f -nt models/${f##*/} ]]; then mkdir -p models; cp -p "$f" models/; fi
  done
}

foreign_exports() {  # the students' jobs refuse to overwrite another experiment's exports
  # (suite/preflight.py) and a sweep reports that only when it ends: check before the hours
  $PY - "$EXP" "$SEEDS" <<'PYEOF'
import json, pathlib, sys
experiment, seeds = sys.argv[1], sys.argv[2].split(",")
for beta in (0, 5, 10, 15):
    for seed in seeds:
        record = pathlib.Path(f"models/beta{beta}-seed{seed}.json")
        if record.is_file():
            owner = json.loads(record.read_text()).get("mlflow_experiment")
            if owner not in (None, experiment):
                print(f"  {record} (and its .safetensors): written by MLflow experiment {owner!r}")
PYEOF
}

restore_models
for step in $STEPS; do
  if [[ $step != report && $step != listen && -f $STEPS_DIR/$step.runs.csv && ${FORCE:-0} != 1 ]]; then
    echo "== $step: done ($STEPS_DIR/$step.runs.csv exists; FORCE=1 reruns it)"
    continue
  fi
  since_ms=$(($(date +%s) * 1000))  # the export keeps this step's runs, not an earlier try's
  case $step in
    students)  # figures 1-2: beta 0, 5, 10, 15 at each of $SEEDS (two at a time; each
      # evaluates at step 0 too; 12 runs of 20-32 min at one thread: ~2 h 27 min on 2 cores)
      foreign=$(foreign_exports)
      if [[ -n $foreign ]]; then
        echo "reproduce.sh: the students would overwrite exports of another experiment, which" \
          "the jobs refuse; move them out of models/ first:" >&2
        echo "$foreign" >&2
        exit 2
      fi
      timed students $PY -m suite fit --config sweeps/beta.yaml seed=$SEEDS $PAR ;;
    sbs)  # figure 5, tables 2-3: the ten side-by-side pairs
      timed sbs $PY -m suite test --config sweeps/sbs.yaml $PAR ;;
    gamma)  # appendix B, figure 6: CFG on the base model, negative / unconditional prompting
      # (gamma 1 is the same model for both: no negative rows are computed at gamma 1)
      timed gamma-negative $PY -m suite test --config sweeps/gamma.yaml gamma=$GAMMA_NEG \
        prompting=negative $PAR
      timed gamma-unconditional $PY -m suite test --config sweeps/gamma.yaml gamma=$GAMMA_UNC \
        prompting=unconditional $PAR ;;
    lerp)  # figures 3-4: LERP(0, 15)
      timed lerp $PY -m suite test --config sweeps/lambda.yaml lambda=$LAMBDAS $PAR ;;
    lerp_base)  # figure 3: LERP(0, base)
      timed lerp_base $PY -m suite test --config sweeps/lerp_base.yaml lambda=$LAMBDAS_COARSE $PAR ;;
    lerp_other)  # figure 3: LERP(0, 5) and LERP(0, 10)
      timed lerp_other $PY -m suite test --config sweeps/lambda.yaml beta_d=5,10 \
        lambda=$LAMBDAS_COARSE $PAR ;;
    uniform)  # figure 3: LERP(0, 5, 10, 15) uniform
      timed uniform $PY -m suite test --config sweeps/uniform.yaml $PAR ;;
    temperature)  # figure 3: temperature baselines on base and beta 0
      timed temperature $PY -m suite test --config sweeps/temperature.yaml temperature=$TEMPS $PAR ;;
    exports)  # every student's export at every training seed on the test prompts: the
      # students' numbers (mean and interval over seeds), like the fronts' points
      timed exports $PY -m suite test --config sweeps/exports.yaml student_seed=$SEEDS $PAR ;;
    n_study)  # figure 10: beta 15 with N = 2, 4, 8 at 64 generations per step
      timed n_study $PY -m suite fit --config sweeps/n_study.yaml $PAR ;;
    n_exports)  # figure 10 on the test prompts: the N study's exports through the evaluator
      timed n_exports $PY -m suite test --config sweeps/n_exports.yaml $PAR ;;
    report)  # every figure and table from the exported steps, learned and oracle quality
      timed report $PY -m suite report --runs-dir $STEPS_DIR --out docs/repro \
        --lambda-front "LERP(0,15)"
      timed report-oracle $PY -m suite report --runs-dir $STEPS_DIR --out docs/repro/oracle \
        --quality-metric eval/oracle_quality --lambda-front "LERP(0,15)" ;;
    listen)  # docs/repro/listen.html: the clips live in THIS machine's MLflow store
      tmp=$(mktemp -d)
      if timed listen $PY -m suite report --experiment $EXP --out "$tmp/r" --no-log --listen-audio mp3; then
        rm -rf docs/repro/listen && mv "$tmp/r/listen.html" "$tmp/r/listen" docs/repro/
      else
        echo "== listen: skipped (no finished runs of $EXP in this machine's MLflow store)"
      fi
      rm -rf "$tmp" ;;
    *) echo "reproduce.sh: unknown step '$step'" >&2; exit 2 ;;
  esac
  if [[ $step != report && $step != listen ]]; then  # the step finished: keep its runs where git can hold them
    $PY -m suite.report_store --experiment $EXP --step $step --out $STEPS_DIR ${FILTER[$step]} \
      --since-ms $since_ms
    if [[ $step == students || $step == n_study ]]; then keep_models; fi
  fi
done
