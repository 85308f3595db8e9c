#!/usr/bin/env python3
"""A plain PyTorch REAP observer, written the way the Cerebras `reap` observer works, as a speed yardstick.

Usage (repository root):
    .venv/bin/python bench/reap_torch_reference.py --ids CALIB.npy --out REPORT.json [--model models/tiny-glm5]
        [--batch 8] [--threads 2] [--ratio 0.25] [--all-experts]

Forward hooks on every MoE block (`GlmMoeDsaMoE`) of the transformers model; the model runs its ordinary forward
(fp32 on CPU: the bf16 checkpoint upcast, eager attention and experts), and each hook re-runs the router on the
block's input and recomputes the expert outputs it needs:
  * true routing, written here from the GLM-5 router's definition (not by calling the module): sigmoid of the fp32
    logits, + e_score_correction_bias for the choice, group mask (n_group/topk_group), top-k; weight g = unbiased
    sigmoid renormalised over the chosen k (+1e-20) x routed_scaling_factor, the weight the model applies
    (reap_vs_code section 4, llm-compressor's and whittle's g);
  * f_j = down(silu(gate x) * up x) of every routed (token, expert) pair, tokens grouped by expert (default), or of
    every expert on every token and then gathered (--all-experts: the reference observer's dense [E, T, H] way);
  * accumulators per expert, f64: count, sum g*||f||, sum ||f||, sum g, max ||f||; score = sum g*||f|| / count.
Samples are `--batch` rows per forward, no padding or mask (every token routed and counted). The unpruned model
is observed (the reference's mode; no prune-as-you-go).

Writes REPORT.json in the form of whittle's reap_report.json (layers[].experts[].{count, sum_gate_norm, sum_norm,
sum_gate, max_norm, score}, layers[].kept, floor(E x ratio) lowest scores dropped) plus `seconds` and
`tokens_per_s`: calibration time is the forward loop alone (model load excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class ReapObserver:
    def __init__(self, model, all_experts: bool):
        cfg = model.config
        self.E = cfg.n_routed_experts
        self.k = cfg.num_experts_per_tok
        self.n_group, self.topk_group = cfg.n_group, cfg.topk_group
        self.norm_topk = cfg.norm_topk_prob
        self.rsf = cfg.routed_scaling_factor
        self.all_experts = all_experts
        self.stats = {}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            mlp = layer.mlp
            if not hasattr(mlp, "experts"):
                continue
            z = lambda: torch.zeros(self.E, dtype=torch.float64)  # noqa: E731
            self.stats[i] = {"count": z(), "sum_gate_norm": z(), "sum_norm": z(), "sum_gate": z(), "max_norm": z()}
            self.handles.append(mlp.register_forward_hook(lambda m, a, o, i=i: self.observe(i, m, a[0])))

    def route(self, mlp, x):
        """True routing: chosen experts [T, k] and applied weights [T, k] (fp32)."""
        logits = x.float() @ mlp.gate.weight.float().T
        s = logits.sigmoid()
        choice = s + mlp.gate.e_score_correction_bias.float()
        if self.n_group > 1:
            g = choice.view(-1, self.n_group, self.E // self.n_group).topk(2, dim=-1).values.sum(-1)
            keep = torch.zeros_like(g).scatter_(1, g.topk(self.topk_group, dim=-1).indices, 1.0)
            mask = keep.repeat_interleave(self.E // self.n_group, dim=1).bool()
            choice = choice.masked_fill(~mask, float("-inf"))
        idx = choice.topk(self.k, dim=-1).indices
        w = s.gather(1, idx)
        if self.norm_topk:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return idx, w * self.rsf

    @torch.no_grad()
    def observe(self, layer, mlp, hidden):
        x = hidden.reshape(-1, hidden.shape[-1])
        T = x.shape[0]
        idx, w = self.route(mlp, x)
        gate_up, down = mlp.experts.gate_up_proj, mlp.experts.down_proj  # [E, 2I, H], [E, H, I]
        flat_e = idx.reshape(-1)  # slot order: token-major
        norms = torch.empty(T * self.k, dtype=torch.float32)
        if self.all_experts:
            dense = torch.empty(T, self.E, dtype=torch.float32)
            for e in range(self.E):
                gu = x @ gate_up[e].T
                g, u = gu.chunk(2, dim=-1)
                dense[:, e] = ((F.silu(g) * u) @ down[e].T).norm(dim=-1)
            norms = dense.gather(1, idx).reshape(-1)
        else:
            order = torch.argsort(flat_e, stable=True)
            tokens = order // self.k
            counts = torch.bincount(flat_e, minlength=self.E).tolist()
            start = 0
            for e, n in enumerate(counts):
                if n == 0:
                    continue
                sl = order[start:start + n]
                xe = x[tokens[start:start + n]]
                gu = xe @ gate_up[e].T
                g, u = gu.chunk(2, dim=-1)
                norms[sl] = ((F.silu(g) * u) @ down[e].T).norm(dim=-1)
                start += n
        n64 = norms.double()
        w64 = w.reshape(-1).double()
        st = self.stats[layer]
        st["count"].index_add_(0, flat_e, torch.ones_like(n64))
        st["sum_gate_norm"].index_add_(0, flat_e, w64 * n64)
        st["sum_norm"].index_add_(0, flat_e, n64)
        st["sum_gate"].index_add_(0, flat_e, w64)
        st["max_norm"].scatter_reduce_(0, flat_e, n64, reduce="amax")

    def report(self, ratio: float) -> list[dict]:
        drop = int(self.E * ratio)
        layers = []
        for L, st in self.stats.items():
            score = st["sum_gate_norm"] / st["count"].clamp(min=1.0)
            dropped = set(torch.topk(score, drop, largest=False).indices.tolist())
            layers.append({
                "layer": L,
                "kept": [e for e in range(self.E) if e not in dropped],
                "dropped": sorted(dropped),
                "experts": [{**{k: float(v[e]) for k, v in st.items()}, "score": float(score[e])}
                            for e in range(self.E)],
            })
        return layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--all-experts", action="store_true")
    ap.add_argument("--attn", default="eager", help="attn_implementation (eager or sdpa)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    ids = torch.from_numpy(np.load(args.ids).astype(np.int64))
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn,
                                                 experts_implementation="eager").eval()
    obs = ReapObserver(model, args.all_experts)
    t1 = time.perf_counter()
    with torch.no_grad():
        for b in range(0, ids.shape[0], args.batch):
            model.model(input_ids=ids[b:b + args.batch], use_cache=False)  # the head is not needed
    t2 = time.perf_counter()
    tokens = int(ids.numel())
    rep = {
        "method": "reap",
        "made_by": "bench/reap_torch_reference.py",
        "ratio": args.ratio,
        "settings": {"batch": args.batch, "threads": args.threads, "all_experts": args.all_experts,
                     "attn_implementation": args.attn, "dtype": "float32", "torch": torch.__version__},
        "samples": int(ids.shape[0]),
        "seqlen": int(ids.shape[1]),
        "seconds": {"load_model": t1 - t0, "calibration": t2 - t1},
        "tokens_per_s": tokens / (t2 - t1),
        "layers": obs.report(args.ratio),
    }
    with open(args.out, "w") as f:
        json.dump(rep, f, indent=1)
    print(f"torch reference: {tokens} tokens in {t2 - t1:.2f} s = {tokens / (t2 - t1):.0f} tokens/s "
          f"(batch {args.batch}, {args.threads} threads{', all experts' if args.all_experts else ''})")


if __name__ == "__main__":
    main()
