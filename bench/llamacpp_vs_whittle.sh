#!/usr/bin/env bash
# whittle against llama.cpp on the same GLM-5-shaped weights, same threads, one run.
#
# llama.cpp is built from the source the PyPI package llama-cpp-python ships (its vendor/llama.cpp),
# converted with its own convert_hf_to_gguf.py (through bench/llamacpp_convert.py, which only names
# the tokenizer's pre-tokenizer) and quantized with its own llama-quantize. Both engines get the
# synthetic model of tools/synth/make_glm5_shaped.py with the same shapes and layer count: whittle
# the GPTQ int4 checkpoint (--gptq: what the recipe ships), llama.cpp Q4_0 and Q4_K_M made from the
# bf16 checkpoint (via q8_0, to save disk), and Q4_K_M with the modules the recipe keeps in 16 bit
# in bf16 (the same bytes per token as whittle's). Prints llama-bench's pp/tg and `whittle bench`.
#
#   bench/llamacpp_vs_whittle.sh   # WORK=/work/synth LAYERS=6 EXPERTS=32 THREADS=2 ROUNDS=1
# Needs: python3 -m venv .venv with torch, transformers, numpy, safetensors, sentencepiece
# (the converter's imports); cmake, ninja; ~50 GB of disk under WORK. Long: ~30 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/work/synth}
LAYERS=${LAYERS:-6}
EXPERTS=${EXPERTS:-32}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
ROUNDS=${ROUNDS:-1}
PY=${PY:-.venv/bin/python}
LLAMA_SRC=${LLAMA_SRC:-$WORK/llama-src}
LLAMA_BUILD=${LLAMA_BUILD:-$WORK/llama-build}
tag="L${LAYERS}-E${EXPERTS}"

if [[ ! -x $LLAMA_BUILD/bin/llama-bench ]]; then
  mkdir -p "$LLAMA_SRC"
  if [[ ! -d $LLAMA_SRC/vendor/llama.cpp ]]; then
    "$PY" -m pip download llama-cpp-python --no-binary :all: --no-deps -d "$LLAMA_SRC"
    tar xzf "$LLAMA_SRC"/llama_cpp_python-*.tar.gz -C "$LLAMA_SRC" --strip-components=1
  fi
  cmake -S "$LLAMA_SRC/vendor/llama.cpp" -B "$LLAMA_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF
  ninja -C "$LLAMA_BUILD" llama-bench llama-quantize
fi
LLAMA_CPP=${LLAMA_CPP:-$LLAMA_SRC/vendor/llama.cpp}
"$PY" -m pip show gguf > /dev/null 2>&1 || "$PY" -m pip install -q -e "$LLAMA_CPP/gguf-py"

gptq=$WORK/glm5-q4-$tag
bf16=$WORK/glm5-bf16-$tag
q8=$WORK/glm5-$tag-q8_0.gguf
synth=(python3 tools/synth/make_glm5_shaped.py --layers "$LAYERS" --dense-layers 1 --experts "$EXPERTS")
[[ -f $gptq/config.json ]] || "${synth[@]}" --gptq "$gptq"
if [[ ! -f $q8 ]]; then
  [[ -f $bf16/config.json ]] || "${synth[@]}" "$bf16"
  "$PY" bench/llamacpp_convert.py "$LLAMA_CPP" "$bf16" --outtype q8_0 --outfile "$q8"
  rm -rf "$bf16"
fi
QUANTS=(Q4_0 Q4_K_M Q4_K_M-recipe16)
for q in Q4_0 Q4_K_M; do
  out=$WORK/glm5-$tag-$q.gguf
  [[ -f $out ]] || "$LLAMA_BUILD/bin/llama-quantize" --allow-requantize "$q8" "$out" "$q" "$THREADS"
done
# The same bytes as the recipe reads: Q4_K_M with the modules the recipe keeps in 16 bit (lm_head,
# the dense MLP, the indexer's weights_proj) in bf16, as whittle's checkpoint has them.
recipe16=$WORK/glm5-$tag-Q4_K_M-recipe16.gguf
[[ -f $recipe16 ]] || "$LLAMA_BUILD/bin/llama-quantize" --allow-requantize \
  --output-tensor-type bf16 --tensor-type 'blk\.0\.ffn_(gate|up|down)=bf16' \
  --tensor-type 'indexer\.proj=bf16' "$q8" "$recipe16" Q4_K_M "$THREADS"

[[ -x build/whittle ]] || make build
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads, prompt $PROMPT, gen $GEN, $ROUNDS round(s)"
# Decode at the same depth on both sides: `whittle bench` decodes after its prompt, so llama-bench's
# tg runs after as many cached tokens (-d; its tg otherwise starts from an empty cache), and at
# depth 0 for reference. pp runs from an empty cache on both sides.
# --repack 0: with its default run-time repacking (q4_0 -> q4_0_8x8 and the like), this llama.cpp
# (llama-cpp-python 0.3.36's) aborts on GLM-DSA while reserving the graph
# ("GGML_ASSERT(*cur_backend_id != -1)", ggml-backend.cpp:1294): some node of the graph is then
# supported by no backend. Without repacking it runs its plain Q4_0 / Q4_K kernels.
# ROUNDS > 1 runs every engine once per round, in turn, and compares medians: on a shared VM one
# pass of each can meet different phases of the machine (docs/BENCHMARKS.md).
results=$(mktemp -d)
for round in $(seq "$ROUNDS"); do
  for q in "${QUANTS[@]}"; do
    echo "# round $round: llama.cpp $q" >&2
    "$LLAMA_BUILD/bin/llama-bench" -m "$WORK/glm5-$tag-$q.gguf" -t "$THREADS" -p "$PROMPT" -n 0 \
      -r 1 --repack 0 -o json > "$results/$round-$q-pp.json"
    "$LLAMA_BUILD/bin/llama-bench" -m "$WORK/glm5-$tag-$q.gguf" -t "$THREADS" -p 0 -n "$GEN" \
      -d "0,$PROMPT" -r 1 --repack 0 -o json > "$results/$round-$q-tg.json"
  done
  echo "# round $round: whittle" >&2
  build/whittle bench "$gptq" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --threads "$THREADS" \
    --json > "$results/$round-whittle.json"
done
python3 - "$results" "$ROUNDS" "${QUANTS[@]}" << 'PY'
import json, statistics, sys
results, rounds, quants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}  # engine -> {"pp": [...], "tg0": [...], "tg": [...]}
for r in range(1, rounds + 1):
    for q in quants:
        row = rows.setdefault("llama.cpp " + q, {"pp": [], "tg0": [], "tg": []})
        for part in ("pp", "tg"):
            for t in json.load(open(f"{results}/{r}-{q}-{part}.json")):
                key = "pp" if t["n_prompt"] else ("tg" if t["n_depth"] else "tg0")
                row[key].append(t["avg_ts"])
    w = json.load(open(f"{results}/{r}-whittle.json"))
    row = rows.setdefault("whittle", {"pp": [], "tg0": [], "tg": [], "bw": [], "ratio": []})
    row["pp"].append(w["prefill_tokens_per_s"])
    row["tg"].append(w["decode_tokens_per_s"])
    row["bw"].append(w["bandwidth_gbs"])
    row["ratio"].append(w["decode_bandwidth_ratio"])
med = lambda v: statistics.median(v) if v else float("nan")
fmt = lambda v: ", ".join(f"{x:.2f}" for x in v) or "-"
print("| engine | pp tokens/s | tg, empty cache | tg after the prompt |")
print("|---|---|---|---|")
for name, row in rows.items():
    print(f"| {name} | {fmt(row['pp'])} | {fmt(row['tg0'])} | {fmt(row['tg'])} |")
w = rows["whittle"]
print(f"\nwhittle decode: {fmt([100 * x for x in w['ratio']])} % of the bandwidth probed "
      f"({fmt(w['bw'])} GB/s)")
print("\nmedians, whittle ÷ llama.cpp:")
for name, row in rows.items():
    if name != "whittle":
        print(f"  {name}: pp {med(w['pp']) / med(row['pp']):.2f}×, "
              f"tg after the prompt {med(w['tg']) / med(row['tg']):.2f}×")
PY
rm -rf "$results"
