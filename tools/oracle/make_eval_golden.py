#!/usr/bin/env python3
"""Golden sliding-window negative log-likelihoods for `whittle eval --task ppl`, from transformers.

The text tests/golden/eval/ppl_text.txt (written here, ~300 tokens of English prose) is tokenized with
Hugging Face `tokenizers` from models/tiny-glm5-random/tokenizer.json (`encode(text,
add_special_tokens=False)`), and GlmMoeDsaForCausalLM (transformers, fp32, eager attention and experts,
CPU, 1 thread) scores it with the strided recipe of the transformers docs ("Perplexity of fixed-length
models"), written here literally:

    for begin in range(0, n, stride):
        end = min(begin + ctx, n); trg_len = end - prev_end
        labels = ids[begin:end]; labels[:-trg_len] = -100   # only tokens the last window did not reach
        ... forward(ids[begin:end]) ...; prev_end = end; stop when end == n

Each label is scored with log_softmax over the first `tokenizer vocab` logits only (the model's embedding
has 2048 rows, the tokenizer 2000 ids; the rest are padding that whittle never counts), in float64 from
the fp32 logits. The first token is context only.

Cases: windows of 32 tokens (ctx <= index_topk, so every row attends to every key and the comparison is
exact): (ctx 32, stride 16), the same with the document-start token <|endoftext|> prepended (so every text
token is scored), (ctx 24, stride 23); and (ctx 64, stride 32), where the DSA indexer selects 32 of up to 64
keys. This random model has exact ties at the top-k boundary (rows whose 32nd and 33rd indexer scores are
both 0: ReLU zeroes every head), and torch.topk breaks ties in no documented order while whittle takes the
lower position; so for each window the oracle recomputes the indexer scores of both layers from HF's hidden
states (oracle_common.indexer_scores_w) and marks every token predicted at or after the first row whose
boundary gap is below 1e-4 of the row's largest |score| as `tie_affected` (a tie changes that row's hidden
state, hence later keys). Unaffected tokens must match exactly; the total over all tokens within 1e-4.

Run from the repository root:
    .venv/bin/python tools/oracle/make_eval_golden.py
Writes tests/golden/eval/ppl_text.txt and tests/golden/eval/ppl_golden.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys

sys.dont_write_bytecode = True  # keep tools/oracle free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import GlmMoeDsaForCausalLM  # noqa: E402

import oracle_common as oc  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODEL = "models/tiny-glm5-random"
OUT = "tests/golden/eval"
DOC_START = "<|endoftext|>"
CASES = [
    {"name": "ctx32_stride16", "ctx": 32, "stride": 16, "doc_start": None},
    {"name": "ctx32_stride16_doc_start", "ctx": 32, "stride": 16, "doc_start": DOC_START},
    {"name": "ctx24_stride23", "ctx": 24, "stride": 23, "doc_start": None},
    {"name": "ctx64_stride32_sparse", "ctx": 64, "stride": 32, "doc_start": None},
]
TIE_REL = 1e-4  # indexer top-k boundary gap / max|score| below which a row counts as a tie

TEXT = (
    "The river rises in the hills to the north of the town and runs south through a wide valley of farms "
    "and small woods. In spring the water is high and fast, and the old stone bridge is closed to carts; "
    "by late summer a child can wade across at the ford below the mill. The mill itself has not ground "
    "grain for forty years. Its wheel was taken down in 1983 and the building became a school for a "
    "while, then a library, and now it holds the town's records: birth and marriage registers, maps of "
    "every field, and the minutes of the council since it first met. Visitors who want to read them must "
    "write ahead, because the archive opens only on Tuesdays and Thursdays, from ten in the morning until "
    "four in the afternoon. The keeper, who has looked after the papers for twenty-two years, says that "
    "most people come to trace their families, but some come for the maps, and a few come simply because "
    "the building is quiet and the light through the tall windows is good for reading. Questions about "
    "the collection can be sent by post; replies usually take two or three weeks.\n"
)


@torch.no_grad()
def first_tie_row(model, hidden_states):
    """First query row of a window whose DSA top-k boundary is a (near) tie in any layer, else None."""
    cfg = model.config
    first = None
    for li, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        x = hidden_states[li][0]
        a = layer.input_layernorm(x)
        q_resid = attn.q_a_layernorm(attn.q_a_proj(a))
        scores = oc.indexer_scores(attn.indexer, a, q_resid, cfg.rope_parameters["rope_theta"], cfg.qk_rope_head_dim)
        gaps, _ = oc.topk_boundary_gaps(scores, cfg.index_topk)
        for t, rel, _ in gaps:
            if rel < TIE_REL:
                first = t if first is None else min(first, t)
                break
    return first


@torch.no_grad()
def sliding_nll(model, ids, ctx, stride, vocab):
    n = len(ids)
    x = torch.tensor([ids], dtype=torch.long)
    nll = [None] * n  # nll[p]: -log p(ids[p] | window context), None for unscored
    tie = [False] * n
    prev_end, windows = 0, 0
    for begin in range(0, n, stride):
        end = min(begin + ctx, n)
        trg_len = end - prev_end
        labels = x[:, begin:end].clone()
        labels[:, :-trg_len] = -100
        out = model(x[:, begin:end], use_cache=False, output_hidden_states=True)
        logits = out.logits[0].double()  # [w, V]
        tie_row = first_tie_row(model, out.hidden_states)
        logp = torch.log_softmax(logits[:, :vocab], dim=-1)
        windows += 1
        for j in range(1, end - begin):  # logits row j-1 predicts position j (the causal-LM shift)
            if labels[0, j] != -100:
                assert nll[begin + j] is None, "token scored twice"
                nll[begin + j] = float(-logp[j - 1, labels[0, j]])
                tie[begin + j] = tie_row is not None and j - 1 >= tie_row
        prev_end = end
        if end == n:
            break
    assert nll[0] is None and all(v is not None for v in nll[1:]), "every token but the first scored once"
    return nll[1:], tie[1:], windows


def main() -> None:
    os.chdir(REPO)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ppl_text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(TEXT)

    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    ids = tok.encode(TEXT, add_special_tokens=False).ids
    doc_id = tok.token_to_id(DOC_START)
    model = GlmMoeDsaForCausalLM.from_pretrained(
        MODEL, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager")
    model.eval()
    assert model.config.vocab_size >= vocab

    cases = []
    for c in CASES:
        seq = ([doc_id] if c["doc_start"] else []) + ids
        nll, tie, windows = sliding_nll(model, seq, c["ctx"], c["stride"], vocab)
        if c["ctx"] <= model.config.index_topk:
            assert not any(tie), "dense windows cannot have top-k ties"
        total = sum(nll)
        cases.append({**c, "scored_tokens": len(nll), "windows": windows, "total_nll": total,
                      "mean_nll": total / len(nll), "tie_affected_tokens": sum(tie), "nll": nll,
                      "tie_affected": tie})
        print(f"{c['name']}: {len(nll)} tokens, {windows} windows, total nll {total:.6f}, "
              f"ppl {torch.tensor(total / len(nll)).exp().item():.3f}, tie-affected tokens {sum(tie)}")

    golden = {
        "oracle": {
            "command": ".venv/bin/python tools/oracle/make_eval_golden.py",
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
            "model": MODEL,
            "setup": "from_pretrained(dtype=float32, attn_implementation=eager, experts_implementation=eager), "
                     "CPU, 1 thread, deterministic algorithms; log_softmax over the first tokenizer-vocab logits "
                     "in float64",
        },
        "text_file": "ppl_text.txt",
        "text_bytes": len(TEXT.encode("utf-8")),
        "tokenizer_vocab": vocab,
        "doc_start_id": doc_id,
        "ids": ids,
        "cases": cases,
    }
    with open(os.path.join(OUT, "ppl_golden.json"), "w") as f:
        f.write(json.dumps(golden, indent=1) + "\n")
    print(f"{len(ids)} tokens, {len(TEXT.encode('utf-8'))} bytes -> {OUT}/ppl_golden.json")


if __name__ == "__main__":
    main()
