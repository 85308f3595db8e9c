#!/usr/bin/env python3
"""Builds the training corpus of whittle's bundled model (issue 3) from Debian-packaged text.

    tools/train/setup_corpus.sh                                  # installs the source packages
    nice .venv/bin/python tools/train/build_corpus.py --seed 1 --out data/corpus

Writes (atomically: a temp folder, then renames; DONE last):
    data/corpus/train/{prose,code,arith,chat}.txt   training text, one file per domain
    data/corpus/MANIFEST.json                       packages+versions, seed, sizes, sha256, held-out
    data/corpus/DONE                                marker, written last
    models/tiny-glm5/eval/{prose,code,arith,chat}.txt           held-out text (never trained on)
    models/tiny-glm5/eval/arith_{one,two}_step.jsonl            200 GSM8K-format problems each

Every text file holds documents, each followed by a line `<|endoftext|>`, i.e. documents are
separated by "\\n<|endoftext|>\\n". Arithmetic documents are `question + "\\n" + answer` (the answer's
last line is `#### N`); chat documents are GLM-5-template renderings ending with `<|user|>`.

Deterministic given --seed and the installed package versions: sorted file lists, seeded shuffles,
no time/hostname/locale dependence. Held-out material is chosen as whole source documents (man
pages, documentation pages, headers, modules, WordNet synsets) plus a separate arithmetic seed;
training documents that share more than a few long lines with a held-out document are dropped, and
no held-out arithmetic question occurs in training.
"""

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_arith as arith  # noqa: E402
import corpus_chat as chat  # noqa: E402
import corpus_sources as src  # noqa: E402
from docs_format import EOT, join_docs, join_stream, split_docs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO / "models" / "tiny-glm5" / "eval"

# Training budgets in characters per source (the held-out budgets are per eval file part).
BUDGET = {"man": 7_000_000, "pydoc": 7_000_000, "wordnet": 4_000_000,
          "cheader": 3_500_000, "pystd": 5_500_000}
EVAL_BUDGET = {"man": 16_000, "pydoc": 16_000, "wordnet": 10_000, "cheader": 20_000, "pystd": 20_000}
N_ARITH_TRAIN = 32_000
N_ARITH_EVAL_JSONL = 200
N_ARITH_EVAL_TEXT = 220
N_CHAT_TRAIN = 16_000
N_CHAT_EVAL = 120


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def long_lines(text, min_len=40):
    return {ln.strip() for ln in text.split("\n") if len(ln.strip()) >= min_len}


def split_heldout(docs, rng, eval_budget, n_extra=0, max_doc=None):
    """Shuffle, then take whole documents for the eval file (until eval_budget characters; a
    held-out document longer than the remaining budget is cut at a paragraph), plus n_extra more
    held-out documents (used only for held-out chat). Returns (eval_docs, extra_docs, rest)."""
    docs = list(docs)
    rng.shuffle(docs)
    ev, used, i = [], 0, 0
    while used < eval_budget and i < len(docs):
        d = docs[i]
        i += 1
        if max_doc and len(d.text) > max_doc:
            continue  # too long to be a whole held-out document: leave it for training
        text = d.text
        left = eval_budget - used
        if len(text) > left + 2000:
            cut = text.rfind("\n\n", 0, left)
            text = text[: cut if cut > 0 else left].rstrip() + "\n"
        ev.append(src.Doc(d.source, d.name, text, d.meta))
        used += len(text)
    taken = {id(d) for d in docs[:i]}
    rest = [d for d in docs if id(d) not in taken]
    extra, rest = rest[:n_extra], rest[n_extra:]
    return ev, extra, rest


def drop_overlapping(train, heldout, thresh=0.2):
    """Drops training docs that are near-duplicates of held-out docs; returns (kept, dropped)."""
    held = set()
    for d in heldout:
        held |= long_lines(d.text)
    kept, dropped = [], []
    for d in train:
        ll = long_lines(d.text)
        if ll and len(ll & held) / len(ll) > thresh:
            dropped.append(d.name)
        else:
            kept.append(d)
    return kept, dropped


def take_budget(docs, budget):
    out, used = [], 0
    for d in docs:
        if used >= budget:
            break
        out.append(d)
        used += len(d.text)
    return out


def dedupe(docs):
    seen, out = set(), []
    for d in docs:
        h = src.sha(d.text)
        if h not in seen:
            seen.add(h)
            out.append(d)
    return out


def wordnet_docs(synsets, rng, group=(15, 40)):
    """Groups dictionary entries into documents of 15-40 entries (synsets in shuffled order)."""
    docs, i = [], 0
    while i < len(synsets):
        k = rng.randint(*group)
        part = synsets[i:i + k]
        i += k
        docs.append(src.Doc("wordnet", part[0].name, "\n".join(src.wordnet_entry(s) for s in part)))
    return docs


def man_docs(rng, cache_dir, n_heldout_extra):
    files = src.man_files()
    rng.shuffle(files)
    ev, extra, train, used, seen = [], [], [], 0, set()
    eval_used = 0
    for path, pkg in files:
        if used >= BUDGET["man"]:
            break
        d = src.man_doc(path, cache_dir, package=pkg)
        if d is None:
            continue
        h = src.sha(d.text)
        if h in seen:
            continue
        seen.add(h)
        if eval_used < EVAL_BUDGET["man"]:
            if len(d.text) <= 6000:
                ev.append(d)
                eval_used += len(d.text)
                continue
        elif len(extra) < n_heldout_extra:
            extra.append(d)
            continue
        train.append(d)
        used += len(d.text)
    return ev, extra, train


def desc_first(d):
    desc = d.text.split("DESCRIPTION\n", 1)[-1]
    return chat.first_sentence(desc, 300)


def synset_word_entry(s, rng):
    m = s.meta
    return {"word": rng.choice(m["words"][:2]), "pos": m["pos"], "definition": m["definition"],
            "examples": m["examples"]}


def build_chat(rng, n, template, words, mans, problems, pyfuncs, cdecls):
    pool = []
    if words:
        pool += [lambda r: chat.word_turn(synset_word_entry(r.choice(words), r), r)] * 3
    if mans:
        pool += [lambda r: (lambda d: chat.man_turn(d.meta, desc_first(d), r))(r.choice(mans))] * 3
    if problems:
        pool += [lambda r: chat.arith_turn(r.choice(problems), r)] * 4
    if pyfuncs:
        pool += [lambda r: chat.py_turn(*r.choice(pyfuncs), r)]
    if cdecls:
        pool += [lambda r: chat.c_turn(*r.choice(cdecls), r)]
    pool += [chat.greeting_turn]
    return [chat.conversation(pool, rng, template) for _ in range(n)]


def code_snippets(docs):
    pyfuncs, cdecls = [], []
    for d in docs:
        if d.source == "pystd":
            mod = d.name[:-3].replace("/", ".").removesuffix(".__init__")
            pyfuncs += [(mod, name, code) for name, code in chat.python_functions(d.text)]
        else:
            cdecls += [(d.name, name, decl) for name, decl in chat.c_declarations(d.text)]
    return pyfuncs, cdecls


def file_info(path):
    data = path.read_bytes()
    text = data.decode("utf-8")
    return {"bytes": len(data), "chars": len(text), "documents": text.count(EOT),
            "sha256": hashlib.sha256(data).hexdigest()}


def atomic_write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="data/corpus")
    ap.add_argument("--eval-dir", default=str(EVAL_DIR))
    ap.add_argument("--cache", default=None, help="rendered man page cache (default OUT/.cache)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    eval_dir = Path(args.eval_dir).resolve()
    cache = Path(args.cache) if args.cache else out / ".cache"
    seed = args.seed
    t0 = time.time()

    def R(tag):
        return random.Random(f"{seed}:{tag}")

    # ---- prose sources
    log("man pages ...")
    man_ev, man_extra, man_train = man_docs(R("man"), cache, n_heldout_extra=150)
    log(f"  man: eval {len(man_ev)} + chat-only {len(man_extra)}, train {len(man_train)} ({time.time() - t0:.0f}s)")
    log("python docs ...")
    py_ev, _, py_rest = split_heldout(dedupe(src.pydoc_docs()), R("pydoc"), EVAL_BUDGET["pydoc"], max_doc=15_000)
    py_train = take_budget(py_rest, BUDGET["pydoc"])
    log("wordnet ...")
    syn = src.wordnet_synsets()
    rng = R("wordnet")
    rng.shuffle(syn)
    syn_ev_chat, syn_rest = syn[:3000], syn[3000:]
    wn_ev = wordnet_docs(syn_ev_chat, R("wordnet-eval-docs"))
    wn_ev = take_budget(wn_ev, EVAL_BUDGET["wordnet"])
    wn_train = take_budget(wordnet_docs(syn_rest, R("wordnet-docs")), BUDGET["wordnet"])
    train_words = syn_rest[: sum(len(d.text.split("\n")) for d in wn_train)]

    # ---- code sources
    log("code ...")
    ch_ev, ch_extra, ch_rest = split_heldout(dedupe(src.cheader_docs()), R("cheader"), EVAL_BUDGET["cheader"], n_extra=40, max_doc=12_000)
    ps_ev, ps_extra, ps_rest = split_heldout(dedupe(src.pystd_docs()), R("pystd"), EVAL_BUDGET["pystd"], n_extra=40, max_doc=12_000)
    ch_train = take_budget(ch_rest, BUDGET["cheader"])
    ps_train = take_budget(ps_rest, BUDGET["pystd"])

    held = man_ev + man_extra + py_ev + wn_ev + ch_ev + ch_extra + ps_ev + ps_extra
    dropped = {}
    for name, lst in (("man", man_train), ("pydoc", py_train), ("cheader", ch_train), ("pystd", ps_train)):
        kept, drop = drop_overlapping(lst, held)
        lst[:] = kept
        dropped[name] = drop
    log(f"  dropped near-duplicates of held-out docs: { {k: len(v) for k, v in dropped.items()} }")

    # ---- arithmetic
    log("arithmetic ...")
    ev_one = arith.generate(seed * 1000 + 101, N_ARITH_EVAL_JSONL, two_step_share=0.0)
    ev_two = arith.generate(seed * 1000 + 102, N_ARITH_EVAL_JSONL, two_step_share=1.0)
    ev_txt = arith.generate(seed * 1000 + 103, N_ARITH_EVAL_TEXT, two_step_share=0.5)
    ev_chat_probs = arith.generate(seed * 1000 + 104, 400, two_step_share=0.5)
    eval_q = frozenset(p["question"] for p in ev_one + ev_two + ev_txt + ev_chat_probs)
    tr_probs = arith.generate(seed, N_ARITH_TRAIN, two_step_share=0.5, exclude=eval_q)
    tr_chat_probs = arith.generate(seed * 1000 + 7, 6000, two_step_share=0.5, exclude=eval_q)

    # ---- chat
    log("chat ...")
    template = chat.load_template()
    tr_code = ch_train + ps_train
    pyf, cdl = code_snippets(tr_code)
    chat_train = build_chat(R("chat"), N_CHAT_TRAIN, template, train_words, man_train,
                            tr_chat_probs, pyf, cdl)
    pyf_e, cdl_e = code_snippets(ch_ev + ch_extra + ps_ev + ps_extra)
    chat_eval = build_chat(R("chat-eval"), N_CHAT_EVAL, template, syn_ev_chat, man_ev + man_extra,
                           ev_chat_probs, pyf_e, cdl_e)

    # ---- assemble domains (documents of a domain interleaved by a seeded shuffle)
    def mix(docs, tag):
        texts = [d.text for d in docs]
        R(tag).shuffle(texts)
        return join_docs(texts)

    train = {
        "prose": mix(man_train + py_train + wn_train, "mix-prose"),
        "code": mix(ch_train + ps_train, "mix-code"),
        "arith": join_docs(arith.problem_text(p) for p in tr_probs),
        "chat": join_docs(chat_train),
    }
    evals = {
        "prose": mix(man_ev + py_ev + wn_ev, "mix-prose-eval"),
        "code": mix(ch_ev + ps_ev, "mix-code-eval"),
        "arith": join_docs(arith.problem_text(p) for p in ev_txt),
        "chat": join_docs(chat_eval),
    }

    # ---- leakage checks
    checks = {}
    for dom in train:
        tl = long_lines(train[dom])
        el = long_lines(evals[dom])
        checks[dom] = {"eval_long_lines": len(el), "also_in_train": len(el & tl)}
    tr_q = {p["question"] for p in tr_probs + tr_chat_probs}
    checks["arith_heldout_questions_in_train"] = sum(q in tr_q for q in eval_q)
    checks["arith_heldout_questions_in_train_text"] = sum(
        1 for p in ev_one + ev_two + ev_txt if p["question"] in train["arith"] or p["question"] in train["chat"])
    assert checks["arith_heldout_questions_in_train"] == 0
    assert checks["arith_heldout_questions_in_train_text"] == 0

    # ---- write: train into a temp folder, then rename over
    tmp = out.parent / (out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "train").mkdir(parents=True)
    for dom, text in train.items():
        (tmp / "train" / f"{dom}.txt").write_text(text, encoding="utf-8")
    eval_dir.mkdir(parents=True, exist_ok=True)
    for dom, text in evals.items():  # checked above in corpus form, written in stream form (docs_format.py)
        atomic_write(eval_dir / f"{dom}.txt", join_stream(split_docs(text)))
    for name, probs in (("arith_one_step", ev_one), ("arith_two_step", ev_two)):
        atomic_write(eval_dir / f"{name}.jsonl", "".join(
            json.dumps({"question": p["question"], "answer": p["answer"]}, ensure_ascii=False) + "\n"
            for p in probs))

    manifest = {
        "made_by": "tools/train/build_corpus.py",
        "command": f".venv/bin/python tools/train/build_corpus.py --seed {seed} --out {args.out}",
        "seed": seed,
        "python": platform.python_version(),
        "packages": src.package_versions(),
        "separator": "train/*.txt: documents are each followed by '\\n<|endoftext|>\\n'; eval *.txt: by "
                     "'<|endoftext|>' alone (stream form, tools/train/docs_format.py)",
        "train": {dom: file_info(tmp / "train" / f"{dom}.txt") for dom in train},
        "eval": {f.name: file_info(f) if f.suffix == ".txt" else
                 {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
                 for f in sorted(eval_dir.iterdir()) if f.suffix in (".txt", ".jsonl")},
        "sources_train_chars": {
            "man": sum(len(d.text) for d in man_train), "pydoc": sum(len(d.text) for d in py_train),
            "wordnet": sum(len(d.text) for d in wn_train), "cheader": sum(len(d.text) for d in ch_train),
            "pystd": sum(len(d.text) for d in ps_train)},
        "sources_train_docs": {"man": len(man_train), "pydoc": len(py_train), "wordnet": len(wn_train),
                               "cheader": len(ch_train), "pystd": len(ps_train),
                               "arith_problems": len(tr_probs), "chat_conversations": len(chat_train)},
        "heldout_documents": {
            "man_eval": [d.name for d in man_ev], "man_chat_only": [d.name for d in man_extra],
            "pydoc_eval": [d.name for d in py_ev], "wordnet_synsets_heldout": len(syn_ev_chat),
            "cheader_eval": [d.name for d in ch_ev], "cheader_chat_only": [d.name for d in ch_extra],
            "pystd_eval": [d.name for d in ps_ev], "pystd_chat_only": [d.name for d in ps_extra]},
        "arith_seeds": {"train": seed, "train_chat": seed * 1000 + 7, "eval_one_step": seed * 1000 + 101,
                        "eval_two_step": seed * 1000 + 102, "eval_text": seed * 1000 + 103,
                        "eval_chat": seed * 1000 + 104},
        "dropped_train_near_duplicates": dropped,
        "leakage_checks": checks,
        "licenses": "Debian packages' own terms: man pages (various free licenses, see "
                    "/usr/share/doc/<pkg>/copyright), Python docs and stdlib (PSF License), WordNet 3.0 "
                    "(WordNet License), glibc/Linux headers (LGPL/GPL with syscall note)",
    }
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    out.mkdir(parents=True, exist_ok=True)
    (out / "train").mkdir(exist_ok=True)
    (out / "DONE").unlink(missing_ok=True)
    for dom in train:  # rename file by file: readers holding the old file keep reading it
        os.replace(tmp / "train" / f"{dom}.txt", out / "train" / f"{dom}.txt")
    os.replace(tmp / "MANIFEST.json", out / "MANIFEST.json")
    shutil.rmtree(tmp)
    (out / "DONE").write_text(json.dumps({"seed": seed, "manifest_sha256": hashlib.sha256(
        (out / "MANIFEST.json").read_bytes()).hexdigest()}) + "\n")
    for dom in train:
        log(f"  train {dom}: {manifest['train'][dom]['chars']:,} chars; eval {len(evals[dom]):,} chars")
    log(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
