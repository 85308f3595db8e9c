# The evaluations of docs/RESULTS.md, shared by scripts/reap_results.sh and scripts/quant_results.sh (sourced).
# Needs WHITTLE, MODEL, THREADS and log(); PROMPTS (default 40), LOOP_TOKENS (224), ARITH_LIMIT (0: all) and
# QLOOPS (0) as scripts/reap_results.sh describes them.

# Evaluate one model: four invocations, each checkpointed as its own JSON (data passed explicitly: a
# pruned checkpoint has no eval/ folder; arith and loops apart, since loops would also read .jsonl).
step() {  # step NAME MODEL ARGS...: whittle eval MODEL ARGS... > RESULTS/RUN/NAME.json unless done
  local name=$1 model=$2 dir=$3; shift 3
  [[ -s $dir/$name.json ]] && return 0
  local t0=$SECONDS
  if "$WHITTLE" eval "$model" "$@" --threads "$THREADS" --json -q >"$dir/$name.json.tmp" 2>"$dir/$name.err"; then
    mv "$dir/$name.json.tmp" "$dir/$name.json"
    echo "$((SECONDS - t0))" >"$dir/$name.seconds"
  else
    log "FAILED eval $name of $model: $(tail -1 "$dir/$name.err")"; return 1
  fi
}

evaluate() {
  local run=$1 model=$2 dir="$RESULTS/$1" ev="$MODEL/eval"
  mkdir -p "$dir"
  local -a txt=("$ev/arith.txt" "$ev/chat.txt" "$ev/code.txt" "$ev/prose.txt")
  local -a loops=(--task loops --data "${txt[@]}" --prompts "$PROMPTS" --max-tokens "$LOOP_TOKENS" --seed 0)
  step ppl "$model" "$dir" --task ppl --data "${txt[@]}" --ctx 256 --stride 255 --doc-start '<|endoftext|>'
  step arith "$model" "$dir" --task arith --data "$ev/arith_one_step.jsonl" "$ev/arith_two_step.jsonl" \
    --limit "$ARITH_LIMIT" --max-tokens 256
  step loops08 "$model" "$dir" "${loops[@]}" -t 0.8
  step loops0 "$model" "$dir" "${loops[@]}" -t 0
  # QLOOPS=1: also loop probes at T 0.8 whose prompts are the arithmetic questions (40 of the 400)
  if [[ ${QLOOPS:-0} == 1 ]]; then
    step loopsq08 "$model" "$dir" --task loops --data "$ev/arith_one_step.jsonl" "$ev/arith_two_step.jsonl" \
      --prompts "$PROMPTS" --max-tokens "$LOOP_TOKENS" --seed 0 -t 0.8
  fi
  log "done $run"
}

