#!/usr/bin/env python3
"""Golden logits of the bundled trained model (models/tiny-glm5) on held-out text, from transformers.

Usage (repository root): .venv/bin/python tools/oracle/make_bundled_golden.py [--model models/tiny-glm5]
        [--out tests/golden/models/tiny_glm5] [--tokens 96]

Writes into --out (no weights: `model_dir.txt` names the model folder, which the C++ golden test loads):
    input_ids.npy  int64 [T]        held-out prose tokenized by HF `tokenizers` (the model's tokenizer.json)
    positions.npy  int64 [R]        the positions whose logits are stored (every 4th, and every one past index_topk)
    logits.npy     float32 [R, V]   transformers 5.23, float32 (bf16 weights upcast), eager attention and experts
    ORACLE.json    command, versions, sha256 of the model files, margins
T is chosen larger than index_topk so that DSA selection is active. The window start moves through the held-out
file until every stored position has a top-1/top-2 logit margin > 1e-3 x max|logit| and every indexer top-k
boundary a relative gap > 1e-4 (so neither tie-breaking nor fp32 summation order can change the test's outcome).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import config_rope_parameters, indexer_scores, sha256_file, topk_boundary_gaps  # noqa: E402


def analyse(model, ids):
    """Logits plus the smallest indexer boundary gap over layers and rows."""
    captured = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        hooks.append(attn.register_forward_pre_hook(
            lambda m, a, kw, i=i: captured.__setitem__(("x", i), kw.get("hidden_states", a[0] if a else None)),
            with_kwargs=True))
        hooks.append(attn.q_a_layernorm.register_forward_hook(
            lambda m, a, out, i=i: captured.__setitem__(("q", i), out)))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    for h in hooks:
        h.remove()
    cfg = model.config
    rp = config_rope_parameters(cfg.to_dict())
    min_gap = float("inf")
    for i, layer in enumerate(model.model.layers):
        if layer.self_attn.indexer is None:
            continue
        s = indexer_scores(layer.self_attn.indexer, captured[("x", i)][0], captured[("q", i)][0],
                           float(rp["rope_theta"]), cfg.qk_rope_head_dim)
        gaps, _ = topk_boundary_gaps(s, cfg.index_topk)
        if gaps:
            min_gap = min(min_gap, min(g[1] for g in gaps))
    return logits, min_gap



def safe_window(model, all_ids, T, positions, verbose=False):
    """The first window of T tokens (starts 0, 16, 32, ...) whose logits at `positions` have a top-1/top-2
    margin > 1e-3 x max|logit| and whose indexer top-k boundaries a relative gap > 1e-4, so that float rounding
    cannot flip what a golden compares: (start, ids, logits at positions, margin, gap), or None."""
    for start in range(0, len(all_ids) - T, 16):
        ids = all_ids[start:start + T]
        logits, min_gap = analyse(model, ids)
        rows = logits[positions]
        top2 = rows.topk(2, dim=1).values
        margin = float((top2[:, 0] - top2[:, 1]).min() / rows.abs().max())
        if margin > 1e-3 and min_gap > 1e-4:
            return start, ids, rows, margin, min_gap
        if verbose:
            print(f"start {start}: margin {margin:.2e}, indexer gap {min_gap:.2e} -> next window")
    return None

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--out", default="tests/golden/models/tiny_glm5")
    ap.add_argument("--text", default=None, help="held-out text file (default MODEL/eval/prose.txt)")
    ap.add_argument("--tokens", type=int, default=96)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tok = tokenizers.Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    text = open(args.text or os.path.join(args.model, "eval", "prose.txt"), encoding="utf-8").read()
    all_ids = tok.encode(text, add_special_tokens=False).ids
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    cfg = model.config
    T = args.tokens
    assert T > cfg.index_topk, "the golden must exercise DSA selection"
    positions = sorted(set(range(0, T, 4)) | set(range(cfg.index_topk, T)))
    window = safe_window(model, all_ids, T, positions, verbose=True)
    if window is None:
        sys.exit("no window of the held-out text has safe margins")
    start, ids, rows, margin, min_gap = window

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "input_ids.npy"), np.array(ids, dtype=np.int64))
    np.save(os.path.join(args.out, "positions.npy"), np.array(positions, dtype=np.int64))
    np.save(os.path.join(args.out, "logits.npy"), rows.numpy().astype(np.float32))
    with open(os.path.join(args.out, "model_dir.txt"), "w") as f:
        f.write(args.model + "\n")
    oracle = {
        "command": " ".join([".venv/bin/python"] + sys.argv),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "numpy": np.__version__},
        "settings": "float32 (bf16 weights upcast), eager attention, eager experts, CPU, batch 1, no padding",
        "model_sha256": {f: sha256_file(os.path.join(args.model, f)) for f in sorted(os.listdir(args.model))
                         if f.endswith((".safetensors", ".json"))},
        "text_start_token": start, "T": T, "stored_positions": len(positions),
        "min_top1_top2_margin_rel": margin, "min_indexer_topk_gap_rel": min_gap,
    }
    with open(os.path.join(args.out, "ORACLE.json"), "w") as f:
        json.dump(oracle, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out}: T {T}, {len(positions)} positions, margin {margin:.2e}, indexer gap {min_gap:.2e}")


if __name__ == "__main__":
    main()
