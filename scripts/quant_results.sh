#!/usr/bin/env bash
# Quantization results on the bundled model (issue 10): RTN, GPTQ and AutoRound int4 of models/tiny-glm5,
# the full recipe (REAP 25 % then AutoRound), and auto-round's own AutoRound export when it is there; then
# every model evaluated as docs/RESULTS.md does.
#
#   WHITTLE=/work/results_q/whittle JOBS=2 nice -n 5 scripts/quant_results.sh          # everything, resumable
#   scripts/quant_results.sh list                                                      # the runs, in order
#   scripts/quant_results.sh one RUN                                                   # one run
#   .venv/bin/python tools/results/quant_results.py                                    # the tables
#
# Resumable: every output is written under a temporary name and renamed when done, and skipped when there.
#
# Environment:
#   WHITTLE   binary (default build/whittle; copy it elsewhere if build/ may be rebuilt meanwhile)
#   MODEL     model folder (default models/tiny-glm5)
#   RESULTS   output folder (default /work/results_q): models/<run>/ (checkpoints with quantize_report.json),
#             <run>/{ppl,arith,loops08,loops0}.json (evals, as scripts/reap_results.sh makes them), logs/
#   THREADS   --threads of every evaluation (default 1); quantization uses QTHREADS (default 2)
#   JOBS      evaluations run in parallel (default 1)
#
# Quantization settings (every calibrated method): MODEL/calibration.txt, --samples 128 --seqlen 256 (the
# model's context) --seed 42 (autoround-g128-seedN: N); AutoRound --iters 200 --batch 8 (lr 1/200), the
# defaults. Group 128 unless the run's name says g-1 (one scale per output row, the harsher setting of the
# AutoRound paper's second table).
set -euo pipefail

cd "$(dirname "$0")/.."
WHITTLE=${WHITTLE:-build/whittle}
MODEL=${MODEL:-models/tiny-glm5}
RESULTS=${RESULTS:-/work/results_q}
THREADS=${THREADS:-1}
QTHREADS=${QTHREADS:-2}
JOBS=${JOBS:-1}
PROMPTS=40 LOOP_TOKENS=224 ARITH_LIMIT=0
export WHITTLE MODEL RESULTS THREADS QTHREADS PROMPTS LOOP_TOKENS ARITH_LIMIT

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# quantize RUN SOURCE METHOD GROUP [SEED]: RESULTS/models/RUN from SOURCE.
quantize() {
  local run=$1 src=$2 method=$3 group=$4 seed=${5:-42} out="$RESULTS/models/$1"
  [[ -s $out/quantize_report.json ]] && return 0
  mkdir -p "$RESULTS/models" "$RESULTS/logs"
  log "quantize $run"
  local t0=$SECONDS
  "$WHITTLE" quantize "$src" "$out" --method "$method" --group-size "$group" --calib "$MODEL/calibration.txt" \
    --samples 128 --seqlen 256 --seed "$seed" --threads "$QTHREADS" --force >"$RESULTS/logs/quantize-$run.log" 2>&1
  echo "$((SECONDS - t0))" >"$out/seconds"
  log "quantized $run in $((SECONDS - t0)) s"
}

prune_reap25() {
  local out="$RESULTS/models/reap25"
  [[ -s $out/reap_report.json ]] && return 0
  mkdir -p "$RESULTS/models" "$RESULTS/logs"
  log "prune reap25"
  "$WHITTLE" prune "$MODEL" "$out" --ratio 0.25 --method reap --calib "$MODEL/calibration.txt" --samples 128 \
    --seqlen 256 --seed 42 --threads "$QTHREADS" --force >"$RESULTS/logs/prune-reap25.log" 2>&1
}

# step / evaluate: the same evaluations as scripts/reap_results.sh (scripts/eval_steps.sh).
# shellcheck source=scripts/eval_steps.sh
source scripts/eval_steps.sh

runs() {
  printf '%s\n' bf16 rtn-g128 gptq-g128 autoround-g128 reap25 reap25-autoround-g128 autoround_ref-g128 \
    rtn-g-1 gptq-g-1 autoround-g-1 autoround-g128-seed1 autoround-g128-seed2
}

run_one() {
  local run=$1 model
  case $run in
    bf16) model=$MODEL ;;
    reap25) prune_reap25; model="$RESULTS/models/reap25" ;;
    reap25-autoround-g128) prune_reap25; quantize "$run" "$RESULTS/models/reap25" autoround 128
      model="$RESULTS/models/$run" ;;
    autoround_ref-g128)  # auto-round 0.16.1's own export (bench/autoround_reference.py), when it was made
      model="$RESULTS/autoround_ref/export"
      [[ -s $model/config.json ]] || { log "no $model: skipped"; return 0; } ;;
    autoround-g128-seed*)  # the same with another --seed (calibration draw and mini-batch order)
      quantize "$run" "$MODEL" autoround 128 "${run##*-seed}"; model="$RESULTS/models/$run" ;;
    *) local method=${run%%-*} group=${run#*-g}
      quantize "$run" "$MODEL" "$method" "$group"; model="$RESULTS/models/$run" ;;
  esac
  evaluate "$run" "$model"
}
export -f log quantize prune_reap25 step evaluate run_one

case "${1:-all}" in
  list) runs ;;
  one) shift; run_one "$@" ;;
  all)
    mkdir -p "$RESULTS/logs"
    # Quantizations first, one at a time (each uses QTHREADS cores), then the evaluations JOBS at a time.
    for r in $(runs); do
      case $r in
        bf16|autoround_ref-g128) ;;
        reap25) prune_reap25 ;;
        reap25-*) prune_reap25; quantize "$r" "$RESULTS/models/reap25" autoround 128 ;;
        autoround-g128-seed*) quantize "$r" "$MODEL" autoround 128 "${r##*-seed}" ;;
        *) quantize "$r" "$MODEL" "${r%%-*}" "${r#*-g}" ;;
      esac
    done
    runs | xargs -P "$JOBS" -I{} bash -c 'run_one "$1" || log "FAILED $1"' _ {}
    ;;
  *) echo "usage: $0 [all|list|one RUN]" >&2; exit 2 ;;
esac
