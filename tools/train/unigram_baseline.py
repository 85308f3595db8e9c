#!/usr/bin/env python3
"""Unigram baseline for the bundled model's held-out perplexity (issue 3: "per-domain perplexity far
below a unigram model of the same tokenizer").

The unigram model is estimated on the whole training corpus (data/corpus/train/*.txt, all four
domains, tokenized with models/tiny-glm5/tokenizer.json, added-token strings parsed as added tokens)
with add-one smoothing over the full vocabulary V:  p(t) = (count(t) + 1) / (N + V).
For each held-out file models/tiny-glm5/eval/{prose,code,arith,chat}.txt (the whole file encoded
at once, add_special_tokens=False) it reports the per-token cross-entropy H (nats), the perplexity
exp(H), and bits per byte = sum(-log2 p) / UTF-8 bytes of the file. `by_domain_unigram` repeats this
with a unigram estimated on the same domain's training file only (a stronger baseline).

Run from the repository root:
    .venv/bin/python tools/train/unigram_baseline.py
Writes models/tiny-glm5/eval/unigram_baseline.json.
"""

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import Tokenizer

DOMAINS = ["prose", "code", "arith", "chat"]


def encode_file(tok, path, chunk=1_000_000):
    text = Path(path).read_text(encoding="utf-8")
    # Encode in document-aligned pieces (split after an <|endoftext|> line) to bound memory.
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n<|endoftext|>\n", start + chunk)
        end = len(text) if end < 0 else end + len("\n<|endoftext|>\n")
        pieces.append(text[start:end])
        start = end
    ids = []
    for enc in tok.encode_batch(pieces, add_special_tokens=False):
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=np.int64), text


def score(counts, ids, nbytes):
    V = counts.shape[0]
    logp = np.log(counts + 1.0) - math.log(counts.sum() + V)
    nats = -float(logp[ids].sum())
    h = nats / len(ids)
    return {"cross_entropy_nats": round(h, 4), "perplexity": round(math.exp(h), 2),
            "bits_per_byte": round(nats / math.log(2) / nbytes, 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tok = Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    V = tok.get_vocab_size(with_added_tokens=True)
    total = np.zeros(V, dtype=np.float64)
    per_dom, train_stats = {}, {}
    for d in DOMAINS:
        ids, text = encode_file(tok, Path(args.corpus) / "train" / f"{d}.txt")
        c = np.bincount(ids, minlength=V).astype(np.float64)
        per_dom[d] = c
        total += c
        train_stats[d] = {"chars": len(text), "tokens": int(len(ids)),
                          "chars_per_token": round(len(text) / len(ids), 3)}
        print(f"train {d}: {len(text):,} chars, {len(ids):,} tokens", file=sys.stderr)
    result = {
        "made_by": "tools/train/unigram_baseline.py",
        "command": f".venv/bin/python tools/train/unigram_baseline.py --corpus {args.corpus} --model {args.model}",
        "python": platform.python_version(), "tokenizers": tokenizers.__version__,
        "tokenizer": str(Path(args.model) / "tokenizer.json"), "vocab_size": V,
        "smoothing": "add-one over the full vocabulary, counts from all training domains",
        "train": train_stats, "train_tokens_total": int(total.sum()),
        "eval": {},
    }
    for d in DOMAINS:
        path = Path(args.model) / "eval" / f"{d}.txt"
        ids, text = encode_file(tok, path)
        nbytes = len(text.encode("utf-8"))
        r = {"file": str(path), "chars": len(text), "bytes": nbytes, "tokens": int(len(ids)),
             "chars_per_token": round(len(text) / len(ids), 3)}
        r.update(score(total, ids, nbytes))
        r["by_domain_unigram"] = score(per_dom[d], ids, nbytes)
        result["eval"][d] = r
    out = Path(args.out) if args.out else Path(args.model) / "eval" / "unigram_baseline.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for d, r in result["eval"].items():
        print(f"{d:6s} tokens {r['tokens']:6d}  H {r['cross_entropy_nats']:.3f} nats  ppl {r['perplexity']:8.2f}  "
              f"bpb {r['bits_per_byte']:.3f}  (domain-only unigram ppl {r['by_domain_unigram']['perplexity']:.2f})")


if __name__ == "__main__":
    sys.exit(main())
