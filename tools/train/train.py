#!/usr/bin/env python3
"""Train the tiny GLM-5 (`GlmMoeDsaForCausalLM`) on CPU; resumable. See tools/train/README.md ("Training").

    .venv/bin/python tools/train/train.py --run tiny-v1            # start, or resume from data/train/tiny-v1/

Model: transformers' own GlmMoeDsaForCausalLM (eager attention, grouped_mm experts, fp32 weights).
Losses / updates per step:
  * next-token cross-entropy (the main loss; trains everything except the indexer);
  * DSA indexer KL (DeepSeek-V3.2): per layer, KL(p_attn || softmax(indexer scores)) where p_attn is the main
    attention's probabilities summed over heads and L1-normalised (detached), and the indexer scores are recomputed
    with gradients from the indexer's own weights on the detached layer input and detached q latent. Dense warm-up
    (index_topk = context, KL over all causal keys) for --dense-steps, then sparse (index_topk as configured, KL
    over the selected keys only, as DeepSeek-V3.2's sparse stage);
  * aux-loss-free balancing (DeepSeek-V3): after each optimizer step, per MoE layer,
    e_score_correction_bias += gamma * sign(mean_load - load_e).
Everything a resume needs is in data/train/<run>/ckpt.pt (written atomically every --ckpt-minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_format import split_docs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oracle"))
from oracle_common import sha256_file  # noqa: E402
from model_config import check_marlin, make_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("prose", "code", "arith", "chat")


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ----------------------------------------------------------------------------------------------------------- data


def load_docs(path: Path) -> list[str]:
    return split_docs(path.read_text(encoding="utf-8"))


def tokenize_docs(tok, docs: list[str], eot: int) -> tuple[np.ndarray, np.ndarray]:
    """All docs' ids, each followed by <|endoftext|>, concatenated; plus the doc start offsets (len n+1)."""
    encs = tok.encode_batch(docs, add_special_tokens=False)
    lens = [len(e.ids) + 1 for e in encs]
    offs = np.zeros(len(docs) + 1, dtype=np.int64)
    offs[1:] = np.cumsum(lens)
    ids = np.empty(offs[-1], dtype=np.int32)
    for i, e in enumerate(encs):
        ids[offs[i] : offs[i + 1] - 1] = e.ids
        ids[offs[i + 1] - 1] = eot
    return ids, offs




def load_tokenized(corpus: Path, tokenizer_json: Path, cache_dir: Path, tok, eot: int) -> dict:
    """Tokenize each domain once; cached under data/train/cache keyed by corpus + tokenizer hashes."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tk = sha256_file(tokenizer_json)[:16]
    out = {}
    for d in DOMAINS:
        src = corpus / f"{d}.txt"
        key = f"{d}-{sha256_file(src)[:16]}-{tk}"
        f = cache_dir / f"{key}.npz"
        if not f.exists():
            t = time.time()
            ids, offs = tokenize_docs(tok, load_docs(src), eot)
            np.savez(cache_dir / f"{key}.tmp.npz", ids=ids, offs=offs)
            os.replace(cache_dir / f"{key}.tmp.npz", f)
            log(f"tokenized {d}: {len(offs) - 1} docs, {len(ids)} tokens ({time.time() - t:.0f}s)")
        z = np.load(f)
        out[d] = (z["ids"], z["offs"])
    return out


class Packer:
    """Per domain, an endless stream: each epoch is the documents in a seeded random order, each followed by
    <|endoftext|>, concatenated; sequences are consecutive windows of context+1 tokens. State = (epoch, pos)."""

    def __init__(self, tokens: dict, seed: int, context: int):
        self.tokens, self.seed, self.T = tokens, seed, context + 1
        self.state = {d: [0, 0] for d in DOMAINS}
        self._cache: dict = {}

    def _stream(self, d: str, epoch: int) -> np.ndarray:
        k = (d, epoch)
        if k not in self._cache:
            self._cache = {kk: v for kk, v in self._cache.items() if kk[0] != d}
            ids, offs = self.tokens[d]
            perm = np.random.default_rng([self.seed, DOMAINS.index(d), epoch]).permutation(len(offs) - 1)
            self._cache[k] = np.concatenate([ids[offs[i] : offs[i + 1]] for i in perm])
        return self._cache[k]

    def take(self, d: str) -> np.ndarray:
        ep, pos = self.state[d]
        s = self._stream(d, ep)
        if pos + self.T > len(s):  # drop the epoch's tail, start the next epoch
            ep, pos = ep + 1, 0
            s = self._stream(d, ep)
        self.state[d] = [ep, pos + self.T]
        return s[pos : pos + self.T]


def batch_domains(seed: int, step: int, batch: int, weights: dict[str, float]) -> list[str]:
    rng = np.random.default_rng([seed, 1_000_003, step])
    p = np.array([weights[d] for d in DOMAINS], dtype=np.float64)
    return [DOMAINS[i] for i in rng.choice(len(DOMAINS), size=batch, p=p / p.sum())]


def heldout_windows(tok, eval_dir: Path, context: int, n: int, eot: int) -> dict[str, torch.Tensor]:
    out = {}
    for d in DOMAINS:
        ids, _ = tokenize_docs(tok, load_docs(eval_dir / f"{d}.txt"), eot)
        T = context + 1
        k = min(n, len(ids) // T)
        out[d] = torch.from_numpy(ids[: k * T].astype(np.int64)).view(k, T)
    return out


# -------------------------------------------------------------------------------------------- indexer KL support


def indexer_scores(ix, hidden_states, q_resid, position_embeddings, attention_mask):
    """GlmMoeDsaIndexer's score computation (transformers 5.23, no cache), with autograd. Returns [B, S, T] fp32
    with the causal mask applied (-inf / additive)."""
    from transformers.models.glm_moe_dsa.modeling_glm_moe_dsa import apply_rotary_pos_emb_interleave

    B, S, _ = hidden_states.shape
    cos, sin = position_embeddings
    q = ix.wq_b(q_resid).view(B, S, ix.n_heads, ix.head_dim)
    q_rot, q_pass = torch.split(q, [ix.qk_rope_head_dim, ix.head_dim - ix.qk_rope_head_dim], dim=-1)
    k = ix.k_norm(ix.wk(hidden_states)).unsqueeze(2)
    k_rot, k_pass = torch.split(k, [ix.qk_rope_head_dim, ix.head_dim - ix.qk_rope_head_dim], dim=-1)
    q_rot, k_rot = apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin, unsqueeze_dim=2)
    q = torch.cat([q_rot, q_pass], dim=-1)
    k = torch.cat([k_rot, k_pass], dim=-1).squeeze(2)
    scores = F.relu(torch.matmul(q.float(), k.transpose(-1, -2).float().unsqueeze(1)) * ix.softmax_scale)
    w = ix.weights_proj(hidden_states.to(ix.weights_proj.weight.dtype)).float() * (ix.n_heads**-0.5)
    s = torch.matmul(w.unsqueeze(-2), scores).squeeze(-2)
    if attention_mask.dtype == torch.bool:
        s = s.masked_fill(~attention_mask, float("-inf"))
    else:
        s = s + attention_mask
    return s


def install_indexer_kl(model):
    """Replace each indexer's forward by one that computes the same top-k but keeps differentiable scores (on
    detached inputs) in `ix._scores` while `ix._record` is set; hook each attention to keep its probabilities."""
    import types

    for layer in model.model.layers:
        attn = layer.self_attn
        ix = attn.indexer
        ix._record = False
        ix._scores = None
        ix._topk = None

        def fwd(self, hidden_states, q_resid, position_embeddings, attention_mask, position_ids, past_key_values=None):
            if past_key_values is not None or not self._record:
                with torch.no_grad():
                    return type(self).forward(
                        self, hidden_states, q_resid, position_embeddings, attention_mask, position_ids, past_key_values
                    )
            with torch.enable_grad():
                s = indexer_scores(
                    self, hidden_states.detach(), q_resid.detach(),
                    tuple(t.detach() for t in position_embeddings), attention_mask,
                )
            self._scores = s
            topk = min(self.index_topk, s.shape[-1])
            idx = s.detach().topk(topk, dim=-1).indices.to(torch.int32)
            self._topk = idx
            return idx

        ix.forward = types.MethodType(fwd, ix)

        def attn_hook(mod, args, kwargs, output):
            if mod.indexer._record:
                mod._probs = output[1]

        attn.register_forward_hook(attn_hook, with_kwargs=True)


def indexer_kl_loss(model, sparse: bool) -> tuple[torch.Tensor, list[float]]:
    """Mean over layers of the per-token KL(p_attn || softmax(index scores)), averaged over tokens."""
    losses, kls = [], []
    for layer in model.model.layers:
        attn = layer.self_attn
        ix = attn.indexer
        s, probs = ix._scores, attn._probs
        p = probs.detach().float().sum(1)  # [B,S,T] over heads
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-30)
        if sparse:  # DeepSeek-V3.2 sparse stage: KL over the selected keys only
            sel = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, ix._topk.long(), True)
            s = s.masked_fill(~sel, float("-inf"))
        logq = torch.log_softmax(s, dim=-1)
        logq = torch.where(p > 0, logq, torch.zeros_like(logq))
        plogp = torch.where(p > 0, p * torch.log(p.clamp_min(1e-30)), torch.zeros_like(p))
        kl = (plogp - p * logq).sum(-1).mean()
        losses.append(kl)
        kls.append(kl.item())
        ix._scores = None
        ix._topk = None
        attn._probs = None
    return torch.stack(losses).mean(), kls


def set_record(model, on: bool) -> None:
    for layer in model.model.layers:
        layer.self_attn.indexer._record = on


def set_index_topk(model, k: int) -> None:
    for layer in model.model.layers:
        layer.self_attn.indexer.index_topk = k


# ------------------------------------------------------------------------------------------------ router balance


def install_load_counters(model) -> list:
    gates = []
    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate"):
            g = layer.mlp.gate
            g._load = torch.zeros(g.num_experts, dtype=torch.float64)
            g._count = True

            def hook(mod, args, output):
                if mod._count:
                    mod._load += torch.bincount(output[2].reshape(-1), minlength=mod.num_experts).double()

            g.register_forward_hook(hook)
            gates.append(g)
    return gates


# ------------------------------------------------------------------------------------------------------- training


def lr_at(step: int, a) -> float:
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model, windows: dict, index_topk: int, bs: int = 4) -> dict[str, float]:
    was = model.training
    model.eval()
    set_index_topk(model, index_topk)
    out = {}
    for d, w in windows.items():
        tot, n = 0.0, 0
        for i in range(0, len(w), bs):
            x = w[i : i + bs]
            logits = model(input_ids=x[:, :-1], use_cache=False).logits.float()
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
            n += x[:, 1:].numel()
        out[d] = tot / n
    model.train(was)
    return out


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run name: state lives in data/train/<run>/")
    ap.add_argument("--tokenizer", default="models/tiny-glm5/tokenizer.json")
    ap.add_argument("--corpus", default="data/corpus/train")
    ap.add_argument("--eval-dir", default="models/tiny-glm5/eval")
    ap.add_argument("--preset", default="s256")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--index-topk", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--dense-steps", type=int, default=200, help="dense-attention warm-up steps (indexer KL on)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--kl-weight", type=float, default=1.0)
    ap.add_argument("--bias-gamma", type=float, default=1e-3)
    ap.add_argument("--mix", default="prose=0.3,code=0.2,arith=0.3,chat=0.2")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--export-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (after a checkpoint) after this long; 0 = no limit")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    os.chdir(ROOT)
    run_dir = Path("data/train") / a.run
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "ckpt.pt"
    args_path = run_dir / "args.json"
    hyper = {k: v for k, v in vars(a).items() if k not in ("max_minutes", "threads", "export_every", "ckpt_minutes")}
    if args_path.exists():
        old = json.loads(args_path.read_text())
        if old != hyper:
            diff = {k: (old.get(k), v) for k, v in hyper.items() if old.get(k) != v}
            raise SystemExit(f"arguments differ from the run's recorded ones (data/train/{a.run}/args.json): {diff}")
    else:
        args_path.write_text(json.dumps(hyper, indent=1) + "\n")

    # The run is tied to the exact corpus and tokenizer it started with: refuse to resume on other data.
    hashes = {"tokenizer": sha256_file(Path(a.tokenizer))}
    hashes.update({d: sha256_file(Path(a.corpus) / f"{d}.txt") for d in DOMAINS})
    hashes_path = run_dir / "data_hashes.json"
    if hashes_path.exists():
        old_h = json.loads(hashes_path.read_text())
        if old_h != hashes:
            raise SystemExit(f"corpus/tokenizer changed since the run started ({hashes_path}): "
                             f"{[k for k in hashes if old_h.get(k) != hashes[k]]}")
    else:
        hashes_path.write_text(json.dumps(hashes, indent=1) + "\n")

    from tokenizers import Tokenizer
    from transformers import GlmMoeDsaForCausalLM

    tok = Tokenizer.from_file(a.tokenizer)
    cfg = make_config(a.tokenizer, a.preset, a.context, a.index_topk)
    eot = cfg.pad_token_id
    mix = {kv.split("=")[0]: float(kv.split("=")[1]) for kv in a.mix.split(",")}
    assert set(mix) == set(DOMAINS), mix

    tokens = load_tokenized(Path(a.corpus), Path(a.tokenizer), Path("data/train/cache"), tok, eot)
    windows = heldout_windows(tok, Path(a.eval_dir), a.context, a.eval_windows, eot)

    torch.manual_seed(a.seed)
    model = GlmMoeDsaForCausalLM._from_config(cfg, attn_implementation="eager", experts_implementation="grouped_mm")
    checked = check_marlin(model)
    nparam = sum(p.numel() for p in model.parameters())
    log(f"model {a.preset}: {nparam / 1e6:.2f}M parameters; Marlin shapes OK on {len(checked)} modules")
    install_indexer_kl(model)
    gates = install_load_counters(model)

    ix_params = [p for n, p in model.named_parameters() if ".indexer." in n]
    main_named = [(n, p) for n, p in model.named_parameters() if ".indexer." not in n]
    decay = [p for n, p in main_named if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in main_named if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": a.wd},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": ix_params, "weight_decay": 0.0},
        ],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, a) / a.lr)
    packer = Packer(tokens, a.seed, a.context)
    state = {"step": 0, "train_seconds": 0.0, "tokens": 0, "log": [], "evals": [], "balance": []}

    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["torch_rng"])
        packer.state = ck["packer"]
        state = ck["state"]
        log(f"resumed from {ckpt_path} at step {state['step']} ({state['tokens']} tokens, {state['train_seconds'] / 3600:.2f} h)")
    else:
        log(f"new run {a.run}: {a.steps} steps x {a.batch} x {a.context} tokens")

    def save_ckpt():
        t = time.time()
        atomic_save(
            {
                "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "packer": packer.state, "state": state,
                "config": cfg.to_dict(), "args": hyper,
            },
            ckpt_path,
        )
        (run_dir / "log.json").write_text(json.dumps({k: state[k] for k in ("log", "evals", "balance")}))
        log(f"checkpoint step {state['step']} ({time.time() - t:.1f}s)")

    def export_snapshot():
        from export import export_model

        out = run_dir / f"export-step-{state['step']}"
        export_model(model.state_dict(), cfg, out, Path(a.tokenizer).parent, meta=snapshot_meta(),
                     trained_context=a.context)
        log(f"exported {out}")

    def snapshot_meta():
        return {"run": a.run, "step": state["step"], "steps": a.steps, "tokens": state["tokens"],
                "train_seconds": state["train_seconds"]}

    model.train()
    t_start = time.time()
    last_ckpt = time.time()
    while state["step"] < a.steps:
        step = state["step"]
        t0 = time.time()
        dense = step < a.dense_steps
        set_index_topk(model, a.context if dense else a.index_topk)
        for g in gates:
            g._load.zero_()
        doms = batch_domains(a.seed, step, a.batch, mix)
        x = torch.from_numpy(np.stack([packer.take(d) for d in doms]).astype(np.int64))
        set_record(model, True)
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        per_tok = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1), reduction="none")
        lm = per_tok.mean()
        kl, kls = indexer_kl_loss(model, sparse=not dense)
        set_record(model, False)
        (lm + a.kl_weight * kl).backward()
        gn = torch.nn.utils.clip_grad_norm_([p for _, p in main_named], a.clip).item()
        torch.nn.utils.clip_grad_norm_(ix_params, a.clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        # aux-loss-free balancing (DeepSeek-V3)
        ratios = []
        with torch.no_grad():
            for g in gates:
                load = g._load
                g.e_score_correction_bias += a.bias_gamma * torch.sign(load.mean() - load).float()
                ratios.append((load.max() / load.mean()).item())
                ratios.append((load.min() / load.mean()).item())
        dom_loss = {}
        pt = per_tok.detach().view(a.batch, -1).mean(1)
        for d in DOMAINS:
            sel = [i for i, dd in enumerate(doms) if dd == d]
            if sel:
                dom_loss[d] = round(pt[sel].mean().item(), 4)
        dt = time.time() - t0
        state["step"] = step + 1
        state["train_seconds"] += dt
        state["tokens"] += a.batch * a.context
        rec = {"step": step + 1, "loss": round(lm.item(), 4), "kl": round(kl.item(), 4), "lr": sched.get_last_lr()[0],
               "gnorm": round(gn, 3), "dt": round(dt, 2), "dense": dense, "dom": dom_loss}
        state["log"].append(rec)
        state["balance"].append({"step": step + 1, "max_over_mean": [round(r, 3) for r in ratios[0::2]],
                                 "min_over_mean": [round(r, 3) for r in ratios[1::2]]})
        if (step + 1) % 10 == 0 or step < 3:
            mx = max(ratios[0::2]) if ratios else 0
            mn = min(ratios[1::2]) if ratios else 0
            log(f"step {step + 1}/{a.steps} loss {lm.item():.3f} kl {kl.item():.3f} [{' '.join(f'{k:.2f}' for k in kls)}] "
                f"lr {rec['lr']:.2e} gn {gn:.2f} load max/mean {mx:.2f} min/mean {mn:.2f} "
                f"{'dense' if dense else 'sparse'} {a.batch * a.context / dt:.0f} tok/s")
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            t = time.time()
            ev = {"step": step + 1, "sparse": evaluate(model, windows, a.index_topk)}
            if (step + 1) % (2 * a.eval_every) == 0 or step + 1 == a.steps:
                ev["dense"] = evaluate(model, windows, a.context)
            state["evals"].append(ev)
            log(f"eval step {step + 1}: " + json.dumps(ev) + f" ({time.time() - t:.0f}s)")
        if (step + 1) % a.export_every == 0 or step + 1 == a.steps:
            save_ckpt()
            last_ckpt = time.time()
            export_snapshot()
        elif time.time() - last_ckpt > a.ckpt_minutes * 60:
            save_ckpt()
            last_ckpt = time.time()
        if a.max_minutes and time.time() - t_start > a.max_minutes * 60:
            save_ckpt()
            log("stopping: --max-minutes reached")
            return
    log("done")


if __name__ == "__main__":
    main()
