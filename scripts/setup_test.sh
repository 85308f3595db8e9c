#!/usr/bin/env bash
# Tests of scripts/setup.sh that install nothing: an unknown argument is a usage error, and on a
# machine without root or sudo the missing packages are named with the command to run as root.
# dpkg and id are replaced by stubs on a PATH that holds nothing else (so no sudo or apt-get).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
stubs="$(mktemp -d)"
trap 'rm -rf "$stubs"' EXIT
printf '#!/bin/sh\nexit 1\n' > "$stubs/dpkg"    # every package reads as missing
printf '#!/bin/sh\necho 1000\n' > "$stubs/id"  # not root
chmod +x "$stubs/dpkg" "$stubs/id"
bash="$(command -v bash)"

fail() { echo "FAIL: $*" >&2; exit 1; }

set +e
out="$(PATH="$stubs" "$bash" "$here/setup.sh" bogus 2>&1)"; status=$?
set -e
[ "$status" -eq 2 ] || fail "unknown argument: exit $status, expected 2"
[[ "$out" == *"unknown argument 'bogus'"* ]] || fail "unknown argument: got '$out'"

for extra in "" fuzz format; do
  set +e
  out="$(PATH="$stubs" "$bash" "$here/setup.sh" $extra 2>&1)"; status=$?
  set -e
  [ "$status" -eq 1 ] || fail "setup.sh $extra without root or sudo: exit $status, expected 1"
  [[ "$out" == *"sudo is not available"* ]] || fail "setup.sh $extra: no explanation in '$out'"
  [[ "$out" == *"apt-get install -y --no-install-recommends build-essential"* ]] ||
    fail "setup.sh $extra: no command to run as root in '$out'"
  [[ "$out" == *"libcpp-httplib-dev"* ]] || fail "setup.sh $extra lacks the HTTP library: '$out'"
  # Only what is used: no benchmark library (bench/ builds only where it is present); clang only
  # for fuzzing.
  for unused in libbenchmark-dev; do
    [[ "$out" != *"$unused"* ]] || fail "setup.sh $extra installs the unused $unused"
  done
  case "$extra" in
    fuzz) [[ "$out" == *" clang "* || "$out" == *" clang"$'\n'* ]] || fail "setup.sh fuzz lacks clang: '$out'" ;;
    *) [[ "$out" != *" clang "* ]] || fail "setup.sh $extra installs clang, which only fuzzing needs" ;;
  esac
done
echo "setup.sh: all checks passed"
