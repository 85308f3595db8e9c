#!/bin/bash
# Runs a command and reports its peak memory, sampled from /proc/<pid>/status every 0.1 s:
# RssAnon (anonymous memory: activations, caches, copies) and RssFile (pages of mapped files,
# which the kernel can drop and read again).
#   scripts/rss_peak.sh build/whittle generate models/tiny-glm5 -p "Hello" -n 8
set -u
"$@" &
pid=$!
max_anon=0 max_file=0 max_rss=0
while kill -0 "$pid" 2>/dev/null; do
  if read -r anon file rss < <(awk '/^RssAnon:/{a=$2} /^RssFile:/{f=$2} /^VmRSS:/{r=$2}
                                   END{print a+0, f+0, r+0}' "/proc/$pid/status" 2>/dev/null); then
    ((anon > max_anon)) && max_anon=$anon
    ((file > max_file)) && max_file=$file
    ((rss > max_rss)) && max_rss=$rss
  fi
  sleep 0.1
done
wait "$pid"
rc=$?
echo "peak RssAnon ${max_anon} kB, peak RssFile ${max_file} kB, peak VmRSS ${max_rss} kB (exit ${rc})" >&2
exit "$rc"
