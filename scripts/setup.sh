#!/usr/bin/env bash
# Installs the Debian packages whittle needs. Idempotent: when every package is already installed it
# does nothing (no apt-get update), so `make test` stays fast and offline-safe.
#
#   scripts/setup.sh          what `make`, `make demo`, `make test` and `make asan` need
#   scripts/setup.sh fuzz     also clang and its runtime (libFuzzer), for `make fuzz`
#   scripts/setup.sh format   also clang-format, for `make format` and `make format-check`
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libpcre2-dev libutf8proc-dev libopenblas-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev
)
case "${1:-}" in
  "") ;;
  fuzz) packages+=(clang libclang-rt-14-dev) ;;
  format) packages+=(clang-format) ;;
  *) echo "setup: unknown argument '$1' (expected nothing, 'fuzz' or 'format')" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "setup: these Debian packages are missing: ${missing[*]}" >&2
    echo "setup: installing them needs root, and sudo is not available; as root, run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
