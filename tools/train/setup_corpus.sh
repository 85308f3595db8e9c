#!/bin/sh
# Installs the Debian packages whittle's training corpus is built from (tools/train/build_corpus.py).
# Idempotent: does nothing when every package is already installed; uses sudo only when not root.
set -eu
# Keep in sync with tools/train/corpus_sources.py (PACKAGES, MAN_PACKAGES, HEADER_PACKAGES,
# PYSTD_PACKAGES): man pages, headers and Python sources are taken only from these packages' files.
PACKAGES="groff-base python3.11-doc wordnet-base libc6-dev linux-libc-dev libpython3.11-dev
  libpython3.11-minimal libpython3.11-stdlib python3-lib2to3 python3-distutils
  manpages manpages-dev coreutils util-linux findutils grep sed tar gzip bash procps dpkg apt man-db
  diffutils git-man iproute2 openssl e2fsprogs passwd systemd bsdutils login mount make less
  xz-utils bzip2 openssh-client libpcre2-dev"
missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "setup_corpus: all corpus packages installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
echo "setup_corpus: installing$missing"
$SUDO apt-get update -qq
# man pages must not be excluded by a dpkg path-exclude (minimal Docker images drop /usr/share/man).
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
