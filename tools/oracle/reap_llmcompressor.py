#!/usr/bin/env python3
"""llm-compressor's REAP (REAPPruningModifier) on given calibration token ids, compared with whittle's.

Usage (repository root):
    .venv/bin/python tools/oracle/reap_llmcompressor.py --ids CALIB.npy --out DIR [--model models/tiny-glm5]
        [--ratio 0.25] [--pipelines basic,sequential] [--threads 2]
        [--whittle OUT/reap_report.json] [--whittle-sequential OUT_SEQ/reap_report.json]

CALIB.npy is int32/int64 [samples, seqlen], e.g. what `whittle prune --save-calibration CALIB.npy` writes, so that
both sides see exactly the same tokens. Each row is one llm-compressor sample: a `datasets.Dataset` with
`input_ids` and an all-ones `attention_mask`, batch 1, no padding, no shuffling, every token routed and counted
(llm-compressor applies no mask, reap_vs_code D5; there is none to apply here).

Each pipeline runs in its own subprocess (llm-compressor keeps a global session):
  * basic:      statistics of the unpruned model; every MoE layer is pruned once, after all batches
                (the pipeline fires one SEQUENTIAL_EPOCH_END at the end) -> reference for whittle's default.
  * sequential: llm-compressor's default for REAP (`pipeline="independent"` picks it). Layer by layer:
                calibrate layer L, SEQUENTIAL_EPOCH_END prunes it, then (propagate_error=True, the default) a
                second pass through the pruned layer L makes layer L+1's inputs -> reference for
                `whittle prune --sequential` (reap_vs_code D2).
Model: transformers `from_pretrained(dtype=float32, attn_implementation="eager", experts_implementation="eager")`,
so the bf16 checkpoint is upcast exactly and the experts (LinearExperts2D, linearized by oneshot) run in fp32;
norms are fp32, accumulators f64 (llm-compressor's own). `moe_calibrate_all_experts=False` (routed tokens only,
as the REAP examples set it).

Scores are read from the modifier itself: `on_sequential_epoch_end` is wrapped in this process (no file of
llm-compressor is edited) to copy each layer's REAPSaliencyTracker (f64 sum of g*||f||, f64 count) just before it
is consumed, and `_retained_experts` (the kept set llm-compressor chose) just after. Score = sum / max(count, 1).

--indexer-ties lowest-index (diagnostic): transformers' DSA indexer takes torch.topk of ReLU-floored scores, and
rows whose 64th and 65th scores are both exactly 0.0 let torch pick among tied keys; whittle takes the lower
position. With this flag the oracle process breaks ties the same way (GlmMoeDsaIndexer.forward copied with a
stable sort), counts the tied rows per layer, and the comparison then isolates REAP itself.

Writes into --out:
    llmcompressor_reap.json   per pipeline: per layer count[], sum_saliency[], score[], kept[]; timings
    comparison.json           the numbers printed (when a whittle report is given)
    ORACLE.json               command, versions, sha256 of the ids and of the model files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, HERE)
from oracle_common import sha256_file  # noqa: E402


# --------------------------------------------------------------------------------------------------------------
# Diagnostic: DSA indexer ties broken by the lower key index
# --------------------------------------------------------------------------------------------------------------


INDEXER_TIES: dict[int, list[int]] = {}  # layer -> [rows with a tie at the top-k boundary, rows selecting]


def patch_indexer_ties() -> None:
    """--indexer-ties lowest-index: GlmMoeDsaIndexer.forward with its final `index_scores.topk(k)` replaced by a
    stable descending sort, so that among keys with equal index scores the lower position is selected (what
    whittle's top_k does). The indexer's scores are ReLU-floored, so a query row can have more than k - (visible
    keys with a positive score) keys at exactly 0.0 at its top-k boundary; torch.topk's choice among them is
    unspecified. Everything else is transformers 5.23's code, copied."""
    import torch
    import torch.nn.functional as F
    from transformers.models.glm_moe_dsa import modeling_glm_moe_dsa as M

    def forward(self, hidden_states, q_resid, position_embeddings, attention_mask, position_ids,
                past_key_values=None):
        batch_size, seq_len, _ = hidden_states.shape
        cos, sin = position_embeddings
        q = self.wq_b(q_resid).view(batch_size, seq_len, self.n_heads, self.head_dim)
        q_rot, q_pass = torch.split(q, [self.qk_rope_head_dim, self.head_dim - self.qk_rope_head_dim], dim=-1)
        k = self.k_norm(self.wk(hidden_states)).unsqueeze(2)
        k_rot, k_pass = torch.split(k, [self.qk_rope_head_dim, self.head_dim - self.qk_rope_head_dim], dim=-1)
        q_rot, k_rot = M.apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin, unsqueeze_dim=2)
        q = torch.cat([q_rot, q_pass], dim=-1)
        k = torch.cat([k_rot, k_pass], dim=-1).squeeze(2)
        if past_key_values is not None:
            k = past_key_values.update_indexer(k, self.layer_idx)
        scores = F.relu(torch.matmul(q.float(), k.transpose(-1, -2).float().unsqueeze(1)) * self.softmax_scale)
        weights = self.weights_proj(hidden_states.to(self.weights_proj.weight.dtype)).float() * (self.n_heads**-0.5)
        index_scores = torch.matmul(weights.unsqueeze(-2), scores).squeeze(-2)
        if attention_mask.dtype == torch.bool:
            index_scores = index_scores.masked_fill(~attention_mask, float("-inf"))
        else:
            index_scores = index_scores + attention_mask
        topk = min(self.index_topk, index_scores.shape[-1])
        values, order = torch.sort(index_scores, dim=-1, descending=True, stable=True)
        if topk < values.shape[-1]:
            selecting = values[..., topk] > -1e30  # more than topk visible keys (masked: -inf or dtype min)
            tied = selecting & (values[..., topk - 1] == values[..., topk])
            c = INDEXER_TIES.setdefault(int(self.layer_idx), [0, 0])
            c[0] += int(tied.sum())
            c[1] += int(selecting.sum())
        return order[..., :topk].to(torch.int32)

    M.GlmMoeDsaIndexer.forward = forward


# --------------------------------------------------------------------------------------------------------------
# Worker: one llm-compressor oneshot run in a fresh process
# --------------------------------------------------------------------------------------------------------------


def worker(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import llmcompressor.modifiers.pruning.reap.base as reap_base
    from llmcompressor import oneshot
    from llmcompressor.core import LifecycleCallbacks
    from llmcompressor.modifiers.pruning.reap import REAPPruningModifier

    ids = np.load(args.ids)
    if ids.ndim != 2:
        sys.exit(f"{args.ids}: expected [samples, seqlen], got shape {ids.shape}")

    captured: dict[str, dict] = {}
    times: dict[str, float] = {}

    # --- capture the statistics before llm-compressor deletes them (monkeypatch, this process only) ---
    original_epoch_end = reap_base.REAPPruningModifier.on_sequential_epoch_end

    def epoch_end(self, state, event, **kw):
        pending = []
        for name, tracker in self._saliency_trackers.items():
            if tracker.total_count > 0:
                captured[name] = {
                    "sum_saliency": tracker.sum_saliency.detach().to("cpu", torch.float64).tolist(),
                    "count": tracker.count.detach().to("cpu", torch.float64).tolist(),
                    "epoch": times.get("epochs", 0),
                }
                pending.append(name)
        out = original_epoch_end(self, state, event, **kw)
        for name in pending:
            captured[name]["kept"] = list(self._retained_experts[name])
        times["epochs"] = times.get("epochs", 0) + 1
        return out

    reap_base.REAPPruningModifier.on_sequential_epoch_end = epoch_end
    if args.indexer_ties == "lowest-index":
        patch_indexer_ties()

    # --- calibration time: from the pipeline's calibration_start to its calibration_end ---
    original_start = LifecycleCallbacks.calibration_start.__func__
    original_end = LifecycleCallbacks.calibration_end.__func__

    def cal_start(cls, *a, **kw):
        times.setdefault("calibration_start", time.perf_counter())
        return original_start(cls, *a, **kw)

    def cal_end(cls, *a, **kw):
        times["calibration_end"] = time.perf_counter()
        return original_end(cls, *a, **kw)

    LifecycleCallbacks.calibration_start = classmethod(cal_start)
    LifecycleCallbacks.calibration_end = classmethod(cal_end)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager"
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    t1 = time.perf_counter()
    ds = Dataset.from_dict(
        {
            "input_ids": [row.astype(np.int64).tolist() for row in ids],
            "attention_mask": [[1] * ids.shape[1] for _ in range(ids.shape[0])],
        }
    )
    modifier = REAPPruningModifier(sparsity=args.ratio)
    t2 = time.perf_counter()
    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=ds,
        recipe=modifier,
        num_calibration_samples=int(ids.shape[0]),
        max_seq_length=int(ids.shape[1]),
        batch_size=1,
        shuffle_calibration_samples=False,
        moe_calibrate_all_experts=False,
        pipeline=args.worker,
    )
    t3 = time.perf_counter()

    # what precision the experts ran in (after linearization)
    expert_dtypes = sorted({str(p.dtype) for n, p in model.named_parameters() if ".mlp.experts." in n})
    layers = []
    for name in sorted(captured, key=lambda n: int(n.split(".")[2])):
        c = captured[name]
        count = c["count"]
        sums = c["sum_saliency"]
        layers.append(
            {
                "name": name,
                "layer": int(name.split(".")[2]),
                "count": count,
                "sum_saliency": sums,
                "score": [s / max(n, 1.0) for s, n in zip(sums, count)],
                "kept": c["kept"],
                "pruned_at_epoch": c["epoch"],
            }
        )
    tokens = int(ids.shape[0] * ids.shape[1])
    cal = times["calibration_end"] - times["calibration_start"]
    result = {
        "pipeline": args.worker,
        "samples": int(ids.shape[0]),
        "seqlen": int(ids.shape[1]),
        "tokens": tokens,
        "ratio": args.ratio,
        "threads": args.threads,
        "expert_param_dtypes": expert_dtypes,
        "experts_after": int(model.config.n_routed_experts),
        "seconds": {
            "load_model": t1 - t0,
            "dataset": t2 - t1,
            "oneshot_total": t3 - t2,
            "calibration": cal,
        },
        "tokens_per_s_calibration": tokens / cal,
        "tokens_per_s_oneshot": tokens / (t3 - t2),
        "layers": layers,
    }
    if args.indexer_ties == "lowest-index":
        # query rows whose k-th and (k+1)-th index scores are equal, per layer, over every indexer forward
        # (the sequential pipeline runs each layer twice: calibration and propagation)
        result["indexer_boundary_ties"] = {str(k): {"tied_rows": v[0], "selecting_rows": v[1]}
                                           for k, v in sorted(INDEXER_TIES.items())}
    with open(args.result, "w") as f:
        json.dump(result, f)


# --------------------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------------------


def rel(a: float, b: float) -> float:
    """|a - b| / |b| (0 when both are 0)."""
    if a == b:
        return 0.0
    return abs(a - b) / abs(b) if b != 0 else float("inf")


def median(xs):
    s = sorted(xs)
    n = len(s)
    return 0.0 if n == 0 else (s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2]))


def whittle_layers(report: dict) -> dict[int, dict]:
    out = {}
    for L in report["layers"]:
        ex = L["experts"]
        out[int(L["layer"])] = {
            "count": [e["count"] for e in ex],
            "score": [e["score"] for e in ex],
            "sum_gate_norm": [e["sum_gate_norm"] for e in ex],
            "kept": list(L["kept"]),
        }
    return out


def compare_scores(a: dict[int, dict], b: dict[int, dict], name_a: str, name_b: str) -> dict:
    """Per layer: max relative score difference of a against b, count agreement and kept-set agreement."""
    rows = []
    for L in sorted(set(a) & set(b)):
        sa, sb = a[L]["score"], b[L]["score"]
        ca, cb = a[L]["count"], b[L]["count"]
        rels = [rel(x, y) for x, y in zip(sa, sb)]
        ka, kb = set(a[L]["kept"]), set(b[L]["kept"])
        # margin at the cut of b's ranking: how close the lowest kept and highest dropped scores are
        kept_scores = sorted(sb[e] for e in kb)
        dropped_scores = sorted(sb[e] for e in range(len(sb)) if e not in kb)
        cut_gap = (kept_scores[0] - dropped_scores[-1]) / kept_scores[0] if dropped_scores and kept_scores[0] else None
        rows.append(
            {
                "layer": L,
                "max_rel_score_diff": max(rels),
                "median_rel_score_diff": median(rels),
                "max_abs_count_diff": max(abs(x - y) for x, y in zip(ca, cb)),
                "tokens_routed_a": sum(ca),
                "tokens_routed_b": sum(cb),
                "kept_same": ka == kb,
                "kept_only_" + name_a: sorted(ka - kb),
                "kept_only_" + name_b: sorted(kb - ka),
                "cut_rel_gap_" + name_b: cut_gap,
            }
        )
    return {"a": name_a, "b": name_b, "layers": rows}


def shift(before: dict[int, dict], after: dict[int, dict], name: str) -> dict:
    """How much observing the pruned model (sequential) moves scores and kept sets, per layer."""
    rows = []
    all_rels = []
    for L in sorted(set(before) & set(after)):
        rels = [rel(x, y) for x, y in zip(after[L]["score"], before[L]["score"])]
        all_rels += rels
        kb, ka = set(before[L]["kept"]), set(after[L]["kept"])
        rows.append(
            {
                "layer": L,
                "median_rel_change": median(rels),
                "max_rel_change": max(rels),
                "kept_changed": len(ka - kb),
                "newly_kept": sorted(ka - kb),
                "newly_dropped": sorted(kb - ka),
            }
        )
    return {
        "name": name,
        "layers": rows,
        "all_layers": {
            "median_rel_change": median(all_rels),
            "max_rel_change": max(all_rels) if all_rels else 0.0,
            "kept_changed": sum(r["kept_changed"] for r in rows),
        },
    }


def fmt_cmp(c: dict) -> str:
    a, b = c["a"], c["b"]
    lines = [f"{a} vs {b}", f"{'layer':>5} {'max rel score diff':>19} {'median':>9} {'max |count diff|':>16} "
             f"{'kept same':>9}  differences"]
    for r in c["layers"]:
        diff = "" if r["kept_same"] else f"only {a}: {r['kept_only_' + a]}, only {b}: {r['kept_only_' + b]}"
        lines.append(f"{r['layer']:>5} {r['max_rel_score_diff']:>19.3e} {r['median_rel_score_diff']:>9.2e} "
                     f"{r['max_abs_count_diff']:>16g} {str(r['kept_same']):>9}  {diff}")
    return "\n".join(lines)


def fmt_shift(s: dict) -> str:
    lines = [f"shift {s['name']}", f"{'layer':>5} {'median rel change':>17} {'max rel change':>14} "
             f"{'kept changed':>12}  newly kept / newly dropped"]
    for r in s["layers"]:
        lines.append(f"{r['layer']:>5} {r['median_rel_change']:>17.2%} {r['max_rel_change']:>14.2%} "
                     f"{r['kept_changed']:>12}  {r['newly_kept']} / {r['newly_dropped']}")
    t = s["all_layers"]
    lines.append(f"{'all':>5} {t['median_rel_change']:>17.2%} {t['max_rel_change']:>14.2%} {t['kept_changed']:>12}")
    return "\n".join(lines)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in ["torch", "transformers", "llmcompressor", "compressed-tensors", "accelerate", "datasets",
              "loguru", "numpy", "safetensors", "tokenizers"]:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--ids", required=True, help="calibration ids .npy [samples, seqlen]")
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--out", help="output folder (required unless --worker)")
    ap.add_argument("--pipelines", default="basic,sequential")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--whittle", help="reap_report.json of `whittle prune` (default: unpruned statistics)")
    ap.add_argument("--whittle-sequential", help="reap_report.json of `whittle prune --sequential`")
    ap.add_argument("--indexer-ties", choices=["torch", "lowest-index"], default="torch",
                    help="torch: transformers unchanged (default); lowest-index: diagnostic, DSA indexer ties at its "
                         "top-k boundary go to the lower key position, as in whittle")
    ap.add_argument("--worker", choices=["basic", "sequential"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.out:
        ap.error("--out is required")
    os.makedirs(args.out, exist_ok=True)

    results = {}
    for p in [x for x in args.pipelines.split(",") if x]:
        res_path = os.path.join(args.out, f".{p}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", p, "--result", res_path, "--model", args.model,
               "--ids", args.ids, "--ratio", str(args.ratio), "--threads", str(args.threads),
               "--indexer-ties", args.indexer_ties]
        t = time.perf_counter()
        log_path = os.path.join(args.out, f"{p}.log")
        with open(log_path, "w") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            sys.exit(f"llm-compressor {p} pipeline failed ({r.returncode}); see {log_path}")
        with open(res_path) as f:
            results[p] = json.load(f)
        os.remove(res_path)
        results[p]["seconds"]["process_wall"] = time.perf_counter() - t
        print(f"{p}: calibration {results[p]['seconds']['calibration']:.1f} s = "
              f"{results[p]['tokens_per_s_calibration']:.0f} tokens/s "
              f"(oneshot {results[p]['seconds']['oneshot_total']:.1f} s, process {results[p]['seconds']['process_wall']:.1f} s)",
              flush=True)

    with open(os.path.join(args.out, "llmcompressor_reap.json"), "w") as f:
        json.dump(results, f, indent=1)

    lc = {p: {L["layer"]: L for L in r["layers"]} for p, r in results.items()}
    comparison = {}
    text = []
    wh = {}
    if args.whittle:
        with open(args.whittle) as f:
            wh["default"] = whittle_layers(json.load(f))
    if args.whittle_sequential:
        with open(args.whittle_sequential) as f:
            wh["sequential"] = whittle_layers(json.load(f))
    for p, w in [("basic", "default"), ("sequential", "sequential")]:
        if p in lc and w in wh:
            c = compare_scores(lc[p], wh[w], f"llmc_{p}", f"whittle_{w}")
            comparison[f"llmc_{p}_vs_whittle_{w}"] = c
            text.append(fmt_cmp(c))
    if "basic" in lc and "sequential" in lc:
        s = shift(lc["basic"], lc["sequential"], "llm-compressor basic -> sequential")
        comparison["shift_llmc"] = s
        text.append(fmt_shift(s))
    if "default" in wh and "sequential" in wh:
        s = shift(wh["default"], wh["sequential"], "whittle default -> --sequential")
        comparison["shift_whittle"] = s
        text.append(fmt_shift(s))
    for p, r in results.items():
        if "indexer_boundary_ties" in r:
            print(f"{p}: DSA indexer rows with equal k-th and (k+1)-th scores (tied_rows/selecting_rows) per layer: "
                  + ", ".join(f"L{k} {v['tied_rows']}/{v['selecting_rows']}" for k, v in r["indexer_boundary_ties"].items()))
    print("\n\n".join(text))
    if comparison:
        with open(os.path.join(args.out, "comparison.json"), "w") as f:
            json.dump(comparison, f, indent=1)

    model_files = {}
    for name in sorted(os.listdir(args.model)):
        path = os.path.join(args.model, name)
        if os.path.isfile(path) and (name.endswith(".json") or name.endswith(".safetensors")):
            model_files[name] = sha256_file(path)
    oracle = {
        "made_by": "tools/oracle/reap_llmcompressor.py",
        "command": " ".join([".venv/bin/python"] + [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "nproc": os.cpu_count(), "threads": args.threads},
        "ids": {"path": args.ids, "sha256": sha256_file(args.ids)},
        "model": {"path": args.model, "sha256": model_files},
        "whittle_reports": {k: v for k, v in [("default", args.whittle), ("sequential", args.whittle_sequential)] if v},
        "settings": {
            "ratio": args.ratio,
            "oneshot": "batch_size=1, shuffle_calibration_samples=False, moe_calibrate_all_experts=False, "
                       "num_calibration_samples=rows, max_seq_length=seqlen, pipeline=basic|sequential",
            "model_load": "from_pretrained(dtype=float32, attn_implementation=eager, experts_implementation=eager)",
            "indexer_ties": args.indexer_ties,
            "patches": "REAPPruningModifier.on_sequential_epoch_end and LifecycleCallbacks.calibration_start/end "
                       "wrapped in the worker process to read the saliency trackers and time calibration; no "
                       "llm-compressor or transformers behaviour changed"
                       + ("" if args.indexer_ties == "torch" else "; GlmMoeDsaIndexer.forward's top-k replaced by a "
                          "stable sort (ties to the lower key position)"),
        },
        "outputs": {n: sha256_file(os.path.join(args.out, n)) for n in ["llmcompressor_reap.json", "comparison.json"]
                    if os.path.exists(os.path.join(args.out, n))},
    }
    with open(os.path.join(args.out, "ORACLE.json"), "w") as f:
        json.dump(oracle, f, indent=1)


if __name__ == "__main__":
    main()
