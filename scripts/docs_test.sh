#!/usr/bin/env bash
# The repository's documentation stands on its own: no reference to design files that live outside
# it (shared/…), and every relative Markdown link points at a file or folder that exists.
set -euo pipefail
cd "$(dirname "$0")/.."
docs=(README.md docs/*.md models/*/README.md tools/*/README.md)
status=0
for f in "${docs[@]}"; do
  [ -f "$f" ] || continue
  if grep -n 'shared/\(DESIGN\|STYLE\|specs\)' "$f"; then
    echo "FAIL: $f refers to a design file outside the repository" >&2
    status=1
  fi
  # [text](target) with a relative target, anchors and query strings dropped.
  while IFS= read -r target; do
    path="${target%%#*}"
    [ -n "$path" ] || continue
    if [ ! -e "$(dirname "$f")/$path" ]; then
      echo "FAIL: $f links to $target, which does not exist" >&2
      status=1
    fi
  done < <(grep -o '](\([^)#][^)]*\))' "$f" | sed 's/^](\(.*\))$/\1/' | grep -v '^[a-z]*://' | grep -v '^mailto:' || true)
done
[ "$status" -eq 0 ] && echo "docs: no outside references, every relative link resolves"
exit "$status"
