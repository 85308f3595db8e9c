#!/usr/bin/env python3
"""Golden gradients of one GlmMoeDsa decoder layer, from transformers' own GlmMoeDsaDecoderLayer and torch
autograd, for whittle's hand-written backward (src/quant/block_grad.{h,cc}, test block_grad_test.cc).

Usage (from the repository root):
    .venv/bin/python tools/oracle/make_block_grad_golden.py [--out tests/golden/block_grad]

Writes tests/golden/block_grad/:
    model/config.json, model/model.safetensors   a tiny random GlmMoeDsaForCausalLM (bf16 weights, per-expert tensor
                                                 names as GLM-5 ships them; e_score_correction_bias F32), 2 layers:
                                                 layer 0 dense MLP (first_k_dense_replace 1), layer 1 MoE
    layer0.safetensors, layer1.safetensors       float32, for decoder layer L run alone on one sequence of T tokens
                                                 at positions 0..T-1:
        x         [T, H]   the layer's input (layer 0: the embeddings of input_ids; layer 1: layer 0's output of the
                           float64 run, rounded to float32)
        r         [T, H]   fixed random weights of the loss L = sum(y * r)
        y         [T, H]   the layer's output
        dx        [T, H]   dL/dx
        grad.<module>      dL/dW of every Linear the gradient reaches, by Hugging Face module name
                           (model.layers.L.self_attn.q_a_proj, ...; routed experts per expert:
                           model.layers.1.mlp.experts.E.gate_proj / up_proj / down_proj, sliced from the fused
                           parameters gate_up_proj [E, 2I, H] (gate rows first) and down_proj [E, H, I]).
                           Not the DSA indexer (its top-k is a fixed mask), not the router weight (frozen).
    ORACLE.json                                  command, versions, seed, config, checks, sha256 of every file

The layer runs in float64 (from_pretrained(dtype=float64), eager attention, eager experts, CPU). Parts of
transformers compute in float32 whatever the model dtype: RMSNorm (casts to float32 and back), the router logits
(F.linear in float32), the indexer scores and the RoPE tables; the goldens therefore hold to about 1e-7 relative,
not 1e-16 (the float32 run's distance from the float64 one is recorded in ORACLE.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GlmMoeDsaForCausalLM  # noqa: E402

sys.dont_write_bytecode = True  # keep tools/oracle free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_goldens as mg  # noqa: E402
import oracle_common as oc  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# Margins that keep whittle's float32 choices equal to transformers' (same thresholds as make_model_goldens.py).
INDEXER_GAP_REL = 1e-4  # (s_k - s_{k+1}) / max|s| over visible keys, every row that drops keys
ROUTER_GAP_ABS = 1e-4  # k-th vs (k+1)-th biased router score

# Distinct sizes everywhere (3 heads, nope 12 != rope 8 != v 10, latent 16 != q latent 24) so that a layout
# mistake cannot cancel out; rms_norm_eps 1e-5 differs from the latent norms' 1e-6.
SPEC = dict(
    desc="2 layers: layer 0 dense (intermediate 64), layer 1 MoE (6 routed experts top-2, 1 shared, moe_intermediate "
    "16, routed_scaling_factor 2.5, n_group 1); hidden 48; MLA 3 heads, q_lora 24, kv_lora 16, nope 12, rope 8, v 10; "
    "DSA index_topk 6 < T=20 (rows 6..19 drop keys), 4 indexer heads x 16; rope_theta 1e4; rms_norm_eps 1e-5.",
    T=20,
    seed=7000,
    arch=dict(
        vocab_size=64,
        hidden_size=48,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_attention_heads=3,
        num_key_value_heads=3,
        q_lora_rank=24,
        kv_lora_rank=16,
        qk_nope_head_dim=12,
        qk_rope_head_dim=8,
        v_head_dim=10,
        index_n_heads=4,
        index_head_dim=16,
        index_topk=6,
        n_routed_experts=6,
        num_experts_per_tok=2,
        n_shared_experts=1,
        num_hidden_layers=2,
        first_k_dense_replace=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
)


# Inputs of every RMSNorm brought to mean(x²) ≈ 4e-3 (scaled by 1/16, exact in bf16), as small as a real model's
# embeddings: there eps is 0.3 % of the variance instead of 1e-5, so a backward with the wrong eps fails the test
# (with mean(x²) ≈ 1 it moved the gradients by 6e-6 only, inside float32 noise).
SHRUNK = ("embed_tokens.weight", "q_a_proj.weight", "kv_a_proj_with_mqa.weight", "o_proj.weight", "down_proj.weight",
          "experts.down_proj")
SHRINK = 1.0 / 16


@torch.no_grad()
def shrink(model):
    for name, p in model.named_parameters():
        if name.endswith(SHRUNK):
            p.mul_(SHRINK)


def load(path, dtype):
    model = GlmMoeDsaForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation="eager", experts_implementation="eager"
    )
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert model.config._experts_implementation == "eager"
    return model


def capture_layer_calls(model, ids):
    """Runs the model once and returns, per decoder layer, (input hidden states, kwargs) as the model called it,
    plus the indexer's inputs and the router's inputs/outputs for the margin checks."""
    calls, idx, router, hooks = {}, {}, {}, []
    for li, layer in enumerate(model.model.layers):

        def pre(mod, args, kwargs, li=li):
            calls[li] = (args[0].detach().clone(), dict(kwargs))

        hooks.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        if layer.self_attn.indexer is not None:

            def ih(mod, args, kwargs, out, li=li):
                idx[li] = (args, kwargs, out.detach().clone())

            hooks.append(layer.self_attn.indexer.register_forward_hook(ih, with_kwargs=True))
        if hasattr(layer.mlp, "gate"):

            def rh(mod, args, out, li=li):
                router[li] = (args[0].detach().clone(), tuple(o.detach().clone() for o in out))

            hooks.append(layer.mlp.gate.register_forward_hook(rh))
    with torch.no_grad():
        model(input_ids=ids[None], use_cache=False)
    for h in hooks:
        h.remove()
    return calls, idx, router


def margins(model, idx, router, T, log):
    """Indexer and router choices must be clear enough that float32 rounding cannot flip them, and HF's choice
    must equal whittle's rule (top-k by score, ties to the lower index). Returns (ok, checks)."""
    cfg = model.config
    ok, checks = True, {}
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    min_gap, rows = float("inf"), 0
    for li, (args, kwargs, out) in sorted(idx.items()):
        indexer = model.model.layers[li].self_attn.indexer
        sc = oc.indexer_scores(indexer, args[0][0], args[1][0], cfg.rope_parameters["rope_theta"], cfg.qk_rope_head_dim)
        gaps, mine = oc.topk_boundary_gaps(sc, indexer.index_topk)  # stable sort: ties to the lower index
        hf = torch.zeros(T, T, dtype=torch.bool).scatter(1, out[0].long(), True) & causal
        assert torch.equal(hf, mine), f"layer {li}: indexer selection differs from the lower-index top-k rule"
        rows += len(gaps)
        if gaps:
            g = min(gaps, key=lambda z: z[1])
            min_gap = min(min_gap, g[1])
            if g[1] <= INDEXER_GAP_REL:
                log(f"  indexer gap {g[1]:.2e} at layer {li} row {g[0]}")
                ok = False
    checks["indexer_rows_dropping_keys"] = rows
    checks["indexer_min_rel_gap_at_topk_boundary"] = min_gap
    assert rows > 0, "the DSA mask must drop keys"
    min_eg, hit = float("inf"), {}
    for li, (x, (logits, w, i)) in sorted(router.items()):
        gate = model.model.layers[li].mlp.gate
        x = x.reshape(-1, x.shape[-1])
        ri, rw, _, eg = oc.route(x, gate.weight, gate.e_score_correction_bias, cfg.n_group, cfg.topk_group,
                                 cfg.num_experts_per_tok, cfg.norm_topk_prob, cfg.routed_scaling_factor)
        assert torch.equal(ri, i.sort(dim=-1).values), f"layer {li}: router re-implementation picks differ"
        min_eg = min(min_eg, float(eg.min()))
        hit[li] = sorted(set(int(e) for e in i.flatten()))
    checks["router_min_gap_kth_vs_next_expert"] = min_eg
    checks["routed_experts_hit"] = hit
    if min_eg <= ROUTER_GAP_ABS:
        log(f"  router gap {min_eg:.2e}")
        ok = False
    return ok, checks


def layer_grads(model, li, x, kwargs, r):
    """y, dL/dx and dL/dW (by whittle module name) of decoder layer li on input x for L = sum(y * r)."""
    layer = model.model.layers[li]
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = layer(x, **kwargs)[0]
    (y * r).sum().backward()
    prefix = f"model.layers.{li}."
    grads = {}
    for name, p in layer.named_parameters():
        if p.dim() < 2 or ".indexer." in name or name == "mlp.gate.weight":
            continue
        assert p.grad is not None, name
        g = p.grad.detach()
        if name == "mlp.experts.gate_up_proj":
            inter = g.shape[1] // 2
            for e in range(g.shape[0]):
                grads[f"{prefix}mlp.experts.{e}.gate_proj"] = g[e, :inter]
                grads[f"{prefix}mlp.experts.{e}.up_proj"] = g[e, inter:]
        elif name == "mlp.experts.down_proj":
            for e in range(g.shape[0]):
                grads[f"{prefix}mlp.experts.{e}.down_proj"] = g[e]
        else:
            assert name.endswith(".weight"), name
            grads[prefix + name[: -len(".weight")]] = g
    # What must get no gradient: the indexer (fixed mask) and, in this loss, nothing else is frozen.
    for name, p in layer.named_parameters():
        if ".indexer." in name:
            assert p.grad is None or not p.grad.any(), f"{name}: the indexer must get no gradient"
    return y.detach()[0], x.grad.detach()[0], grads


def rel(a, b):
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "block_grad"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    def log(msg):
        print(msg, flush=True)

    T = SPEC["T"]
    with tempfile.TemporaryDirectory(prefix="block_grad_") as tmp:
        for seed in range(SPEC["seed"], SPEC["seed"] + 40):
            cfg = mg.make_config(SPEC)
            m16 = GlmMoeDsaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
            mg.init_weights(m16, seed)
            shrink(m16)
            model_dir = os.path.join(tmp, "model")
            shutil.rmtree(model_dir, ignore_errors=True)
            m16.save_pretrained(model_dir)
            model = load(model_dir, torch.float64)
            for n, p in model.named_parameters():
                assert p.dtype == torch.float64, n
            ids = torch.randint(4, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(seed + 1000003))
            calls, idx, router = capture_layer_calls(model, ids)
            ok, checks = margins(model, idx, router, T, log)
            if ok:
                break
            log(f"seed {seed} rejected")
        else:
            raise RuntimeError("no seed passed the margin checks")

        # Each layer's input rounded to float32 (what whittle will be given), then run in float64.
        g = torch.Generator().manual_seed(seed + 2000003)
        out = {}
        x = calls[0][0][0].float()
        for li in range(cfg.num_hidden_layers):
            r = torch.randn(x.shape, generator=g, dtype=torch.float32)
            kwargs = calls[li][1]
            y, dx, grads = layer_grads(model, li, x.double()[None], kwargs, r.double()[None])
            out[li] = dict(x=x, r=r, y=y, dx=dx, grads=grads)
            x = y.float()

        # The same in float32, to record how far float32 arithmetic is from the goldens.
        m32 = load(model_dir, torch.float32)
        calls32, _, _ = capture_layer_calls(m32, ids)
        f32 = {}
        for li in range(cfg.num_hidden_layers):
            o = out[li]
            y, dx, grads = layer_grads(m32, li, o["x"][None], calls32[li][1], o["r"][None])
            f32[f"layer{li}"] = dict(
                y=rel(y.double(), o["y"]),
                dx=rel(dx.double(), o["dx"]),
                max_over_modules_dw=max(rel(grads[k].double(), v) for k, v in o["grads"].items() if v.norm() > 0),
            )
        checks["float32_run_rel_error_vs_float64"] = f32
        log(f"float32 vs float64: {json.dumps(f32)}")

        # The indexer's mask must matter for the outputs, or the goldens would not test it: the same layers with
        # every visible key attended (index_topk >= T).
        effect = {}
        with torch.no_grad():
            for li in range(cfg.num_hidden_layers):
                indexer = model.model.layers[li].self_attn.indexer
                saved, indexer.index_topk = indexer.index_topk, 1 << 30
                dense = model.model.layers[li](out[li]["x"].double()[None], **calls[li][1])[0][0]
                indexer.index_topk = saved
                effect[f"layer{li}"] = float((dense - out[li]["y"]).abs().max() / out[li]["y"].abs().max())
        checks["dsa_effect_rel_maxdiff_vs_dense"] = effect
        log(f"DSA effect: {effect}")
        assert min(effect.values()) > 1e-3, effect

        # Replaces what this script writes; README.md (hand-written) stays.
        os.makedirs(args.out, exist_ok=True)
        shutil.rmtree(os.path.join(args.out, "model"), ignore_errors=True)
        shutil.copytree(model_dir, os.path.join(args.out, "model"))
    for li, o in out.items():
        tensors = {k: o[k].float().contiguous() for k in ("x", "r", "y", "dx")}
        for k, v in o["grads"].items():
            tensors["grad." + k] = v.float().contiguous()
        save_file(tensors, os.path.join(args.out, f"layer{li}.safetensors"), metadata={"format": "pt"})
        zero = sorted(k for k, v in o["grads"].items() if not v.any())
        checks[f"layer{li}_modules_with_zero_grad"] = zero
        log(f"layer {li}: {len(o['grads'])} gradients, zero: {zero}")

    files = {}
    for root, _, names in os.walk(args.out):
        for f in names:
            os.chmod(os.path.join(root, f), 0o644)  # safetensors writes 0600
        for f in sorted(names):
            if f in ("README.md", "ORACLE.json"):
                continue
            p = os.path.join(root, f)
            files[os.path.relpath(p, args.out)] = oc.sha256_file(p)
    info = dict(
        command=mg.command_line(),
        versions=mg.versions(),
        description=SPEC["desc"],
        seed=seed,
        T=T,
        config=mg.config_summary(model.config),
        init=mg.INIT_DESC
        + f" Then {', '.join(SHRUNK)} multiplied by {SHRINK} (exact in bf16)."
        + " Loss weights r ~ N(0, 1) float32 from torch.Generator(seed + 2000003), layer 0 then 1.",
        settings=dict(
            dtype="float64 (from_pretrained(dtype=float64)); RMSNorm, router logits, indexer scores and RoPE tables "
            "compute in float32 inside transformers",
            attn_implementation="eager",
            experts_implementation="eager",
            device="cpu",
            call="GlmMoeDsaDecoderLayer(x, **kwargs) with the kwargs GlmMoeDsaModel.forward passed it "
            "(causal mask, RoPE tables of positions 0..T-1, use_cache False)",
            loss="L = sum(y * r)",
        ),
        checks=checks,
        files_sha256=files,
    )
    oc.write_json(os.path.join(args.out, "ORACLE.json"), info)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
    log(f"seed {seed}; total {total / 1024:.1f} KiB in {args.out}")


if __name__ == "__main__":
    main()
