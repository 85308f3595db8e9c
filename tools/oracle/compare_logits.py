#!/usr/bin/env python3
"""Compare `whittle logits` with the golden transformers logits of each golden model folder.

Usage (repository root, after `make build`):
    .venv/bin/python tools/oracle/compare_logits.py [--whittle build/whittle] [FOLDER ...]
Default folders: every tests/golden/models/* with a logits.npy. For each folder and each mode
(prefill; decode = one token at a time from the latent cache) it prints max|Δ| / max|golden logit|
and whether the arg-max agrees at every position.
"""

import argparse
import glob
import os
import subprocess
import tempfile

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--whittle", default="build/whittle")
    ap.add_argument("folders", nargs="*")
    args = ap.parse_args()
    folders = args.folders or sorted(os.path.dirname(p) for p in glob.glob("tests/golden/models/*/logits.npy"))
    print(f"{'model':<16} {'mode':<8} {'T':>4} {'max|d|/max|g|':>14} argmax")
    for d in folders:
        ids = np.load(os.path.join(d, "input_ids.npy"))
        golden = np.load(os.path.join(d, "logits.npy"))
        scale = np.abs(golden).max()
        for mode in ("prefill", "decode"):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "logits.npy")
                subprocess.run([args.whittle, "logits", d, "--ids", ",".join(map(str, ids)), "--out", out,
                                "--mode", mode], check=True, stderr=subprocess.DEVNULL)
                got = np.load(out)
            rel = np.abs(got - golden).max() / scale
            same = bool((got.argmax(1) == golden.argmax(1)).all())
            print(f"{os.path.basename(d):<16} {mode:<8} {len(ids):>4} {rel:>14.2e} {'same' if same else 'DIFFERS'}")


if __name__ == "__main__":
    main()
