#!/usr/bin/env python3
"""Draws a calibration file for `whittle prune` (REAP) from the bundled model's *training* split.

    .venv/bin/python tools/train/make_calibration.py                    # models/tiny-glm5/calibration.txt
    .venv/bin/python tools/train/make_calibration.py --domains prose --out data/calibration_prose.txt

Input: data/corpus/train/{prose,code,arith,chat}.txt (tools/train/build_corpus.py; documents separated
by "\\n<|endoftext|>\\n"), whose sha256 must equal data/corpus/MANIFEST.json's, and the model's
tokenizer.json. Never reads the training split of anything else; the held-out files
MODEL/eval/{prose,code,arith,chat}.txt are read only to check that none of them leaks into the output.

Drawing (seeded: one Python random.Random(--seed) for everything, used in a fixed order, so the
draw of a domain does not depend on which --domains are asked for):

- Every document of the four training files is tokenized (add_special_tokens=False, added-token
  strings parsed, as train.py does); a document counts len(ids) + 1 tokens (its `<|endoftext|>`,
  which `whittle prune` appends to every calibration document).
- Each selected domain gets a token quota, --tokens x its share of the selected domains under
  --mix: by default the mix train.py sampled its training sequences with (prose 0.3, code 0.2,
  arith 0.3, chat 0.2: what the model saw), or `--mix corpus` for each domain's share of the
  corpus' training tokens (counted here, all documents); documents are added to a domain until its
  quota is reached, so each domain ends at most one document above its quota.
- Within a domain, documents are drawn without replacement with weight max(1, n / --max-doc-tokens)
  (n = the document's tokens; Efraimidis-Spirakis keys u ** (1 / w)), so that the tokens each
  *source* (man pages, Python docs, WordNet, ...) contributes follow its share of the training
  tokens even though long documents are cut: a uniform draw over documents would under-represent
  the sources with long documents (Python docs, headers, stdlib modules).
- A document longer than --max-doc-tokens (default 512; training saw 256-token windows) is truncated at the last line boundary
  that keeps it within the limit (a document with no line break inside the limit is skipped).
- Leakage: a candidate is dropped if it shares a line longer than 40 characters (stripped) with any
  held-out file, contains a held-out document or occurs inside a held-out file; after writing, the
  output is checked again (asserted: no held-out document and no held-out long line in it).

Output, written to a temporary name and then renamed: the drawn documents in a seeded random order, in
*stream form* (tools/train/docs_format.py: each document followed directly by `<|endoftext|>`), which
`whittle prune --calib` splits into the same documents (src/prune/calibration.cc) and whose encoding
is exactly the token stream the model was trained on (`whittle eval --task ppl --data FILE` scores
it as training did). No header: every byte of the file is calibration text. The summary is printed
and recorded with the command, seed, corpus hashes and versions in --json (default: OUT with the
suffix .json).
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_format import EOT, join_stream, split_docs  # noqa: E402

DOMAINS = ["prose", "code", "arith", "chat"]
# train.py's default --mix: the share of training sequences drawn from each domain.
TRAIN_MIX = "prose=0.3,code=0.2,arith=0.3,chat=0.2"
LONG_LINE = 40  # a held-out line longer than this (stripped) must not occur in the output


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def long_lines(text):
    return {s for s in (ln.strip() for ln in text.split("\n")) if len(s) > LONG_LINE}


def token_counts(tok, docs, batch=2000):
    """len(ids) of every document, encoded in batches (whole-corpus Encodings would take GBs)."""
    out = []
    for i in range(0, len(docs), batch):
        out += [len(e.ids) for e in tok.encode_batch(docs[i:i + batch], add_special_tokens=False)]
    return out


def truncate(tok, text, cap):
    """The longest prefix of whole lines of `text` with at most `cap` tokens (trailing newlines
    dropped), or None when even the first line is longer."""
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc.ids) <= cap:
        return text
    limit = enc.offsets[cap][0]  # first character of token cap + 1: the prefix must end before it
    while True:
        cut = text.rfind("\n", 0, limit + 1)
        if cut <= 0:
            return None
        head = text[:cut].rstrip("\n")
        if head.strip() and len(tok.encode(head, add_special_tokens=False).ids) <= cap:
            return head
        limit = cut - 1
        if not head.strip():
            return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus", help="build_corpus.py's output folder")
    ap.add_argument("--model", default="models/tiny-glm5", help="tokenizer.json and eval/ come from here")
    ap.add_argument("--out", default=None, help="default: MODEL/calibration.txt")
    ap.add_argument("--json", default=None, help="summary record; default: OUT with the suffix .json")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=70_000, help="target tokens (each document + its <|endoftext|>)")
    ap.add_argument("--domains", default=",".join(DOMAINS), help="comma list of " + ", ".join(DOMAINS))
    ap.add_argument("--mix", default=TRAIN_MIX,
                    help="domain shares, e.g. prose=0.3,code=0.2,arith=0.3,chat=0.2 (train.py's default "
                         "--mix, the default here), or 'corpus' for the corpus' token shares")
    ap.add_argument("--max-doc-tokens", type=int, default=512,
                    help="longer documents are truncated at a line boundary")
    args = ap.parse_args()
    t0 = time.time()

    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    bad = [d for d in domains if d not in DOMAINS]
    if bad or not domains:
        ap.error(f"--domains: unknown {bad}; choose from {DOMAINS}")
    domains = [d for d in DOMAINS if d in domains]  # fixed order, no duplicates
    if args.tokens < 1 or args.max_doc_tokens < 1:
        ap.error("--tokens and --max-doc-tokens must be positive")
    corpus, model = Path(args.corpus), Path(args.model)
    out = Path(args.out) if args.out else model / "calibration.txt"
    json_out = Path(args.json) if args.json else out.with_suffix(".json")

    # ---- the corpus must be the one MANIFEST.json describes
    if not (corpus / "DONE").exists():
        sys.exit(f"{corpus}/DONE missing: run tools/train/build_corpus.py first")
    manifest = json.loads((corpus / "MANIFEST.json").read_text(encoding="utf-8"))
    corpus_sha = {}
    for d in DOMAINS:
        got, want = sha256_file(corpus / "train" / f"{d}.txt"), manifest["train"][d]["sha256"]
        if got != want:
            sys.exit(f"{corpus}/train/{d}.txt: sha256 {got} differs from MANIFEST.json's {want}")
        corpus_sha[d] = got

    tok_path = model / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_path))
    eot = tok.token_to_id(EOT)
    assert eot is not None, f"{tok_path}: no {EOT} token"

    # ---- every training document and its tokens (all four domains: the shares do not depend on --domains)
    docs, ntok = {}, {}
    for d in DOMAINS:
        docs[d] = split_docs((corpus / "train" / f"{d}.txt").read_text(encoding="utf-8"))
        assert len(docs[d]) == manifest["train"][d]["documents"], d
        ntok[d] = token_counts(tok, docs[d])
        log(f"  {d}: {len(docs[d]):,} documents, {sum(ntok[d]) + len(docs[d]):,} tokens ({time.time() - t0:.0f}s)")
    train_tokens = {d: sum(ntok[d]) + len(docs[d]) for d in DOMAINS}
    if args.mix == "corpus":
        weight = dict(train_tokens)
    else:
        weight = {kv.split("=")[0]: float(kv.split("=")[1]) for kv in args.mix.split(",")}
        assert set(weight) == set(DOMAINS) and all(v >= 0 for v in weight.values()), args.mix
    sel_total = sum(weight[d] for d in domains)
    share = {d: weight[d] / sel_total for d in domains}
    quota = {d: args.tokens * share[d] for d in domains}

    # ---- held-out material (stream form), for the leakage checks
    eval_texts, eval_docs, eval_lines = [], [], set()
    for d in DOMAINS:
        text = (model / "eval" / f"{d}.txt").read_text(encoding="utf-8")
        eval_texts.append(text)
        for doc in split_docs(text):
            eval_docs.append(doc.strip())
            eval_lines |= long_lines(doc)
    eval_docs = [e for e in eval_docs if e]
    eval_all = "\n".join(eval_texts)

    def leaks(text):
        reasons = []
        if long_lines(text) & eval_lines:
            reasons.append("long_line")
        if text.strip() in eval_all:
            reasons.append("inside_eval_file")
        if any(e in text for e in eval_docs):
            reasons.append("contains_eval_document")
        return reasons

    # ---- the weighted order of every domain's documents, then the draw
    rng = random.Random(args.seed)
    cap = args.max_doc_tokens
    order = {}
    for d in DOMAINS:  # always all four, in this order: a domain's draw does not depend on --domains
        keys = [rng.random() ** (1.0 / max(1.0, n / cap)) for n in ntok[d]]
        order[d] = sorted(range(len(docs[d])), key=lambda i: -keys[i])
    chosen = []  # (domain, text, tokens incl. <|endoftext|>)
    stats = {d: {"documents": 0, "tokens": 0, "truncated": 0, "skipped_no_line_break": 0,
                 "dropped_leakage": 0, "leakage_reasons": {}, "candidates_seen": 0} for d in domains}
    for d in domains:
        st = stats[d]
        for i in order[d]:
            if st["tokens"] >= quota[d]:
                break
            st["candidates_seen"] += 1
            text = docs[d][i].rstrip("\n")
            n = ntok[d][i]
            if n > cap:
                text = truncate(tok, text, cap)
                if text is None:
                    st["skipped_no_line_break"] += 1
                    continue
                n = len(tok.encode(text, add_special_tokens=False).ids)
                st["truncated"] += 1
            reasons = leaks(text)
            if reasons:
                st["dropped_leakage"] += 1
                for r in reasons:
                    st["leakage_reasons"][r] = st["leakage_reasons"].get(r, 0) + 1
                continue
            chosen.append((d, text, n + 1))
            st["documents"] += 1
            st["tokens"] += n + 1
        if st["tokens"] < quota[d]:
            sys.exit(f"{d}: only {st['tokens']} tokens available of the {quota[d]:.0f} wanted")
    rng.shuffle(chosen)

    # ---- write (temporary name, then rename), read back, check
    body = join_stream(t for _, t, _ in chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    written = tmp.read_text(encoding="utf-8")
    back = split_docs(written)
    assert back == [t for _, t, _ in chosen], "the file does not split back into the drawn documents"
    ids = tok.encode(written, add_special_tokens=False).ids
    assert len(ids) == sum(n for _, _, n in chosen), (len(ids), sum(n for _, _, n in chosen))
    assert ids.count(eot) == len(chosen) and ids[-1] == eot
    out_lines = long_lines("\n".join(back))
    check = {
        "eval_documents": len(eval_docs),
        "eval_documents_in_output": sum(1 for e in eval_docs if e in written),
        f"eval_lines_over_{LONG_LINE}_chars": len(eval_lines),
        f"eval_lines_over_{LONG_LINE}_chars_in_output": len(eval_lines & out_lines),
        "output_documents_inside_eval_files": sum(1 for t in back if t.strip() in eval_all),
        "candidates_dropped": sum(stats[d]["dropped_leakage"] for d in domains),
    }
    assert check["eval_documents_in_output"] == 0, check
    assert check[f"eval_lines_over_{LONG_LINE}_chars_in_output"] == 0, check
    assert check["output_documents_inside_eval_files"] == 0, check
    os.replace(tmp, out)
    out_sha = sha256_file(out)

    # ---- summary
    total_tok = sum(stats[d]["tokens"] for d in domains)
    total_docs = sum(stats[d]["documents"] for d in domains)
    lines = [f"{out}: {total_docs:,} documents, {total_tok:,} tokens (target {args.tokens:,}), "
             f"{out.stat().st_size:,} bytes, sha256 {out_sha}",
             f"{'domain':<7} {'share':>7} {'quota':>8} {'tokens':>8} {'docs':>6} {'truncated':>9} {'dropped':>8}"]
    for d in domains:
        st = stats[d]
        lines.append(f"{d:<7} {share[d]:>7.2%} {quota[d]:>8.0f} {st['tokens']:>8,} {st['documents']:>6,} "
                     f"{st['truncated']:>9} {st['dropped_leakage']:>8}")
    lines.append(f"leakage: {json.dumps(check)}")
    print("\n".join(lines))

    # the corpus the bundled tokenizer (and model) were trained on, as its oracle record says
    oracle = Path(__file__).resolve().parents[2] / "tests" / "golden" / "tiny_glm5_tokenizer" / "ORACLE.json"
    same_corpus = None
    if oracle.exists():
        same_corpus = json.loads(oracle.read_text(encoding="utf-8"))["tokenizer"]["corpus_train_sha256"] == corpus_sha

    cmd = [".venv/bin/python", "tools/train/make_calibration.py"] + sys.argv[1:]
    record = {
        "made_by": "tools/train/make_calibration.py",
        "command": " ".join(shlex.quote(c) for c in cmd),
        "seed": args.seed,
        "target_tokens": args.tokens,
        "max_doc_tokens": cap,
        "domains": domains,
        "file": {"path": str(out), "bytes": out.stat().st_size, "sha256": out_sha, "documents": total_docs,
                 "tokens": total_tok,
                 "format": "stream form (tools/train/docs_format.py): each document followed by <|endoftext|>"},
        "tokens_counted_as": "len(encode(document, add_special_tokens=False).ids) + 1 (its <|endoftext|>)",
        "mix": args.mix,
        "per_domain": {d: {"share": round(share[d], 6), "quota": round(quota[d], 1),
                           **{k: v for k, v in stats[d].items()}} for d in domains},
        "training_tokens": train_tokens,
        "training_documents": {d: len(docs[d]) for d in DOMAINS},
        "leakage_checks": check,
        "corpus": {"manifest_command": manifest.get("command"), "manifest_seed": manifest.get("seed"),
                   "train_sha256": corpus_sha,
                   "same_as_tokenizer_training_corpus": same_corpus},
        "tokenizer": {"path": str(tok_path), "sha256": sha256_file(tok_path)},
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    tmpj = json_out.with_name(json_out.name + ".tmp")
    tmpj.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmpj, json_out)
    log(f"wrote {out} and {json_out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
