#!/bin/bash
# Memory of `whittle quantize` on one checkpoint (docs/BENCHMARKS.md, "Memory: whittle quantize").
# Same method as the `whittle prune` memory benchmark: cold page cache on the input
# (posix_fadvise DONTNEED on every file), peak RSS from /usr/bin/time (%M), peak RssAnon /
# RssFile / VmRSS from scripts/rss_peak.sh (/proc/<pid>/status every 0.1 s), then the output's size.
#
#   bench/quantize_memory.sh MODEL OUT LOG -- --method rtn --threads 2
#   WHITTLE=/work/synth/whittle NICE=10 KEEP_OUT=1 bench/quantize_memory.sh ...
#
# Synthetic models: tools/synth/make_glm5_shaped.py (tools/synth/README.md); calibration for them:
# any plain text the copied tiny-glm5 tokenizer reads, e.g. --calib /tmp/synth-calib.txt.
# The output folder is deleted after it is measured unless KEEP_OUT=1.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
WHITTLE=${WHITTLE:-$here/build/whittle}
NICE=${NICE:-0}
if [[ $# -lt 4 || $4 != -- ]]; then
  echo "usage: $0 MODEL OUT LOG -- WHITTLE_QUANTIZE_OPTIONS..." >&2
  exit 2
fi
model=$1 out=$2 log=$3
shift 4

python3 - "$model" <<'EOF'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        fd = os.open(os.path.join(root, f), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
EOF

{
  echo "# $(date -u +%FT%TZ) $(hostname) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# model $model: $(du -sb "$model" | cut -f1) B"
  echo "# $WHITTLE quantize $model $out $*"
} >"$log"
start=$(date +%s.%N)
/usr/bin/time -f "time: wall %e s, user %U s, sys %S s, max RSS %M kB, fs in %I, fs out %O" \
  "$here/scripts/rss_peak.sh" nice -n "$NICE" "$WHITTLE" quantize "$model" "$out" --force "$@" \
  >>"$log" 2>&1
rc=$?
end=$(date +%s.%N)
{
  echo "# exit $rc, wall $(echo "$end - $start" | bc) s, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [[ -d $out ]]; then
    echo "# output $out: $(du -sb "$out" | cut -f1) B, $(ls "$out" | grep -c safetensors$) shard(s)"
  fi
} >>"$log"
[[ ${KEEP_OUT:-0} == 1 ]] || rm -rf "$out"
# The summary lines (the progress bars write carriage returns).
tr '\r' '\n' <"$log" | grep -E '^(#|time:|peak|layer [0-9]+/[0-9]+:)' | grep -v 'iters\|%' 
exit $rc
