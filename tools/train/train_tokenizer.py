#!/usr/bin/env python3
"""Trains the bundled model's tokenizer (models/tiny-glm5) in GLM-5's exact tokenizer.json form.

Same construction as tests/golden/tokenizer (tools/oracle/make_tokenizer.py, whose code this reuses):
byte-level BPE with `ignore_merges`, no normalizer, pre-tokenizer Sequence[Split(GLM-5 regex,
Isolated), ByteLevel(use_regex=false)], ByteLevel decoder, no post-processor, then GLM-5's 36
added tokens (same names, same special flags, same order) right after the regular ids. Vocabulary
4096 in total (4060 BPE ids + 36 added tokens), so the model's vocab_size is 4096.

Training text: a deterministic subset of data/corpus/train/*.txt (the first CHARS[domain]
characters of each domain file, split into documents at the `<|endoftext|>` lines, and each
document split at the added-token strings so that chat markup such as `<|user|>` does not spend
BPE merges: those strings are added tokens and never reach the BPE model).

Run from the repository root, after tools/train/build_corpus.py:
    .venv/bin/python tools/train/train_tokenizer.py [--corpus data/corpus] [--out models/tiny-glm5]
Writes OUT/{tokenizer.json, tokenizer_config.json, chat_template.jinja} atomically (temp name,
then rename), then the C++ golden tests/golden/tiny_glm5_tokenizer/encode_golden.jsonl (ids from
HF tokenizers for strings from the held-out eval files plus tricky strings; `--golden-only` rewrites
just that); the commands and versions go to tests/golden/tiny_glm5_tokenizer/ORACLE.json.
"""

import argparse
import hashlib
import json
import os
import platform
import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "oracle"))
import make_tokenizer as glm5  # noqa: E402  (GLM-5 tokenizer form, shared with the test tokenizer)
import make_tokenizer_golden as mtg  # noqa: E402  (its tricky strings)
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_format import SEP, join_stream, split_docs  # noqa: E402

VOCAB_TOTAL = 4096
CHARS = {"prose": 4_000_000, "code": 3_000_000, "arith": 1_000_000, "chat": 2_000_000}
TEMPLATE = REPO / "tests" / "golden" / "tokenizer" / "chat_template.jinja"
GOLDEN_DIR = REPO / "tests" / "golden" / "tiny_glm5_tokenizer"
GOLDEN_SEED = 20260604
DEFAULT_OUT = REPO / "models" / "tiny-glm5"

_ADDED_RE = re.compile("|".join(re.escape(t) for t, _ in glm5.ADDED_TOKENS))


def training_chunks(corpus):
    chunks = []
    for dom, n in CHARS.items():
        text = (Path(corpus) / "train" / f"{dom}.txt").read_text(encoding="utf-8")[:n]
        for doc in text.split(SEP):
            chunks.extend(p for p in _ADDED_RE.split(doc) if p)
    return chunks


def atomic_write(path, text):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def golden_strings(eval_dir, seed=GOLDEN_SEED, per_domain=75):
    """Strings for the C++ golden: pieces of every held-out eval file (whole short documents and
    windows of long ones, cut at line starts) plus the tricky strings of the test tokenizer's golden."""
    rng = random.Random(seed)
    out = []
    for dom in ("prose", "code", "arith", "chat"):
        docs = [d for d in split_docs((Path(eval_dir) / f"{dom}.txt").read_text(encoding="utf-8")) if d]
        picks = rng.sample(docs, min(per_domain, len(docs)))
        for d in picks:
            if len(d) > 500:
                lines = d.split("\n")
                i = rng.randrange(len(lines))
                piece = ""
                while i < len(lines) and len(piece) < rng.randint(80, 450):
                    piece += lines[i] + "\n"
                    i += 1
                d = piece if rng.random() < 0.7 else piece.rstrip("\n")
            out.append(d)
        # documents with their separators in both forms (the stream form is what the model sees)
        out.append(SEP.join(docs[:2]) + SEP)
        out.append(join_stream(docs[:2]))
    out += (mtg.PROSE + mtg.CJK + mtg.EMOJI + mtg.COMBINING + mtg.WHITESPACE + mtg.CODE + mtg.DIGITS
            + mtg.CONTRACTIONS + mtg.SPECIAL + mtg.EDGE)
    out += ["#### 12", "<<7+5=12>>12", "$<<5*3=15>>15", "#### 1000\n", "  #### 7", "12 * 12 = <<12*12=144>>144"]
    return out


def fnv1a64_ids(ids):
    """FNV-1a (64-bit) over the ids as little-endian int32 bytes: a compact golden for long texts."""
    h = 0xCBF29CE484222325
    for b in b"".join(int(i).to_bytes(4, "little", signed=True) for i in ids):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def eval_file_checks(tok, eval_dir):
    """Token count and FNV-1a of the ids of each whole held-out text file (encode with added-token
    parsing), so the C++ test also covers every held-out token, not just the sampled strings."""
    out = {}
    for dom in ("prose", "code", "arith", "chat"):
        text = (Path(eval_dir) / f"{dom}.txt").read_text(encoding="utf-8")
        ids = tok.encode(text, add_special_tokens=False).ids
        out[f"models/tiny-glm5/eval/{dom}.txt"] = {
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "tokens": len(ids), "ids_fnv1a64": fnv1a64_ids(ids)}
    return out


def write_golden(tokenizer_path, eval_dir):
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok_raw = Tokenizer.from_file(str(tokenizer_path))
    tok_raw.encode_special_tokens = True
    texts = golden_strings(eval_dir)
    header = {
        "oracle": "tools/train/train_tokenizer.py (write_golden)",
        "command": ".venv/bin/python tools/train/train_tokenizer.py --golden-only",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "tokenizer": "models/tiny-glm5/tokenizer.json",
        "tokenizer_sha256": hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest(),
        "call": "Tokenizer.encode(text, add_special_tokens=False); decode(ids, skip_special_tokens=...)",
        "fields": {
            "ids": "encode with added-token parsing (the default)",
            "ids_no_special": "present when different: encode_special_tokens=True (special tokens as text)",
            "decoded": "present when different from text: decode(ids, skip_special_tokens=False)",
            "decoded_skip": "decode(ids, skip_special_tokens=True), present when different from decoded",
        },
        "sources": "windows of models/tiny-glm5/eval/{prose,code,arith,chat}.txt + the fixed tricky "
                   "strings of tools/oracle/make_tokenizer_golden.py",
        "strings": len(texts),
        "seed": GOLDEN_SEED,
        "eval_files": eval_file_checks(tok, eval_dir),
    }
    lines = [json.dumps(header, ensure_ascii=False)]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        rec = {"text": text, "ids": ids}
        raw = tok_raw.encode(text, add_special_tokens=False).ids
        if raw != ids:
            rec["ids_no_special"] = raw
        dec = tok.decode(ids, skip_special_tokens=False)
        dec_skip = tok.decode(ids, skip_special_tokens=True)
        if dec != text:
            rec["decoded"] = dec
        if dec_skip != dec:
            rec["decoded_skip"] = dec_skip
        lines.append(json.dumps(rec, ensure_ascii=False))
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    out = GOLDEN_DIR / "encode_golden.jsonl"
    atomic_write(out, "\n".join(lines) + "\n")
    oracle_path = GOLDEN_DIR / "ORACLE.json"
    existing = json.loads(oracle_path.read_text()) if oracle_path.exists() else {}
    existing["encode_golden"] = header
    atomic_write(oracle_path, json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}: {len(texts)} strings, {out.stat().st_size} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", default=str(DEFAULT_OUT.relative_to(REPO)))
    ap.add_argument("--golden-only", action="store_true",
                    help="only rewrite tests/golden/tiny_glm5_tokenizer/encode_golden.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.golden_only:
        write_golden(out / "tokenizer.json", out / "eval")
        return

    chunks = training_chunks(args.corpus)
    tok, bpe_size = glm5.train_glm5_tokenizer(chunks, VOCAB_TOTAL)
    assert bpe_size + len(glm5.ADDED_TOKENS) == VOCAB_TOTAL
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_TOTAL
    template_text = TEMPLATE.read_text(encoding="utf-8")
    atomic_write(out / "chat_template.jinja", template_text)
    atomic_write(out / "tokenizer_config.json", glm5.tokenizer_config_text(template_text, bpe_size))
    atomic_write(out / "tokenizer.json", glm5.tokenizer_json_text(tok))

    print(f"wrote {out}: {bpe_size} BPE ids + {len(glm5.ADDED_TOKENS)} added tokens = {VOCAB_TOTAL}")
    if out.resolve() != DEFAULT_OUT.resolve():
        print(f"--out is not {DEFAULT_OUT.relative_to(REPO)}: golden and ORACLE.json left alone")
        return
    manifest = json.loads((Path(args.corpus) / "MANIFEST.json").read_text())
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    oracle_path = GOLDEN_DIR / "ORACLE.json"
    existing = json.loads(oracle_path.read_text()) if oracle_path.exists() else {}
    existing["tokenizer"] = {
        "made_by": "tools/train/train_tokenizer.py",
        "command": f".venv/bin/python tools/train/train_tokenizer.py --corpus {args.corpus} --out {args.out}",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "bpe_vocab_size": bpe_size,
        "added_tokens": len(glm5.ADDED_TOKENS),
        "total_vocab_size": VOCAB_TOTAL,
        "training_text": {dom: f"first {n} characters of train/{dom}.txt, documents split at added-token strings"
                          for dom, n in CHARS.items()},
        "corpus_seed": manifest["seed"],
        "corpus_train_sha256": {dom: v["sha256"] for dom, v in manifest["train"].items()},
        "tokenizer_json_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
        "chat_template": "tests/golden/tokenizer/chat_template.jinja (copied to chat_template.jinja)",
    }
    atomic_write(oracle_path, json.dumps(existing, indent=2, sort_keys=True) + "\n")
    write_golden(out / "tokenizer.json", out / "eval")


if __name__ == "__main__":
    sys.exit(main())
