#!/usr/bin/env python3
"""REAP statistics of the bundled model (models/tiny-glm5) from Hugging Face transformers, with the model's true
routing, and transformers' logits of the checkpoint `whittle prune` writes (issue 9, "checked against the outside").

Usage (repository root; whittle built first):
    .venv/bin/python tools/oracle/make_reap_golden.py [--model models/tiny-glm5]
        [--calib models/tiny-glm5/calibration.txt] [--out tests/golden/reap] [--whittle build/whittle]

1. Calibration tokens, reproduced here without whittle: the documents of --calib read as
   src/prune/calibration.cc reads a plain-text file (corpus form split on "\\n<|endoftext|>\\n", stream form on
   "<|endoftext|>", trailing newlines dropped, blank documents skipped), shuffled by the SplitMix64-driven
   Fisher-Yates permutation of calibration_permutation(n, seed), tokenized with HF `tokenizers` (the model's
   tokenizer.json, added tokens parsed, add_special_tokens=False), each followed by one <|endoftext|>, the stream cut
   into `samples` sequences of `seqlen` tokens. The C++ test asserts that whittle's load_calibration gives exactly
   these ids.
2. Statistics: GlmMoeDsaForCausalLM.from_pretrained(fp32, eager attention, eager experts), CPU, each sample its own
   batch-1 sequence (positions 0..seqlen-1, no padding, use_cache=False). Forward hooks on every sparse layer's
   `mlp.gate` (GlmMoeDsaTopkRouter: the indices and weights the experts are combined with, i.e. bias-corrected
   group-limited selection, renormalised sigmoid x routed_scaling_factor) and on `mlp` (GlmMoeDsaMoE: its input and
   output). In the hook every routed expert's output is recomputed from the fused `experts.gate_up_proj` [E, 2I, H]
   (gate rows first) / `experts.down_proj` [E, H, I] parameters, and sum_k gate*out + shared_experts(x) (shared
   recomputed from its weights) must reproduce the module's output. Per (MoE layer, routed expert), over the tokens
   routed to it, in float64: count, sum gate*||out||_2, sum ||out||_2, sum gate, max ||out||_2 (out = the expert
   MLP's fp32 output before the gate multiply). The routing is also recomputed (oracle_common.route) and must pick
   the same experts; the smallest top-k boundary gap of the biased scores and the smallest DSA indexer top-k gap
   are reported (a routing or key-selection decision that could flip on float rounding would make the golden
   fragile). Exact ties at the indexer's top-k boundary are broken toward the lower key index (StableIndexerTopk:
   torch.topk leaves their order unspecified, and the row of every <|endoftext|> past position index_topk ties all
   its keys at score 0); the statistics of plain transformers are computed too and their difference recorded.
3. REAP scores (sum_gate_norm / count, 0 if count 0) and the kept sets at ratios 0.25, 0.40, 0.50 (each layer drops
   int(32 * ratio) experts; drop order: score ascending, then count ascending, then index descending, as
   src/prune/expert_selection.cc), with the smallest relative score gap at each cut.
4. `whittle prune` (--whittle) with the same calibration options at ratio 0.25 into a temporary folder. Its
   reap_report.json kept sets must equal the oracle's. transformers loads that folder (output_loading_info: no
   missing, unexpected or mismatched keys; every parameter equal to the file's value) and computes logits of two
   held-out windows (models/tiny-glm5/eval/prose.txt and chat.txt, T > index_topk so DSA selection is active),
   chosen so that every stored position has a top-1/top-2 margin > 1e-3 x max|logit| and every indexer top-k
   boundary a relative gap > 1e-4.

Writes into --out:
    calib_ids.npy       int64 [samples, seqlen]     the calibration tokens
    golden.json         calibration options, per MoE layer and expert the five statistics (float64, exact
                        round-trip decimal) and the REAP score, kept/dropped sets and score gaps per ratio
    pruned_ids.npy      int64 [2, T]                inputs of the pruned-model check
    pruned_positions.npy int64 [P]                  positions whose logits are stored
    pruned_logits.npy   float32 [2, P, vocab]       transformers' logits of whittle's pruned checkpoint
    ORACLE.json         command, versions, sha256 of inputs and outputs, every check
Running it twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import GlmMoeDsaForCausalLM  # noqa: E402

sys.dont_write_bytecode = True  # keep tools/oracle free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_bundled_golden import safe_window  # noqa: E402
from oracle_common import (  # noqa: E402
    config_rope_parameters,
    indexer_scores,
    load_checkpoint_tensors,
    route,
    sha256_file,
    topk_boundary_gaps,
)

EOT = "<|endoftext|>"
CORPUS_SEP = "\n" + EOT + "\n"
CORPUS_TAIL = "\n" + EOT
ASCII_SPACE = " \t\n\r\f\v"  # calibration.cc is_space
RATIOS = (0.25, 0.40, 0.50)
PRUNE_RATIO = 0.25
STAT_NAMES = ("count", "sum_gate_norm", "sum_norm", "sum_gate", "max_norm")
MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------------------------
# Calibration tokens (src/prune/calibration.cc, re-implemented)
# ----------------------------------------------------------------------------------------------
def is_blank(s: str) -> bool:
    return all(c in ASCII_SPACE for c in s)


def read_text_documents(path: str) -> list[str]:
    """calibration.cc read_text_documents."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")  # strict: whittle refuses invalid UTF-8 too
    assert not is_blank(text), f"{path}: empty"
    corpus_form = CORPUS_SEP in text
    sep = CORPUS_SEP if corpus_form else EOT
    docs = []
    pos = 0
    while pos < len(text):
        end = text.find(sep, pos)
        if end < 0:
            end = len(text)
        doc = text[pos:end]
        if corpus_form and end == len(text) and doc.endswith(CORPUS_TAIL):
            doc = doc[: -len(CORPUS_TAIL)]
        doc = doc.rstrip("\n")
        if not is_blank(doc):
            docs.append(doc)
        pos = end + len(sep)
    assert docs, f"{path}: no documents"
    return docs


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, bound: int) -> int:
        threshold = (1 << 64) % bound  # values below 2^64 mod bound are redrawn
        while True:
            x = self.next()
            if x >= threshold:
                return x % bound


def calibration_permutation(n: int, seed: int) -> list[int]:
    order = list(range(n))
    rng = SplitMix64(seed)
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def calibration_ids(path: str, tok: tokenizers.Tokenizer, samples: int, seqlen: int, seed: int):
    assert not path.lower().endswith(".jsonl"), "only plain-text calibration files are re-implemented here"
    docs = read_text_documents(path)
    sep = tok.token_to_id(EOT)
    assert sep is not None
    order = calibration_permutation(len(docs), seed)
    needed = samples * seqlen
    stream: list[int] = []
    used = 0
    for k in order:
        if len(stream) >= needed:
            break
        stream += tok.encode(docs[k], add_special_tokens=False).ids
        stream.append(sep)
        used += 1
    assert len(stream) >= needed, f"{path}: {len(stream)} tokens, {needed} needed"
    ids = np.array(stream[:needed], dtype=np.int64).reshape(samples, seqlen)
    return ids, dict(documents=len(docs), documents_tokenized=used, tokens_read=len(stream), separator=sep)


def fingerprint(ids: np.ndarray) -> str:
    """calibration.cc calibration_fingerprint: FNV-1a 64 over every id as 4 little-endian bytes."""
    h = 0xCBF29CE484222325
    for b in ids.astype("<u4").tobytes():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return f"{h:016x}"


# ----------------------------------------------------------------------------------------------
# Model loading with checks
# ----------------------------------------------------------------------------------------------
def load_model(path: str):
    model, info = GlmMoeDsaForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert model.config._experts_implementation == "eager"
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), f"{path}: {key} {info.get(key)}"
    check_params_equal_file(model, path)
    return model, {k: len(v) for k, v in info.items()}


def check_params_equal_file(model, path: str) -> None:
    """Every parameter and persistent buffer equals the file's value (bf16 upcast exactly), per-expert file tensors
    fused as transformers fuses them (gate rows, then up rows), so a silently random-initialised tensor fails."""
    W = load_checkpoint_tensors(path)
    c = model.config
    expected = {}
    fused_layers = set()
    for name, t in W.items():
        parts = name.split(".")
        if len(parts) > 5 and parts[3] == "mlp" and parts[4] == "experts" and parts[5].isdigit():
            fused_layers.add(int(parts[2]))
        else:
            expected[name] = t
    for li in sorted(fused_layers):
        p = f"model.layers.{li}.mlp.experts."
        E = c.n_routed_experts
        expected[p + "gate_up_proj"] = torch.stack(
            [torch.cat([W[f"{p}{e}.gate_proj.weight"], W[f"{p}{e}.up_proj.weight"]]) for e in range(E)])
        expected[p + "down_proj"] = torch.stack([W[f"{p}{e}.down_proj.weight"] for e in range(E)])
        used = {f"{p}{e}.{n}_proj.weight" for e in range(E) for n in ("gate", "up", "down")}
        extra = {n for n in W if n.startswith(p) and n[len(p):].split(".")[0].isdigit()} - used
        assert not extra, f"{path}: expert tensors beyond n_routed_experts = {E}: {sorted(extra)[:4]}"
    sd = model.state_dict()
    assert set(sd) == set(expected), f"{path}: {sorted(set(sd) ^ set(expected))[:8]}"
    for k, v in sd.items():
        assert v.dtype == torch.float32, k
        assert torch.equal(v, expected[k].float()), f"{path}: {k} differs from the file"


# ----------------------------------------------------------------------------------------------
# The observer: hooks on the real modules
# ----------------------------------------------------------------------------------------------
class ReapHooks:
    def __init__(self, model):
        c = model.config
        self.E, self.k = c.n_routed_experts, c.num_experts_per_tok
        self.moe_layers = [i for i, t in enumerate(c.mlp_layer_types) if t == "sparse"]
        self.stats = {li: np.zeros((self.E, 5), dtype=np.float64) for li in self.moe_layers}
        self.routed = {}
        self.max_combine_err = 0.0  # relative to max |module output|
        self.max_router_weight_err = 0.0
        self.min_router_gap = math.inf
        self.tokens = 0
        self.captured = {}  # indexer inputs per layer for the gap check
        self.handles = []
        for li in self.moe_layers:
            mlp = model.model.layers[li].mlp
            assert type(mlp).__name__ == "GlmMoeDsaMoE", type(mlp)
            self.handles.append(mlp.gate.register_forward_hook(self._gate(li)))
            self.handles.append(mlp.register_forward_hook(self._moe(li)))
        for li, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            if attn.indexer is None:
                continue
            self.handles.append(attn.register_forward_pre_hook(
                lambda m, a, kw, li=li: self.captured.__setitem__(
                    ("x", li), kw.get("hidden_states", a[0] if a else None)),
                with_kwargs=True))
            self.handles.append(attn.q_a_layernorm.register_forward_hook(
                lambda m, a, out, li=li: self.captured.__setitem__(("q", li), out)))

    def remove(self):
        for h in self.handles:
            h.remove()

    def _gate(self, li):
        def f(mod, args, out):
            _, weights, indices = out
            self.routed[li] = (weights.detach().clone(), indices.detach().clone())
        return f

    def _moe(self, li):
        def f(mod, args, out):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            y = out.detach().reshape(-1, out.shape[-1])
            weights, indices = self.routed.pop(li)
            T = x.shape[0]
            assert weights.shape == indices.shape == (T, self.k)
            # The routing recomputed independently: the same picks, the same weights.
            ridx, rw, _, gap = route(x, mod.gate.weight, mod.gate.e_score_correction_bias, mod.gate.num_group,
                                     mod.gate.topk_group, mod.gate.top_k, mod.gate.norm_topk_prob,
                                     mod.gate.routed_scaling_factor)
            hidx, order = indices.sort(dim=-1)
            assert torch.equal(hidx, ridx), f"layer {li}: router picks differ from the recomputation"
            self.max_router_weight_err = max(self.max_router_weight_err,
                                             float((weights.gather(1, order) - rw).abs().max()))
            self.min_router_gap = min(self.min_router_gap, float(gap.min()))
            # Every routed expert's output from the fused expert parameters.
            gu, dn = mod.experts.gate_up_proj.detach(), mod.experts.down_proj.detach()
            I = dn.shape[2]
            assert gu.shape == (self.E, 2 * I, x.shape[1]) and dn.shape == (self.E, x.shape[1], I)
            combined = torch.zeros_like(x)
            st = self.stats[li]
            for e in range(self.E):
                tok, slot = torch.where(indices == e)
                if tok.numel() == 0:
                    continue
                xe = x[tok]
                o = F.linear(F.silu(F.linear(xe, gu[e, :I])) * F.linear(xe, gu[e, I:]), dn[e])  # fp32
                g = weights[tok, slot]
                combined.index_add_(0, tok, o * g[:, None])
                norm = o.double().pow(2).sum(-1).sqrt()
                gd = g.double()
                st[e, 0] += tok.numel()
                st[e, 1] += float((gd * norm).sum())
                st[e, 2] += float(norm.sum())
                st[e, 3] += float(gd.sum())
                st[e, 4] = max(st[e, 4], float(norm.max()))
            se = mod.shared_experts
            shared = F.linear(F.silu(F.linear(x, se.gate_proj.weight)) * F.linear(x, se.up_proj.weight),
                              se.down_proj.weight)
            err = float((combined + shared - y).abs().max() / y.abs().max())
            assert err < 1e-5, f"layer {li}: recomputed MoE output differs from the module's by {err:.2e}"
            self.max_combine_err = max(self.max_combine_err, err)
            if li == self.moe_layers[0]:
                self.tokens += T
        return f


class StableIndexerTopk:
    """Breaks ties at the DSA indexer's top-k boundary toward the lower key index (score descending, then index
    ascending: the rule whittle's top_k documents) instead of torch.topk's unspecified order.

    A query row whose indexer scores are all exactly 0 (every indexer head's q.k negative; here the row of each
    <|endoftext|> that follows a document at position >= index_topk) ties every visible key, and torch.topk then
    returns an arbitrary-looking set of them (glm_moe_dsa_vs_transformers.md D4: unspecified, may differ between CPU
    and GPU). While an indexer runs, Tensor.topk is replaced by a stable descending sort cut at k: the values and the
    set are torch.topk's wherever the k-th and (k+1)-th scores differ. `rows_changed` counts the rows whose set
    differs from torch.topk's."""

    def __init__(self, model):
        self.rows_changed = 0
        self.rows = 0
        self.handles = []
        self._orig = torch.Tensor.topk
        for layer in model.model.layers:
            if layer.self_attn.indexer is not None:
                self.handles.append(layer.self_attn.indexer.register_forward_pre_hook(self._on))
                self.handles.append(layer.self_attn.indexer.register_forward_hook(self._off))

    def _stable_topk(self, x, k, dim=-1, largest=True, sorted=True):
        assert largest and dim in (-1, x.dim() - 1)
        v, i = x.sort(dim=-1, descending=True, stable=True)
        v, i = v[..., :k], i[..., :k]
        # Rows where the two sets differ in a visible key (masked future keys score finfo.min and tie too).
        plain = self._orig(x, k, dim=-1).indices
        visible = x > torch.finfo(x.dtype).min / 2
        a = torch.zeros_like(visible).scatter_(-1, i, True)
        b = torch.zeros_like(visible).scatter_(-1, plain, True)
        changed = ((a ^ b) & visible).any(dim=-1)
        self.rows_changed += int(changed.sum())
        self.rows += changed.numel()
        return torch.return_types.topk((v, i))

    def _on(self, mod, args):
        def topk(x, k, dim=-1, largest=True, sorted=True):  # a plain function: x.topk(k) passes x
            return self._stable_topk(x, k, dim, largest, sorted)

        torch.Tensor.topk = topk

    def _off(self, mod, args, out):
        torch.Tensor.topk = self._orig

    def remove(self):
        torch.Tensor.topk = self._orig
        for h in self.handles:
            h.remove()


def min_indexer_gap(model, hooks: ReapHooks):
    """(smallest non-zero relative top-k boundary gap of the recomputed indexer scores, rows with an exact tie)."""
    cfg = model.config
    theta = float(config_rope_parameters(cfg.to_dict())["rope_theta"])
    best = math.inf
    ties = 0
    for li, layer in enumerate(model.model.layers):
        if layer.self_attn.indexer is None:
            continue
        s = indexer_scores(layer.self_attn.indexer, hooks.captured[("x", li)][0], hooks.captured[("q", li)][0],
                           theta, cfg.qk_rope_head_dim)
        gaps, _ = topk_boundary_gaps(s, cfg.index_topk)
        ties += sum(1 for g in gaps if g[2] == 0)
        best = min([best] + [g[1] for g in gaps if g[2] != 0])
    return best, ties


# ----------------------------------------------------------------------------------------------
# Selection (src/prune/expert_selection.cc)
# ----------------------------------------------------------------------------------------------
def reap_scores(st: np.ndarray) -> list[float]:
    return [float(s[1] / s[0]) if s[0] > 0 else 0.0 for s in st]


def select(st: np.ndarray, ratio: float):
    E = st.shape[0]
    n_drop = int(E * ratio)
    score = reap_scores(st)
    order = sorted(range(E), key=lambda e: (score[e], st[e, 0], -e))  # dropped first
    dropped = sorted(order[:n_drop])
    kept = sorted(order[n_drop:])
    lo, hi = score[order[n_drop - 1]], score[order[n_drop]]
    return kept, dropped, (hi - lo) / hi if hi > 0 else 0.0


# ----------------------------------------------------------------------------------------------
def rel_err(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else abs(a)


def versions() -> dict:
    import safetensors

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--calib", default=None, help="default MODEL/calibration.txt")
    ap.add_argument("--out", default="tests/golden/reap")
    ap.add_argument("--whittle", default="build/whittle")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch", type=int, default=8, help="whittle prune --batch")
    ap.add_argument("--tokens", type=int, default=80, help="length of each pruned-model input")
    args = ap.parse_args()
    calib = args.calib or os.path.join(args.model, "calibration.txt")
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)

    tok = tokenizers.Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids, calib_info = calibration_ids(calib, tok, args.samples, args.seqlen, args.seed)
    print(f"calibration: {calib_info['documents']} documents, {calib_info['documents_tokenized']} tokenized, "
          f"{ids.shape[0]} x {ids.shape[1]} tokens, fingerprint {fingerprint(ids)}")

    # --- statistics with transformers -----------------------------------------------------------
    model, load_info = load_model(args.model)
    cfg = model.config
    assert args.seqlen <= cfg.max_position_embeddings
    # First plain transformers (torch.topk's own order among tied indexer scores), for the record only.
    hooks = ReapHooks(model)
    with torch.no_grad():
        for s in range(ids.shape[0]):
            model(torch.from_numpy(ids[s:s + 1]), use_cache=False)
    hooks.remove()
    plain_stats = hooks.stats
    # The golden: ties at the indexer's top-k boundary broken toward the lower key index.
    stable = StableIndexerTopk(model)
    hooks = ReapHooks(model)
    idx_gap, idx_ties = math.inf, 0
    with torch.no_grad():
        for s in range(ids.shape[0]):
            model(torch.from_numpy(ids[s:s + 1]), use_cache=False)
            g, t = min_indexer_gap(model, hooks)
            idx_gap, idx_ties = min(idx_gap, g), idx_ties + t
    hooks.remove()
    stable.remove()
    tie_effect = {n: float(max(rel_err(plain_stats[li][e, j], hooks.stats[li][e, j]) for li in hooks.moe_layers
                               for e in range(cfg.n_routed_experts))) for j, n in enumerate(STAT_NAMES)}
    print(f"indexer rows with a tie at the top-k boundary: {idx_ties}; torch.topk chose another set on "
          f"{stable.rows_changed}; effect on the statistics (max rel.): {tie_effect}")
    k = cfg.num_experts_per_tok
    for li in hooks.moe_layers:
        assert hooks.stats[li][:, 0].sum() == ids.size * k, "every token routed to k experts"
    assert hooks.tokens == ids.size

    # --- scores and kept sets ---------------------------------------------------------------------
    selections = {}
    for r in RATIOS:
        per_layer = []
        for li in hooks.moe_layers:
            kept, dropped, gap = select(hooks.stats[li], r)
            per_layer.append({"layer": li, "kept": kept, "dropped": dropped, "score_gap_rel": gap})
        selections[f"{r:.2f}"] = {"ratio": r, "dropped_per_layer": int(cfg.n_routed_experts * r),
                                  "min_score_gap_rel": min(p["score_gap_rel"] for p in per_layer),
                                  "layers": per_layer}
    plain_kept_differs = {}  # layers whose kept set plain transformers' statistics would change
    for key, sel in selections.items():
        print(f"ratio {key}: smallest relative score gap at the cut {sel['min_score_gap_rel']:.3e}")
        plain_kept_differs[key] = [p["layer"] for p in sel["layers"]
                                   if select(plain_stats[p["layer"]], sel["ratio"])[0] != p["kept"]]

    # --- whittle prune, then transformers on its output -------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        pruned = os.path.join(tmp, "pruned")
        cmd = [args.whittle, "prune", args.model, pruned, "--ratio", str(PRUNE_RATIO), "--calib", calib,
               "--samples", str(args.samples), "--seqlen", str(args.seqlen), "--seed", str(args.seed),
               "--batch", str(args.batch)]
        subprocess.run(cmd, check=True)
        with open(os.path.join(pruned, "reap_report.json")) as f:
            report = json.load(f)
        assert report["calibration"]["fingerprint"] == fingerprint(ids), "whittle packed other tokens"
        want = {p["layer"]: p["kept"] for p in selections[f"{PRUNE_RATIO:.2f}"]["layers"]}
        got = {p["layer"]: p["kept"] for p in report["layers"]}
        assert got == want, f"whittle's kept sets differ from the oracle's: {got} vs {want}"
        cli_err = {n: 0.0 for n in STAT_NAMES}
        for p in report["layers"]:
            for e, x in enumerate(p["experts"]):
                for j, n in enumerate(STAT_NAMES):
                    cli_err[n] = max(cli_err[n], float(rel_err(x[n], hooks.stats[p["layer"]][e, j])))
        pm, pruned_load_info = load_model(pruned)
        assert pm.config.n_routed_experts == cfg.n_routed_experts - int(cfg.n_routed_experts * PRUNE_RATIO)
        pruned_files = {f: sha256_file(os.path.join(pruned, f)) for f in sorted(os.listdir(pruned))}

        # Two held-out windows with safe margins.
        T = args.tokens
        assert T > cfg.index_topk
        positions = sorted(set(range(0, T, 6)) | {T - 1})
        inputs, logits, margins = [], [], []
        for name in ("prose.txt", "chat.txt"):
            with open(os.path.join(args.model, "eval", name), encoding="utf-8") as f:
                all_ids = tok.encode(f.read(), add_special_tokens=False).ids
            window = safe_window(pm, all_ids, T, positions)
            if window is None:
                sys.exit(f"no window of eval/{name} has safe margins")
            start, w, rows, margin, g = window
            inputs.append(w)
            logits.append(rows.numpy().astype(np.float32))
            margins.append({"text": f"eval/{name}", "start_token": start, "min_top1_top2_margin_rel": margin,
                            "min_indexer_topk_gap_rel": g})

    # --- write --------------------------------------------------------------------------------------
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "calib_ids.npy"), ids)
    np.save(os.path.join(args.out, "pruned_ids.npy"), np.array(inputs, dtype=np.int64))
    np.save(os.path.join(args.out, "pruned_positions.npy"), np.array(positions, dtype=np.int64))
    np.save(os.path.join(args.out, "pruned_logits.npy"), np.stack(logits))
    layers = []
    for li in hooks.moe_layers:
        st = hooks.stats[li]
        sc = reap_scores(st)
        layers.append({"layer": li, "experts": [
            dict({n: float(st[e, j]) for j, n in enumerate(STAT_NAMES)}, reap=sc[e]) for e in range(st.shape[0])]})
    golden = {
        "calibration": {"file": os.path.relpath(calib), "samples": args.samples, "seqlen": args.seqlen,
                        "seed": args.seed, "batch": args.batch, "fingerprint": fingerprint(ids), **calib_info},
        "model": args.model,
        "prune_ratio": PRUNE_RATIO,
        "stat_names": list(STAT_NAMES),
        "layers": layers,
        "selections": selections,
    }
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README)
    outputs = {n: sha256_file(os.path.join(args.out, n)) for n in sorted(os.listdir(args.out)) if n != "ORACLE.json"}
    oracle = {
        "command": " ".join([".venv/bin/python"] + sys.argv),
        "whittle_command": " ".join(cmd[:3] + ["OUT"] + cmd[4:]),
        "versions": versions(),
        "settings": "float32 (bf16 weights upcast), eager attention, eager experts, CPU, torch 2 threads, "
                    "deterministic algorithms, batch 1 per sample, positions 0..seqlen-1, no padding, use_cache=False",
        "gate": "topk_weights of GlmMoeDsaTopkRouter: renormalised sigmoid of the bias-corrected, group-limited "
                "top-k, times routed_scaling_factor (the weights GlmMoeDsaExperts multiplies in)",
        "inputs_sha256": {os.path.relpath(calib): sha256_file(calib),
                          **{os.path.join(args.model, n): sha256_file(os.path.join(args.model, n))
                             for n in sorted(os.listdir(args.model)) if n.endswith((".safetensors", ".json"))}},
        "pruned_checkpoint_sha256": pruned_files,
        "outputs_sha256": outputs,
        "checks": {
            "model_loading_info": load_info,
            "pruned_loading_info": pruned_load_info,
            "parameters_equal_file_values": True,
            "hook_recomputed_moe_output_max_rel_err": hooks.max_combine_err,
            "router_recomputed_picks_equal": True,
            "router_recomputed_weights_max_abs_err": hooks.max_router_weight_err,
            "router_min_topk_gap_biased_score": hooks.min_router_gap,
            "calibration_min_indexer_topk_gap_rel_nonzero": idx_gap,
            "calibration_indexer_rows_tied_at_topk_boundary": idx_ties,
            "calibration_indexer_rows_where_torch_topk_chose_another_set": stable.rows_changed,
            "calibration_indexer_query_rows": stable.rows,
            "plain_torch_topk_stats_max_rel_diff": tie_effect,
            "plain_torch_topk_layers_with_other_kept_set": plain_kept_differs,
            "indexer_topk_ties": "broken toward the lower key index (StableIndexerTopk); see the docstring",
            "every_token_routed_to_k_experts": True,
            "min_score_gap_rel_at_cut": {key: sel["min_score_gap_rel"] for key, sel in selections.items()},
            "whittle_cli_kept_sets_equal_oracle": True,
            "whittle_cli_fingerprint_equal_oracle": True,
            "whittle_cli_report_stats_max_rel_err": cli_err,
            "pruned_logit_windows": margins,
        },
    }
    with open(os.path.join(args.out, "ORACLE.json"), "w") as f:
        json.dump(oracle, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(oracle["checks"], indent=1))


README = """# tests/golden/reap

REAP statistics of the bundled model `models/tiny-glm5` computed by Hugging Face transformers with the model's true
routing, and transformers' logits of the checkpoint `whittle prune --ratio 0.25` writes. Made by
`tools/oracle/make_reap_golden.py` (see its docstring and `ORACLE.json` for the command, versions and checks);
read by `src/prune/reap_oracle_test.cc`.

- `calib_ids.npy` (int64 [samples, seqlen]): the calibration tokens, packed by the script from `golden.json` →
  `calibration` (file, samples, seqlen, seed) independently of whittle; the test asserts `load_calibration` gives
  the same ids.
- `golden.json`: per MoE layer and routed expert count, sum_gate_norm, sum_norm, sum_gate, max_norm (float64) and
  the REAP score; kept and dropped sets at ratios 0.25, 0.40, 0.50 with the relative score gap at each cut.
- `pruned_ids.npy` (int64 [2, T]), `pruned_positions.npy` (int64 [P]), `pruned_logits.npy` (float32 [2, P, V]):
  two held-out windows and transformers' logits of whittle's pruned checkpoint at the stored positions.
"""


if __name__ == "__main__":
    main()
