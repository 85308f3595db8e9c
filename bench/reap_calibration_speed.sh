#!/usr/bin/env bash
# REAP calibration speed, side by side in one run, on the same model, the same token ids and the same threads:
#   1. whittle prune (default: unpruned statistics) and whittle prune --sequential (prune as you go)
#   2. llm-compressor 0.14 REAPPruningModifier, pipeline basic and sequential (tools/oracle/reap_llmcompressor.py,
#      which also checks their scores and kept sets against whittle's reports)
#   3. a plain PyTorch REAP observer (bench/reap_torch_reference.py), routed experts only and --all-experts
#
# Usage (repository root):
#   bench/reap_calibration_speed.sh [OUTDIR]
# Environment (defaults in brackets):
#   WHITTLE [build/whittle]  MODEL [models/tiny-glm5]  CALIB [MODEL/calibration.txt]  SAMPLES [64]  SEQLEN [256]
#   SEED [42]  RATIO [0.25]  THREADS [2]  BATCH [8] (whittle and the torch observer; llm-compressor runs batch 1,
#   as its REAP examples do)  WHITTLE_REPS [3]  PY [.venv/bin/python]
#   SKIP: names to leave out, any of w_b1 w_seq lc lc_seq torch torch_all
#   TIES_CHECK [0]: 1 = afterwards (untimed) rerun the llm-compressor comparison with the DSA indexer's top-k ties
#                   broken by the lower key position, as whittle does (tools/oracle/reap_llmcompressor.py
#                   --indexer-ties lowest-index), into OUTDIR/llmc_ties
#
# tokens/s = SAMPLES x SEQLEN / calibration seconds. What the seconds include:
#   whittle:        wall time of `whittle prune` minus the wall time of `whittle prune --method random` (same
#                   command without calibration: load, surgery, writing the checkpoint), best of WHITTLE_REPS;
#                   i.e. tokenization + packing + the layer-major calibration forward + statistics.
#   llm-compressor: from the pipeline's calibration_start to calibration_end callback (the batches' forwards,
#                   for sequential also the second, propagating pass and the per-layer pruning); model load,
#                   linearization of the experts, dataset preparation and, for sequential, graph tracing excluded.
#   torch:          the forward loop over the batches with the observer hooks (model load excluded).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

OUT=${1:-/tmp/reap_calibration_speed}
WHITTLE=${WHITTLE:-build/whittle}
MODEL=${MODEL:-models/tiny-glm5}
CALIB=${CALIB:-$MODEL/calibration.txt}
SAMPLES=${SAMPLES:-64}
SEQLEN=${SEQLEN:-256}
SEED=${SEED:-42}
RATIO=${RATIO:-0.25}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
WHITTLE_REPS=${WHITTLE_REPS:-3}
PY=${PY:-.venv/bin/python}
SKIP=${SKIP:-}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=false

mkdir -p "$OUT"
TOKENS=$((SAMPLES * SEQLEN))
skip() { [[ " $SKIP " == *" $1 "* ]]; }
now() { date +%s.%N; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
ROWS=()
row() { ROWS+=("$1|$2|$3|$4"); }  # name | seconds | what | load before -> after

echo "== machine"
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src CMakeLists.txt || echo ' (src modified)')"
  echo "whittle: $WHITTLE ($(sha256sum "$WHITTLE" | cut -c1-12))"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), nproc $(nproc)"
  echo "threads: $THREADS (whittle --threads, torch.set_num_threads, OMP/OPENBLAS_NUM_THREADS)"
  echo "calibration sha256: $(sha256sum "$CALIB" | cut -c1-16)"
  echo "model: $MODEL; calibration: $CALIB, $SAMPLES samples x $SEQLEN tokens = $TOKENS tokens, seed $SEED; ratio $RATIO"
  echo "versions: $($PY -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ["torch","transformers","llmcompressor","compressed-tensors"]))')"
  echo "load average at start: $(load)"
} | tee "$OUT/machine.txt"

W=("$WHITTLE" prune "$MODEL")
WARGS=(--ratio "$RATIO" --calib "$CALIB" --samples "$SAMPLES" --seqlen "$SEQLEN" --seed "$SEED"
       --threads "$THREADS" --force)

echo "== calibration ids (whittle --save-calibration; untimed warm-up)"
"${W[@]}" "$OUT/w_ids" "${WARGS[@]}" --batch "$BATCH" --save-calibration "$OUT/calib_ids.npy" 2>"$OUT/w_ids.log"
$PY -c "import numpy as np, sys; a = np.load(sys.argv[1]); print('ids', a.dtype, a.shape)" "$OUT/calib_ids.npy"

best_wall() {  # best_wall OUTNAME args... -> prints the smallest wall seconds of WHITTLE_REPS runs
  local name=$1 best="" t0 t1 s
  shift
  for _ in $(seq "$WHITTLE_REPS"); do
    t0=$(now)
    "${W[@]}" "$OUT/$name" "$@" 2>"$OUT/$name.log" || { cat "$OUT/$name.log" >&2; exit 1; }
    t1=$(now)
    s=$(echo "$t1 - $t0" | bc -l)
    if [[ -z $best ]] || (($(echo "$s < $best" | bc -l))); then best=$s; fi
  done
  echo "$best"
}

echo "== whittle"
l0=$(load)
base=$(best_wall w_random "${WARGS[@]}" --batch "$BATCH" --method random)
def=$(best_wall w_default "${WARGS[@]}" --batch "$BATCH")
row "whittle prune (default, --batch $BATCH)" "$(echo "$def - $base" | bc -l)" \
  "wall $(printf %.2f "$def") s - $(printf %.2f "$base") s without calibration (--method random); best of $WHITTLE_REPS" "$l0 -> $(load)"
if ! skip w_b1; then
  l0=$(load)
  b1=$(best_wall w_batch1 "${WARGS[@]}" --batch 1)
  row "whittle prune (default, --batch 1)" "$(echo "$b1 - $base" | bc -l)" \
    "wall $(printf %.2f "$b1") s - $(printf %.2f "$base") s; best of $WHITTLE_REPS" "$l0 -> $(load)"
fi
if ! skip w_seq; then
  l0=$(load)
  seq_=$(best_wall w_sequential "${WARGS[@]}" --batch "$BATCH" --sequential)
  row "whittle prune --sequential (--batch $BATCH)" "$(echo "$seq_ - $base" | bc -l)" \
    "wall $(printf %.2f "$seq_") s - $(printf %.2f "$base") s; best of $WHITTLE_REPS" "$l0 -> $(load)"
fi

pipes=basic
skip lc_seq || pipes=basic,sequential
if ! skip lc; then
  echo "== llm-compressor ($pipes) and the comparison with whittle"
  l0=$(load)
  wseq=()
  [[ -f $OUT/w_sequential/reap_report.json ]] && wseq=(--whittle-sequential "$OUT/w_sequential/reap_report.json")
  $PY tools/oracle/reap_llmcompressor.py --model "$MODEL" --ids "$OUT/calib_ids.npy" --ratio "$RATIO" \
    --threads "$THREADS" --pipelines "$pipes" --out "$OUT/llmc" \
    --whittle "$OUT/w_default/reap_report.json" "${wseq[@]}" | tee "$OUT/llmc.txt"
  l1=$(load)
  for p in ${pipes//,/ }; do
    s=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['seconds']['calibration'])" \
      "$OUT/llmc/llmcompressor_reap.json" "$p")
    o=$($PY -c "import json,sys; r=json.load(open(sys.argv[1]))[sys.argv[2]]['seconds']; print(f\"oneshot {r['oneshot_total']:.1f} s, load {r['load_model']:.1f} s, process {r['process_wall']:.1f} s\")" \
      "$OUT/llmc/llmcompressor_reap.json" "$p")
    row "llm-compressor $p (batch 1)" "$s" "calibration_start..end callbacks; $o" "$l0 -> $l1"
  done
fi

for mode in torch torch_all; do
  skip "$mode" && continue
  extra=()
  name="torch REAP observer, routed experts (batch $BATCH)"
  if [[ $mode == torch_all ]]; then
    extra=(--all-experts)
    name="torch REAP observer, all experts on all tokens (batch $BATCH)"
  fi
  echo "== $name"
  l0=$(load)
  $PY bench/reap_torch_reference.py --model "$MODEL" --ids "$OUT/calib_ids.npy" --batch "$BATCH" \
    --threads "$THREADS" --ratio "$RATIO" --out "$OUT/$mode.json" "${extra[@]}"
  s=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds']['calibration'])" "$OUT/$mode.json")
  row "$name" "$s" "forward loop with hooks" "$l0 -> $(load)"
done

if [[ -f $OUT/torch.json ]]; then
  echo "== torch observer vs whittle default and llm-compressor basic (same statistics, independent code)"
  (cd tools/oracle && ../../$PY -c "
import json, sys, reap_llmcompressor as R
t = R.whittle_layers(json.load(open(sys.argv[1])))
w = R.whittle_layers(json.load(open(sys.argv[2])))
print(R.fmt_cmp(R.compare_scores(t, w, 'torch', 'whittle_default')))
try:
    lc = {L['layer']: L for L in json.load(open(sys.argv[3]))['basic']['layers']}
    print(); print(R.fmt_cmp(R.compare_scores(t, lc, 'torch', 'llmc_basic')))
except FileNotFoundError:
    pass
" "$OUT/torch.json" "$OUT/w_default/reap_report.json" "$OUT/llmc/llmcompressor_reap.json") | tee "$OUT/torch_vs.txt"
fi

if [[ ${TIES_CHECK:-0} == 1 ]] && ! skip lc; then
  echo "== (untimed) llm-compressor with DSA indexer ties broken by the lower key position, vs whittle"
  $PY tools/oracle/reap_llmcompressor.py --model "$MODEL" --ids "$OUT/calib_ids.npy" --ratio "$RATIO" \
    --threads "$THREADS" --pipelines "$pipes" --out "$OUT/llmc_ties" --indexer-ties lowest-index \
    --whittle "$OUT/w_default/reap_report.json" "${wseq[@]}" | tee "$OUT/llmc_ties.txt"
fi

echo "== REAP calibration speed: $MODEL, $SAMPLES x $SEQLEN = $TOKENS tokens, $THREADS threads, fp32 on CPU"
ref=""
{
  printf '| contender | calibration s | tokens/s | vs whittle default | what the seconds are | load avg before -> after |\n'
  printf '|---|---|---|---|---|---|\n'
  for r in "${ROWS[@]}"; do
    IFS='|' read -r name s what ld <<<"$r"
    tps=$(echo "$TOKENS / $s" | bc -l)
    [[ -z $ref ]] && ref=$tps
    printf '| %s | %.2f | %.0f | %.2fx | %s | %s |\n' "$name" "$s" "$tps" "$(echo "$tps / $ref" | bc -l)" "$what" "$ld"
  done
} | tee "$OUT/speed_table.md"
echo "load average at end: $(load)" | tee -a "$OUT/machine.txt"
