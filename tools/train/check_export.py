#!/usr/bin/env python3
"""Check an exported model folder: dtypes on disk, transformers loads it, and `whittle logits` agrees with
transformers' fp32 logits on held-out text (prefill and decode).

    .venv/bin/python tools/train/check_export.py models/tiny-glm5 [--whittle build-train/whittle] [--tokens 200]

transformers runs in fp32 over the bf16 weights (attn/experts "eager", CPU), like the goldens in
tools/oracle. The sequence is longer than index_topk, so DSA selection is active. For each domain it prints
max|Δ|/max|logit|, the number of positions whose arg-max differs, and the number of (layer, row) pairs whose
k-th and (k+1)-th indexer scores are within 1e-4·max (a near-tie at the top-k boundary can legitimately flip
the selection between implementations; see glm_moe_dsa_vs_transformers.md D4). The last two columns
compare whittle with transformers run with whittle's documented tie rule (lower position first, via a
stable sort of the same scores): they isolate everything but the tie-break.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_format import join_stream  # noqa: E402
from train import DOMAINS, indexer_scores, load_docs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@torch.no_grad()
def stable_topk_forward(self, hidden_states, q_resid, position_embeddings, attention_mask, position_ids,
                        past_key_values=None):
    """transformers' indexer (same scores), but ties at the top-k boundary go to the lower position."""
    assert past_key_values is None
    s = indexer_scores(self, hidden_states, q_resid, position_embeddings, attention_mask)
    k = min(self.index_topk, s.shape[-1])
    return torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :k].to(torch.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--whittle", default="build-train/whittle")
    ap.add_argument("--eval-dir", default="models/tiny-glm5/eval")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--modes", default="prefill,decode")
    ap.add_argument("--json-out", default=None, help="also write the results here")
    a = ap.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(2)
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    mdir = Path(a.model)
    dtypes = {}
    with safe_open(mdir / "model.safetensors", "pt") as f:
        for k in f.keys():
            dtypes.setdefault(str(f.get_slice(k).get_dtype()), []).append(k)
    bad = [k for dt, ks in dtypes.items() for k in ks if (dt == "F32") != k.endswith("e_score_correction_bias")]
    nparam = 0
    with safe_open(mdir / "model.safetensors", "pt") as f:
        for k in f.keys():
            nparam += int(np.prod(f.get_slice(k).get_shape()))
    print(f"safetensors: {({dt: len(ks) for dt, ks in dtypes.items()})} tensors, {nparam} values, "
          f"{(mdir / 'model.safetensors').stat().st_size} bytes; wrong dtype: {bad or 'none'}")

    model = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    cfg = model.config
    tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    # capture indexer inputs to measure top-k boundary gaps
    captured = {}
    for i, l in enumerate(model.model.layers):
        def pre(mod, args, kwargs, i=i):
            captured[i] = (args, kwargs)
        l.self_attn.indexer.register_forward_pre_hook(pre, with_kwargs=True)
    results = {}
    print(f"{'domain':<7} {'mode':<8} {'T':>4} {'max|d|/max|g|':>14} {'argmax diff':>11} {'near-ties':>9}"
          f" {'stable-tie rel':>14} {'argmax diff':>11}")
    for d in DOMAINS:
        text = join_stream(load_docs(Path(a.eval_dir) / f"{d}.txt")[:50])  # the stream training sees
        ids = tok.encode(text, add_special_tokens=False).ids[: a.tokens]
        x = torch.tensor([ids])
        with torch.no_grad():
            ref = model(input_ids=x, use_cache=False).logits[0].float().numpy()
            ties = zero_ties = 0
            for i, (args, kwargs) in captured.items():
                ix = model.model.layers[i].self_attn.indexer
                hs, qr, pe, am = args[:4]
                s = indexer_scores(ix, hs, qr, pe, am)[0]  # [S, T]
                k = ix.index_topk
                for t in range(k, s.shape[0]):  # rows with more than k visible keys
                    v = torch.sort(s[t, : t + 1], descending=True).values
                    if (v[k - 1] - v[k]).abs() <= 1e-4 * v.abs().max():
                        ties += 1
                        zero_ties += int(v[k - 1] == 0 and v[k] == 0)
            # the same model with whittle's documented tie rule at the top-k boundary (lower position first)
            for l in model.model.layers:
                l.self_attn.indexer.forward = types.MethodType(stable_topk_forward, l.self_attn.indexer)
            ref_stable = model(input_ids=x, use_cache=False).logits[0].float().numpy()
            for l in model.model.layers:
                del l.self_attn.indexer.forward
        scale = np.abs(ref).max()
        for mode in a.modes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "logits.npy")
                subprocess.run([a.whittle, "logits", str(mdir), "--ids", ",".join(map(str, ids)), "--out", out,
                                "--mode", mode], check=True, stderr=subprocess.DEVNULL)
                got = np.load(out)
            rel = float(np.abs(got - ref).max() / scale)
            nd = int((got.argmax(1) != ref.argmax(1)).sum())
            rel_s = float(np.abs(got - ref_stable).max() / scale)
            nd_s = int((got.argmax(1) != ref_stable.argmax(1)).sum())
            results[f"{d}/{mode}"] = {"T": len(ids), "rel": rel, "argmax_diff": nd, "near_ties": ties,
                                      "zero_ties": zero_ties, "rel_stable_ties": rel_s, "argmax_diff_stable_ties": nd_s}
            print(f"{d:<7} {mode:<8} {len(ids):>4} {rel:>14.2e} {nd:>11} {ties:>9} {rel_s:>14.2e} {nd_s:>11}")
    # a greedy arithmetic sample through transformers
    q = json.loads((Path(a.eval_dir) / "arith_one_step.jsonl").read_text().splitlines()[0])
    p = tok.encode(q["question"] + "\n", add_special_tokens=False).ids
    with torch.no_grad():
        g = model.generate(torch.tensor([p]), max_new_tokens=40, do_sample=False)
    print("greedy sample:", json.dumps(tok.decode(g[0].tolist(), skip_special_tokens=False)))
    print("expected     :", json.dumps(q["question"] + "\n" + q["answer"]))
    print(json.dumps(results))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"whittle": a.whittle, "results": results,
                                                "greedy_sample": tok.decode(g[0].tolist())}, indent=1) + "\n")


if __name__ == "__main__":
    main()
