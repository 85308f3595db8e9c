#!/usr/bin/env python3
"""Plots and numbers for the model card, from a run's log and an exported model folder.

    .venv/bin/python tools/train/report.py --run tiny-v1 --model models/tiny-glm5

Writes MODEL/loss_curve.png (train loss per domain + held-out loss per domain, sparse and dense attention),
MODEL/expert_usage.png (fraction of routed tokens per expert, per domain, per MoE layer, on the held-out
eval files) and data/train/<run>/report.json (held-out loss/ppl per domain with index_topk as trained vs.
index_topk >= context, expert-specialisation statistics, load balance).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import DOMAINS, heldout_windows, set_index_topk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def smooth(y, k):
    y = np.asarray(y, dtype=float)
    if len(y) < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = (c[k:] - c[:-k]) / k
    return np.concatenate([np.full(k - 1, np.nan), out])


def loss_curve(logd: dict, out: Path, tokens_per_step: int, title: str, eval_windows: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(prose="tab:blue", code="tab:orange", arith="tab:green", chat="tab:red")
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.8))
    steps = np.array([r["step"] for r in logd["log"]])
    ax[0].plot(steps * tokens_per_step / 1e6, smooth([r["loss"] for r in logd["log"]], 25), color="k", lw=1.5,
               label="train (all, 25-step mean)")
    for d in DOMAINS:
        s = [r["step"] for r in logd["log"] if d in r["dom"]]
        v = [r["dom"][d] for r in logd["log"] if d in r["dom"]]
        ax[0].plot(np.array(s) * tokens_per_step / 1e6, smooth(v, 25), color=colors[d], lw=0.8, alpha=0.7,
                   label=f"train {d}")
    for d in DOMAINS:
        ev = [e for e in logd["evals"] if d in e["sparse"]]
        ax[1].plot([e["step"] * tokens_per_step / 1e6 for e in ev], [e["sparse"][d] for e in ev], "o-", ms=3,
                   color=colors[d], label=f"held-out {d}")
        evd = [e for e in logd["evals"] if "dense" in e]
        ax[1].plot([e["step"] * tokens_per_step / 1e6 for e in evd], [e["dense"][d] for e in evd], "x", ms=5,
                   color=colors[d], alpha=0.7)
    ax[1].plot([], [], "kx", label="x: dense attention (index_topk ≥ context)")
    dense_end = max([r["step"] for r in logd["log"] if r.get("dense")], default=0)
    for a in ax:
        a.set_xlabel("training tokens (millions)")
        a.set_ylabel("cross-entropy (nats/token)")
        a.grid(alpha=0.3)
        if dense_end:
            a.axvline(dense_end * tokens_per_step / 1e6, color="gray", ls=":", lw=1)
        a.legend(fontsize=8)
    ax[0].set_ylim(0, 8.5)
    ax[1].set_ylim(0, 8.5)
    ax[0].set_title("train loss (dotted: end of dense warm-up)")
    ax[1].set_title(f"held-out loss per domain (first {eval_windows} windows of each eval file)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@torch.no_grad()
def heldout_and_usage(model_dir: Path, eval_dir: Path, context: int, index_topk: int, windows: int):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    cfg = model.config
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    win = heldout_windows(tok, eval_dir, context, windows, cfg.pad_token_id)
    gates = [(i, l.mlp.gate) for i, l in enumerate(model.model.layers) if hasattr(l.mlp, "gate")]
    counts = {}

    def mk(i):
        def hook(mod, args, output):
            if counts.get("on"):
                counts[(counts["dom"], i)] += torch.bincount(output[2].reshape(-1), minlength=mod.num_experts).double()
        return hook

    for i, g in gates:
        g.register_forward_hook(mk(i))
    res = {"loss_sparse": {}, "loss_dense": {}, "tokens": {}}
    for d, w in win.items():
        for i, g in gates:
            counts[(d, i)] = torch.zeros(g.num_experts, dtype=torch.float64)
        for mode, k in (("loss_sparse", index_topk), ("loss_dense", context)):
            set_index_topk(model, k)
            counts["on"], counts["dom"] = mode == "loss_sparse", d
            tot = 0.0
            for j in range(0, len(w), 4):
                x = w[j : j + 4]
                lg = model(input_ids=x[:, :-1], use_cache=False).logits.float()
                tot += F.cross_entropy(lg.reshape(-1, lg.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
            res[mode][d] = tot / w[:, 1:].numel()
            counts["on"] = False
        res["tokens"][d] = int(w[:, 1:].numel())
    usage = {d: {i: (counts[(d, i)] / counts[(d, i)].sum()).numpy() for i, _ in gates} for d in DOMAINS}
    return res, usage, [i for i, _ in gates], cfg


@torch.no_grad()
def arith_accuracy(model_dir: Path, eval_dir: Path, n: int) -> dict:
    """Greedy accuracy through transformers on the first n held-out problems of each jsonl (prompt =
    question + newline, answer = the number after '####', as GSM8K). An indicator only: the reference
    numbers come from `whittle eval --task arith`."""
    import re

    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    out = {}
    for name in ("arith_one_step", "arith_two_step"):
        rows = [json.loads(x) for x in (eval_dir / f"{name}.jsonl").read_text().splitlines()[:n]]
        ok = 0
        for r in rows:
            ids = tok.encode(r["question"] + "\n", add_special_tokens=False).ids
            g = model.generate(torch.tensor([ids]), max_new_tokens=80, do_sample=False)
            text = tok.decode(g[0, len(ids):].tolist())
            m = re.search(r"####\s*(-?[\d,]+)", text)
            want = r["answer"].split("####")[-1].strip()
            ok += int(bool(m) and m.group(1).replace(",", "") == want)
        out[name] = {"correct": ok, "n": len(rows), "accuracy": round(ok / max(1, len(rows)), 3)}
    return out


def usage_plot(usage, layers, out: Path, title: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    E = len(next(iter(usage[DOMAINS[0]].values())))
    fig, axes = plt.subplots(len(layers), 1, figsize=(12, 1.25 * len(layers) + 1.2), squeeze=False)
    vmax = max(float(usage[d][i].max()) for d in DOMAINS for i in layers)
    stats = {}
    for r, i in enumerate(layers):
        m = np.stack([usage[d][i] for d in DOMAINS])
        ax = axes[r][0]
        im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_yticks(range(len(DOMAINS)), DOMAINS, fontsize=8)
        ax.set_xticks(range(E), [str(e) if e % 4 == 0 else "" for e in range(E)], fontsize=7)
        ax.set_ylabel(f"layer {i}", fontsize=9)
        # specialisation: mean over domains of KL(p_domain || p_mean) in bits, and the share of a domain's
        # routed tokens that go to experts where that domain is the majority user
        pm = m.mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = [float(np.sum(np.where(p > 0, p * np.log2(p / np.maximum(pm, 1e-12)), 0))) for p in m]
        owner = m.argmax(0)
        stats[f"layer {i}"] = {
            "kl_bits_domain_vs_mean": {d: round(k, 3) for d, k in zip(DOMAINS, kl)},
            "experts_led_by_domain": {d: int((owner == j).sum()) for j, d in enumerate(DOMAINS)},
            "max_over_mean_load_per_domain": {d: round(float(p.max() * E), 2) for d, p in zip(DOMAINS, m)},
            "all_domains_max_min_over_mean": [round(float(pm.max() * E), 2), round(float(pm.min() * E), 2)],
        }
    axes[-1][0].set_xlabel("routed expert")
    fig.colorbar(im, ax=[a[0] for a in axes], shrink=0.8, label="fraction of the domain's routed tokens")
    fig.suptitle(title, fontsize=10)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--eval-dir", default="models/tiny-glm5/eval")
    ap.add_argument("--windows", type=int, default=40, help="held-out windows per domain (all of a file if fewer)")
    ap.add_argument("--arith", type=int, default=25, help="greedy held-out arithmetic problems per file (0: skip)")
    a = ap.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(2)
    run = Path("data/train") / a.run
    args = json.loads((run / "args.json").read_text())
    logd = json.loads((run / "log.json").read_text())
    model_dir = Path(a.model)
    if (model_dir / "TRAINING_STATE.json").exists():  # an export-step-N snapshot
        state = json.loads((model_dir / "TRAINING_STATE.json").read_text())
    elif (run / "exported.json").exists() and Path(json.loads((run / "exported.json").read_text())["out"]) == model_dir:
        state = json.loads((run / "exported.json").read_text())
    else:
        state = None
    step = logd["log"][-1]["step"] if logd["log"] else 0
    tps = args["batch"] * args["context"]
    loss_curve(logd, model_dir / "loss_curve.png", tps, f"{a.run}: step {step} of {args['steps']}",
               args["eval_windows"])
    res, usage, layers, cfg = heldout_and_usage(model_dir, Path(a.eval_dir), args["context"], args["index_topk"],
                                                a.windows)
    stats = usage_plot(usage, layers, model_dir / "expert_usage.png",
                       f"expert usage per domain on held-out text ({a.run}, exported model)")
    arith = arith_accuracy(model_dir, Path(a.eval_dir), a.arith) if a.arith else None
    bal = logd["balance"][-50:]
    rep = {
        "run": a.run, "log_step": step, "steps": args["steps"],
        "heldout": {k: {d: round(v, 4) for d, v in res[k].items()} for k in ("loss_sparse", "loss_dense")},
        "heldout_ppl_sparse": {d: round(math.exp(v), 2) for d, v in res["loss_sparse"].items()},
        "sparse_minus_dense": {d: round(res["loss_sparse"][d] - res["loss_dense"][d], 4) for d in DOMAINS},
        "heldout_tokens": res["tokens"],
        "arith_greedy_transformers": arith,
        "expert_specialisation": stats,
        "train_load_last50": {
            "max_over_mean": round(float(np.mean([max(b["max_over_mean"]) for b in bal])), 3) if bal else None,
            "min_over_mean": round(float(np.mean([min(b["min_over_mean"]) for b in bal])), 3) if bal else None,
        },
        "model_state": state,
    }
    (run / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
