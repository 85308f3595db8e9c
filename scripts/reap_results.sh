#!/usr/bin/env bash
# REAP results on the bundled model (issue 9): prune models/tiny-glm5 at several ratios with the four
# expert criteria and two calibration sets, then evaluate every pruned model and the unpruned baseline.
#
#   WHITTLE=/tmp/whittle-res JOBS=2 nice -n 5 scripts/reap_results.sh            # everything, resumable
#   scripts/reap_results.sh list                                                 # the runs, in order
#   QLOOPS=1 scripts/reap_results.sh one RUN CALIB METHOD RATIO                  # one run (as `list` prints it)
#
# As run for the results in docs/RESULTS.md (2026-12-05; v1 = the statistics of the calibration file that
# preceded commit e642e9b, reused from RESULTS/stats/v1.json):
#   WHITTLE=/tmp/whittle-res JOBS=2 CALIBS_EXTRA="prose:reap v1:reap v1:frequency v1:ean prose:frequency \
#     prose:ean" nice -n 5 scripts/reap_results.sh
#   then QLOOPS=1 ... one RUN ... for the baseline and every training-mix run
#   .venv/bin/python tools/results/reap_results.py                               # tables + docs/reap_pruning.png
#
# Resumable: every step writes its output under a temporary name and renames it when done, and is
# skipped when the output is already there. Runs are done in priority order (training-distribution
# calibration x 4 criteria x 3 ratios and the baseline first; then prose-only REAP, frequency, EAN).
#
# Environment:
#   WHITTLE   binary (default build/whittle; copy it elsewhere if build/ may be rebuilt meanwhile)
#   MODEL     model folder (default models/tiny-glm5)
#   RESULTS   output folder (default /work/results): stats/<calib>.json (the calibration statistics),
#             pruned/<calib>-<method>-<ratio>/ (the checkpoints), <run>/{ppl,arith,loops08,loops0}.json (evals),
#             logs/
#   THREADS   --threads of every whittle call (default 1: results that depend on thread count, such as
#             sampled loop probes, stay reproducible; run JOBS of them side by side instead)
#   JOBS      evaluations run in parallel (default 1)
#   RATIOS    default "0.25 0.40 0.50"; CALIBS (calibrated up front) default "train prose"
#   CALIBS_EXTRA  runs after the training-distribution ones, in order: default
#             "prose:reap prose:frequency prose:ean" (calibration:criterion, each at every ratio)
#   STAGES    default "all"; "calib" only calibrates and cuts
#
# Settings (identical for every model):
#   calibration  --samples 128 --seqlen 256 --seed 42 (REAP statistics; frequency and EAN are cut from the
#                same statistics with --stats; random uses --seed 42 and no calibration)
#   ppl          held-out MODEL/eval/{arith,chat,code,prose}.txt, --ctx 256 --stride 255
#                --doc-start '<|endoftext|>' (the files are in stream form; stride 255 is the cheapest
#                allowed: ctx-1)
#   arith        MODEL/eval/arith_{one,two}_step.jsonl, all 400 problems (ARITH_LIMIT per file if set),
#                greedy, max 256 tokens; no --doc-start, as docs/RESULTS.md
#   loops08      the four .txt files, --prompts 40 --max-tokens 224 (32-token prompt + 224 = the trained
#                256 positions) -t 0.8 --seed 0, top-p 1; no --doc-start
#   loops0       the same, greedy (-t 0)
#   loopsq08     with QLOOPS=1: loops at T 0.8 on 40 arithmetic questions (jsonl prompts), --max-tokens 224
set -euo pipefail

cd "$(dirname "$0")/.."
WHITTLE=${WHITTLE:-build/whittle}
MODEL=${MODEL:-models/tiny-glm5}
RESULTS=${RESULTS:-/work/results}
THREADS=${THREADS:-1}
JOBS=${JOBS:-1}
RATIOS=${RATIOS:-"0.25 0.40 0.50"}
CALIBS=${CALIBS:-"train prose"}
CALIBS_EXTRA=${CALIBS_EXTRA:-"prose:reap prose:frequency prose:ean"}
STAGES=${STAGES:-all}
PROMPTS=${PROMPTS:-40}
LOOP_TOKENS=${LOOP_TOKENS:-224}
ARITH_LIMIT=${ARITH_LIMIT:-0}
export WHITTLE MODEL RESULTS THREADS PROMPTS LOOP_TOKENS ARITH_LIMIT

# Calibration sets. The file is frozen into RESULTS/calib/<name>.txt (with its sha256) when first used,
# so that the statistics stay tied to the bytes they came from even if the source is regenerated.
#   train  MODEL/calibration.txt, the default: training split drawn with the training mix (commit e642e9b)
#   prose  data/calibration_prose.txt: make_calibration.py --domains prose --out data/calibration_prose.txt
#   v1     the calibration.txt that preceded e642e9b (sha256 7789a953..., 334 documents, domains in
#          proportion to their training-split tokens); no longer in the tree: only its statistics,
#          RESULTS/stats/v1.json, are reused
calib_file() {
  case "$1" in
    train) echo "$MODEL/calibration.txt" ;;
    prose) echo "data/calibration_prose.txt" ;;
    v1) echo "$RESULTS/calib/v1.txt" ;;
    *) echo "unknown calibration $1" >&2; return 1 ;;
  esac
}

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# Calibrate once per calibration set: REAP at 0.25 writes the statistics of every expert.
calibrate() {
  local calib=$1 stats="$RESULTS/stats/$1.json" out="$RESULTS/pruned/$1-reap-0.25" file
  [[ -s $stats ]] && return 0
  file=$(calib_file "$calib")
  [[ -s $file ]] || { log "missing calibration file $file"; return 1; }
  mkdir -p "$RESULTS/stats" "$RESULTS/logs" "$RESULTS/calib"
  if [[ $file != "$RESULTS/calib/$calib.txt" ]]; then
    cp "$file" "$RESULTS/calib/$calib.txt"
    sha256sum "$file" >"$RESULTS/calib/$calib.sha256"
    file="$RESULTS/calib/$calib.txt"
  fi
  log "calibrate $calib ($file)"
  local t0=$SECONDS
  "$WHITTLE" prune "$MODEL" "$out" --ratio 0.25 --method reap --calib "$file" --samples 128 --seqlen 256 \
    --seed 42 --threads "$THREADS" --force >"$RESULTS/logs/calib-$calib.log" 2>&1
  cp "$out/reap_report.json" "$stats.tmp" && mv "$stats.tmp" "$stats"
  echo "$((SECONDS - t0))" >"$RESULTS/stats/$calib.seconds"
  log "calibrated $calib in $((SECONDS - t0)) s"
}

# Cut one pruned model from the saved statistics: cut CALIB METHOD RATIO RUN.
cut() {
  local calib=$1 method=$2 ratio=$3 out="$RESULTS/pruned/$4"
  [[ -s $out/config.json && -s $out/reap_report.json ]] && return 0
  log "cut $4 (statistics: $calib)"
  "$WHITTLE" prune "$MODEL" "$out" --ratio "$ratio" --method "$method" --stats "$RESULTS/stats/$calib.json" \
    --seed 42 --threads "$THREADS" --force >"$RESULTS/logs/cut-$4.log" 2>&1
}

# random: no calibration at all (prune refuses --stats with it), experts drawn with --seed 42.
prune_random() {
  local ratio=$1 out="$RESULTS/pruned/$2"
  [[ -s $out/config.json && -s $out/reap_report.json ]] && return 0
  log "prune $2"
  "$WHITTLE" prune "$MODEL" "$out" --ratio "$ratio" --method random --seed 42 --threads "$THREADS" --force \
    >"$RESULTS/logs/prune-$2.log" 2>&1
}

# step / evaluate: the evaluations (scripts/eval_steps.sh).
# shellcheck source=scripts/eval_steps.sh
source scripts/eval_steps.sh

# The runs in priority order: "<run> <calib> <method> <ratio>" (baseline: calib/method/ratio "-").
runs() {
  echo "baseline - - -"
  local r m
  for r in $RATIOS; do for m in reap frequency ean random; do
    if [[ $m == random ]]; then echo "none-random-$r none random $r"; else echo "train-$m-$r train $m $r"; fi
  done; done
  # then the other calibration sets, by priority (CALIBS_EXTRA: "calib:method" pairs)
  local cm
  for cm in $CALIBS_EXTRA; do for r in $RATIOS; do echo "${cm%%:*}-${cm##*:}-$r ${cm%%:*} ${cm##*:} $r"; done; done
}

run_one() {
  local run=$1 calib=$2 method=$3 ratio=$4 model
  if [[ $run == baseline ]]; then
    model=$MODEL
  else
    model="$RESULTS/pruned/$run"
    if [[ $method == random ]]; then
      prune_random "$ratio" "$run"
    else
      calibrate "$calib"
      # (REAP at 0.25 is the calibration run's own output)
      [[ $method == reap && $ratio == 0.25 ]] || cut "$calib" "$method" "$ratio" "$run"
    fi
  fi
  [[ $STAGES == calib ]] && return 0
  evaluate "$run" "$model"
}
export -f calib_file log calibrate cut prune_random step evaluate run_one

case "${1:-all}" in
  list) runs ;;
  one) shift; run_one "$@" ;;
  all)
    mkdir -p "$RESULTS/logs"
    # calibrations first (sequentially: they are the only steps that share an output), then the runs
    for c in $CALIBS; do calibrate "$c" || log "calibration $c failed; its runs are skipped"; done
    # shellcheck disable=SC2016  # "$@" and $1 are the inner bash's
    runs | while read -r run calib method ratio; do
      if [[ $calib != - && $calib != none && ! -s $RESULTS/stats/$calib.json ]]; then
        log "no statistics for $calib: $run skipped"; continue
      fi
      echo "$run $calib $method $ratio"
    done | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@" || log "FAILED $1"' _
    ;;
  *) echo "usage: $0 [all|list|one RUN CALIB METHOD RATIO]" >&2; exit 2 ;;
esac
