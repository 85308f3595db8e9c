#!/usr/bin/env python3
"""Make tiny random GLM-5 (`GlmMoeDsaForCausalLM`, model_type `glm_moe_dsa`) checkpoints and the golden
logits Hugging Face transformers computes for them.

Usage (from the repository root):
    .venv/bin/python tools/oracle/make_model_goldens.py [--out tests/golden/models] [--only NAME ...]

For every configuration this writes tests/golden/models/<name>/:
    config.json, generation_config.json        written by transformers' save_pretrained
    model.safetensors (or shards + index)      bf16 weights (e_score_correction_bias F32), or block-FP8 for `fp8`
    input_ids.npy      int64   [T]
    logits.npy         float32 [T, vocab]      transformers, fp32, eager attention, eager experts, CPU, batch 1
    hidden_states.npy  float32 [L+1, T, H]     [0] = embeddings, [l+1] = output of decoder layer l (before final norm)
    indexer_scores.npy float32 [L, T, T]       DSA indexer scores I[t,s] (re-implementation, checked vs HF), -inf for s>t
    dsa_selected.npy   bool    [L, T, T]       keys attended by query t in layer l (HF's top-k ∩ causal)
    router_experts.npy int32   [M, T, k]       routed experts per MoE layer (ascending), M = number of MoE layers
    router_weights.npy float32 [M, T, k]       their routing weights (HF), same order
    ORACLE.json        command, versions, seed, config summary, check results, sha256 of the other files

Goldens come from transformers loading the files just written (from_pretrained, dtype=float32) — except `fp8`,
whose goldens come from transformers loading an fp32 copy holding the dequantized weights (fp8.float()*scale_inv).
Running the script twice gives byte-identical files. See tools/oracle/README.md for the oracle checks.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    DeepseekV32Config,
    DeepseekV32ForCausalLM,
    GlmMoeDsaConfig,
    GlmMoeDsaForCausalLM,
)

sys.dont_write_bytecode = True  # keep tools/oracle free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle_common as oc  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# ----------------------------------------------------------------------------------------------
# Thresholds of the robustness checks
# ----------------------------------------------------------------------------------------------
LOGIT_MARGIN_REL = 1e-3  # (top1 - top2) / max|logit|, every position
INDEXER_GAP_REL = 1e-4  # (s_k - s_{k+1}) / max|s| over visible keys, every row that drops keys
ROUTER_GAP_ABS = 1e-4  # k-th vs (k+1)-th biased router score, and topk_group-th vs next group score
DSA_EFFECT_REL = 1e-2  # dsa_long: max|logits(sparse) - logits(dense)| / max|logits| must exceed this
ABLATION_REL = 1e-2  # deepseek_v32: each config-only difference from GLM-5 must move the logits by more than this

# model_type -> (config class, model class). `model_type` in a CONFIGS entry picks one (default glm_moe_dsa).
MODEL_CLASSES = {
    "glm_moe_dsa": (GlmMoeDsaConfig, GlmMoeDsaForCausalLM),
    "deepseek_v32": (DeepseekV32Config, DeepseekV32ForCausalLM),
}

# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------
BASE = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=96,
    moe_intermediate_size=24,
    num_attention_heads=4,
    num_key_value_heads=4,  # must equal num_attention_heads (HF repeat_kv)
    q_lora_rank=32,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=16,
    index_n_heads=8,
    index_head_dim=16,
    n_routed_experts=8,
    num_experts_per_tok=2,
    n_shared_experts=1,
    n_group=1,
    topk_group=1,
    norm_topk_prob=True,
    routed_scaling_factor=2.5,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    max_position_embeddings=4096,
    bos_token_id=0,
    eos_token_id=[1, 2, 3],
    pad_token_id=1,
    tie_word_embeddings=False,
    attention_bias=False,
)

# seed: first seed tried; the script searches upward until every check passes (the seed used is recorded in
# ORACLE.json). The values below are the ones that passed with torch 2.15 / transformers 5.23 (multi_moe: 3000-3002
# failed the logit-margin or indexer-gap checks).
CONFIGS = {
    "dsa_long": dict(
        desc="DSA selection really drops keys: T=48 >> index_topk=8, 8 indexer heads; layer 0 dense, layer 1 MoE "
        "(8 experts, top-2, 1 shared, moe_intermediate 24). rope_theta 1e6.",
        T=48,
        seed=1000,
        arch=dict(
            num_hidden_layers=2,
            first_k_dense_replace=1,
            index_topk=8,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    ),
    "grouped": dict(
        desc="Group-limited routing: 16 experts, n_group 4, topk_group 2, top-4, 2 shared experts, "
        "moe_intermediate 16, routed_scaling_factor 1.8, both layers MoE (first_k_dense_replace 0); tied embeddings (no lm_head.weight "
        "in the file); index_topk 64 >= T=32 (DSA selects every visible key = dense causal MLA); "
        "qk_rope_head_dim 16, index_head_dim 32; rope_theta 1e4.",
        T=32,
        seed=2000,
        arch=dict(
            num_hidden_layers=2,
            first_k_dense_replace=0,
            n_routed_experts=16,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            n_shared_experts=2,
            moe_intermediate_size=16,
            routed_scaling_factor=1.8,
            qk_rope_head_dim=16,
            index_head_dim=32,
            index_topk=64,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
    ),
    "multi_moe": dict(
        desc="5 layers: 2 dense (first_k_dense_replace 2, intermediate 64) + 3 MoE (4 experts, top-2, 1 shared); "
        "hidden 48; index_topk 12 < T=36; 12 indexer heads; rope_theta 8e6.",
        T=36,
        seed=3003,
        arch=dict(
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=5,
            first_k_dense_replace=2,
            n_routed_experts=4,
            index_topk=12,
            index_n_heads=12,
            rope_parameters={"rope_type": "default", "rope_theta": 8000000.0},
        ),
    ),
    "fp8": dict(
        desc="Block-FP8 (e4m3, 128x128 tiles, fp32 weight_scale_inv) checkpoint like GLM-5-FP8, per-expert layout; "
        "dims > 128 with partial tiles: dense intermediate 160, q_lora_rank 160, indexer wq_b [192, 160], "
        "kv_b_proj 192 rows; layer 0 dense, layer 1 MoE (4 experts, top-2, moe_intermediate 48); index_topk 10 < T=32; "
        "rope_theta 1e6. Goldens use the dequantized weights in fp32.",
        T=32,
        seed=4000,
        fp8=True,
        arch=dict(
            intermediate_size=160,
            moe_intermediate_size=48,
            q_lora_rank=160,
            kv_lora_rank=64,
            v_head_dim=32,
            index_head_dim=24,
            n_routed_experts=4,
            num_experts_per_tok=2,
            num_hidden_layers=2,
            first_k_dense_replace=1,
            index_topk=10,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    ),
    "deepseek_v32": dict(
        desc="DeepseekV32ForCausalLM (model_type deepseek_v32): same architecture as GLM-5 except the indexer RoPE is "
        "half-split (NeoX) instead of interleaved, every layer has its own indexer, and YaRN rope scaling as "
        "DeepSeek-V3.2 ships it (legacy rope_scaling {type: yarn, factor 40, mscale 1, mscale_all_dim 1, beta_fast 32, "
        "beta_slow 1}, original_max_position_embeddings 64 so that the ramp blends pairs 1-2 of 8 at qk_rope_head_dim "
        "16; max_position_embeddings 2560 = 40*64) with mscale(40)^2 = 1.874 on the MLA softmax scale; rms_norm_eps "
        "1e-6. 3 layers: 1 dense + 2 MoE (16 experts, n_group 8, topk_group 4, top-4, 1 shared, moe_intermediate 8); "
        "index_topk 6 << T=40, 8 indexer heads x 24.",
        T=40,
        seed=5008,  # 5000-5007 failed the logit-margin, indexer-gap or router-gap checks (hidden 48)
        model_type="deepseek_v32",
        arch=dict(
            hidden_size=48,
            num_hidden_layers=3,
            first_k_dense_replace=1,
            intermediate_size=64,
            moe_intermediate_size=8,
            n_routed_experts=16,
            num_experts_per_tok=4,
            n_group=8,
            topk_group=4,
            qk_rope_head_dim=16,
            index_head_dim=24,
            index_topk=6,
            rms_norm_eps=1e-6,
            max_position_embeddings=2560,
            rope_theta=10000.0,
            rope_scaling={
                "type": "yarn",
                "factor": 40,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
                "original_max_position_embeddings": 64,
                "beta_fast": 32,
                "beta_slow": 1,
            },
        ),
    ),
    "index_pattern": dict(
        desc="IndexShare given only as `index_topk_pattern` \"FSSF\": config.json has the pattern and NO "
        "`indexer_types` (removed after save_pretrained), so the reader must derive full/shared per layer from the "
        "pattern; layers 1 and 2 are shared: no indexer module, no indexer tensors in the file, they reuse layer 0's "
        "top-k (layer 2 through layer 1). 4 layers: 1 dense + 3 MoE (4 experts, top-2, 1 shared, moe_intermediate 8); "
        "hidden 32, 2 MLA heads, vocab 64; index_topk 6 < T=20, 4 indexer heads x 16; rope_theta 1e4.",
        T=20,
        seed=6000,
        drop_config_keys=["indexer_types"],
        arch=dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=32,
            moe_intermediate_size=8,
            num_attention_heads=2,
            num_key_value_heads=2,
            q_lora_rank=16,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            index_n_heads=4,
            index_head_dim=16,
            n_routed_experts=4,
            num_hidden_layers=4,
            first_k_dense_replace=1,
            index_topk=6,
            index_topk_pattern="FSSF",
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
    ),
}

# Same weights and goldens as a base config, different file layout.
VARIANTS = {
    "fused_experts": dict(
        base="dsa_long",
        desc="Same weights/inputs/logits as dsa_long, saved with save_original_format=False: fused "
        "mlp.experts.gate_up_proj [E, 2I, H] (gate rows first) and mlp.experts.down_proj [E, H, I], no .weight suffix.",
        save_kwargs=dict(save_original_format=False),
    ),
    "sharded": dict(
        base="dsa_long",
        desc="Same weights/inputs/logits as dsa_long, saved with max_shard_size='100KB': several "
        "model-0000i-of-0000n.safetensors shards + model.safetensors.index.json.",
        save_kwargs=dict(max_shard_size="100KB"),
    ),
}

FP8_QUANT_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}
# 2-D Linear weights quantized in the fp8 checkpoint (everything else stays bf16 / F32).
FP8_QUANT_RE = re.compile(
    r"^model\.layers\.\d+\.("
    r"self_attn\.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj|indexer\.wq_b|indexer\.wk)"
    r"|mlp\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)"
    r")\.weight$"
)

INIT_DESC = (
    "weights drawn with torch.randn from one torch.Generator(seed) in model.named_parameters() order, then "
    "e_score_correction_bias (named_buffers order): 2-D Linear/router weights N(0, 1/fan_in); fused experts "
    "gate_up_proj N(0, 1/hidden), down_proj N(0, 1/moe_intermediate); embed_tokens N(0, 1); lm_head N(0, 4/hidden); "
    "every norm weight (RMSNorm, indexer k_norm LayerNorm) 1 + 0.1*N(0,1); indexer k_norm.bias 0.1*N(0,1); "
    "e_score_correction_bias 0.1*N(0,1) kept in fp32; every other value is rounded to bf16. "
    "input_ids = torch.randint(4, vocab_size, (T,)) from torch.Generator(seed + 1000003)."
)


# ----------------------------------------------------------------------------------------------
# Model construction
# ----------------------------------------------------------------------------------------------
def model_classes(spec):
    return MODEL_CLASSES[spec.get("model_type", "glm_moe_dsa")]


def make_config(spec):
    kw = dict(BASE)
    kw.update(copy.deepcopy(spec["arch"]))
    return model_classes(spec)[0](**kw)


@torch.no_grad()
def init_weights(model, seed: int) -> None:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(tuple(shape), generator=g, dtype=torch.float32)

    for name, p in model.named_parameters():
        shape = p.shape
        if p.dim() == 1:
            v = 0.1 * randn(shape) if name.endswith("k_norm.bias") else 1.0 + 0.1 * randn(shape)
        elif name.endswith("embed_tokens.weight"):
            v = randn(shape)
        elif name == "lm_head.weight":
            v = randn(shape) * (2.0 / cfg.hidden_size**0.5)
        elif name.endswith("experts.gate_up_proj"):
            v = randn(shape) / cfg.hidden_size**0.5
        elif name.endswith("experts.down_proj"):
            v = randn(shape) / cfg.moe_intermediate_size**0.5
        elif p.dim() == 2:
            v = randn(shape) / shape[1] ** 0.5
        else:
            raise RuntimeError(f"unexpected parameter {name} {tuple(shape)}")
        p.copy_(v)  # rounds to the parameter dtype (bf16)
    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            assert b.dtype == torch.float32, (name, b.dtype)
            b.copy_(0.1 * randn(b.shape))


def load_golden_model(path: str, model_cls=GlmMoeDsaForCausalLM):
    model = model_cls.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager"
    )
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert model.config._experts_implementation == "eager"
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32, n
    for n, b in model.named_buffers():
        assert b.dtype == torch.float32 or not b.is_floating_point(), n
    return model


def check_same_weights(golden, expected_sd) -> None:
    """Every tensor of the fp32 golden model equals the expected (bf16-rounded / dequantized) value exactly."""
    sd = golden.state_dict()
    assert set(sd) == set(expected_sd), set(sd) ^ set(expected_sd)
    for k, v in sd.items():
        assert torch.equal(v, expected_sd[k].float()), k


# ----------------------------------------------------------------------------------------------
# Forward with capture
# ----------------------------------------------------------------------------------------------
class Capture:
    def __init__(self, model):
        self.model = model
        self.handles = []
        self.idx = {}  # layer -> (args, out)
        self.router = {}  # layer -> (x, (logits, weights, indices))
        self.layer_out = {}
        self.emb = None
        m = model.model
        self.handles.append(m.embed_tokens.register_forward_hook(self._emb))
        for li, layer in enumerate(m.layers):
            self.handles.append(layer.register_forward_hook(self._mk_layer(li)))
            if layer.self_attn.indexer is not None:
                self.handles.append(layer.self_attn.indexer.register_forward_hook(self._mk_idx(li), with_kwargs=True))
            if hasattr(layer.mlp, "gate"):
                self.handles.append(layer.mlp.gate.register_forward_hook(self._mk_router(li)))

    def _emb(self, mod, args, out):
        self.emb = out.detach().clone()

    def _mk_layer(self, li):
        def f(mod, args, out):
            # GlmMoeDsaDecoderLayer returns a tuple, DeepseekV32DecoderLayer the hidden states tensor
            self.layer_out[li] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        return f

    def _mk_idx(self, li):
        def f(mod, args, kwargs, out):
            self.idx[li] = (args, kwargs, out.detach().clone())

        return f

    def _mk_router(self, li):
        def f(mod, args, out):
            self.router[li] = (args[0].detach().clone(), tuple(o.detach().clone() for o in out))

        return f

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def forward(model, ids):
    return model(input_ids=ids[None], use_cache=False).logits[0].float()


@torch.no_grad()
def analyse(model, ids, name, log):
    """Run transformers, capture internals, run the robustness checks. Returns (ok, artefacts, checks)."""
    cfg = model.config
    T = ids.shape[0]
    L = cfg.num_hidden_layers
    cap = Capture(model)
    logits = forward(model, ids)
    cap.remove()
    ok = True
    checks = {}

    # (i) logit margins
    top2 = logits.topk(2, dim=-1).values
    rel = (top2[:, 0] - top2[:, 1]) / logits.abs().amax(dim=-1)
    checks["logit_min_rel_margin_top1_top2"] = float(rel.min())
    checks["logit_std"] = float(logits.std())
    if not bool((rel > LOGIT_MARGIN_REL).all()):
        log(f"  [{name}] logit margin check FAILED at positions {torch.nonzero(rel <= LOGIT_MARGIN_REL).flatten().tolist()}")
        ok = False

    # (ii) indexer scores, selection, boundary gaps
    theta = cfg.rope_parameters["rope_theta"]
    rope_kw = {}
    if cfg.model_type != "glm_moe_dsa":
        # RoPE frequencies re-derived from the config (oracle_common), checked against transformers' buffers
        inv_freq, att = oc.rope_frequencies(cfg.rope_parameters, cfg.qk_rope_head_dim, cfg.max_position_embeddings)
        rot = model.model.rotary_emb
        checks["rope_inv_freq_max_rel_diff_vs_hf"] = float(((inv_freq - rot.inv_freq) / rot.inv_freq).abs().max())
        assert checks["rope_inv_freq_max_rel_diff_vs_hf"] < 1e-6, checks["rope_inv_freq_max_rel_diff_vs_hf"]
        assert att == rot.attention_scaling, (att, rot.attention_scaling)
        scale = oc.mla_softmax_scale(cfg.rope_parameters, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
        assert all(abs(layer.self_attn.scaling - scale) < 1e-12 for layer in model.model.layers)
        checks["rope_inv_freq"] = [float(v) for v in rot.inv_freq]
        checks["rope_attention_scaling"] = float(rot.attention_scaling)
        checks["mla_softmax_scale"] = float(model.model.layers[0].self_attn.scaling)
        rope_kw = dict(inv_freq=inv_freq, scaling=att, interleaved=oc.INDEXER_ROPE_INTERLEAVED[cfg.model_type])
    scores_all = torch.full((L, T, T), float("-inf"))
    selected = torch.zeros((L, T, T), dtype=torch.bool)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    min_gap, n_drop_rows, prev_sel = float("inf"), 0, None
    for li in range(L):
        attn = model.model.layers[li].self_attn
        if attn.indexer is None:  # "shared" layer: reuses the previous full layer's selection
            selected[li] = prev_sel
            continue
        args, kwargs, out = cap.idx[li]
        x, q_resid = args[0][0], args[1][0]
        sc = oc.indexer_scores(attn.indexer, x, q_resid, theta, cfg.qk_rope_head_dim, **rope_kw)
        scores_all[li] = sc
        k = attn.indexer.index_topk
        gaps, my_sel = oc.topk_boundary_gaps(sc, k)
        hf_sel = torch.zeros(T, T, dtype=torch.bool).scatter(1, out[0].long(), True) & causal
        if not torch.equal(hf_sel, my_sel):
            bad = torch.nonzero((hf_sel != my_sel).any(-1)).flatten().tolist()
            raise AssertionError(f"[{name}] layer {li}: re-implemented indexer top-k differs from HF at rows {bad}")
        # full ranking check: HF's descending order must be non-increasing under the re-implemented scores
        saved_k = attn.indexer.index_topk
        attn.indexer.index_topk = T
        full = attn.indexer(*args, **kwargs)[0].long()
        attn.indexer.index_topk = saved_k
        for t in range(T):
            order = full[t, : t + 1]
            assert sorted(order.tolist()) == list(range(t + 1)), (name, li, t)
            v = sc[t, order]
            scale = float(sc[t, : t + 1].abs().max()) or 1.0
            assert bool((v[:-1] >= v[1:] - 1e-5 * scale).all()), f"[{name}] layer {li} row {t}: score order mismatch"
        selected[li] = hf_sel
        prev_sel = hf_sel
        n_drop_rows += len(gaps)
        if gaps:
            g = min(gaps, key=lambda z: z[1])
            min_gap = min(min_gap, g[1])
            if g[1] <= INDEXER_GAP_REL:
                log(f"  [{name}] indexer gap check FAILED: layer {li} row {g[0]} rel gap {g[1]:.3e}")
                ok = False
    checks["indexer_rows_dropping_keys"] = n_drop_rows
    checks["indexer_min_rel_gap_at_topk_boundary"] = None if n_drop_rows == 0 else min_gap

    # (iv) router: re-implementation vs HF, margins, effect of groups and bias
    moe_layers = sorted(cap.router)
    r_idx, r_w = [], []
    min_gg, min_eg, n_group_diff, n_bias_diff, n_tok = float("inf"), float("inf"), 0, 0, 0
    for li in moe_layers:
        gate = model.model.layers[li].mlp.gate
        x, (hf_logits, hf_w, hf_i) = cap.router[li]
        x = x.reshape(-1, x.shape[-1])
        args = (x, gate.weight, gate.e_score_correction_bias, cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok,
                cfg.norm_topk_prob, cfg.routed_scaling_factor)
        idx, w, gg, eg = oc.route(*args)
        order = hf_i.argsort(dim=-1)
        hf_i_s, hf_w_s = hf_i.gather(1, order), hf_w.gather(1, order)
        assert torch.equal(idx, hf_i_s), f"[{name}] layer {li}: router re-implementation picks differ from HF"
        assert torch.allclose(w, hf_w_s, rtol=1e-6, atol=1e-7), f"[{name}] layer {li}: router weights differ"
        r_idx.append(hf_i_s.to(torch.int32))
        r_w.append(hf_w_s.float())
        min_gg, min_eg = min(min_gg, float(gg.min())), min(min_eg, float(eg.min()))
        plain = oc.route(*args, use_groups=False)[0]
        nobias = oc.route(*args, use_bias=False)[0]
        n_group_diff += int((plain != idx).any(-1).sum())
        n_bias_diff += int((nobias != idx).any(-1).sum())
        n_tok += T
    checks["moe_layers"] = moe_layers
    checks["router_min_gap_kth_vs_next_expert"] = min_eg if moe_layers else None
    checks["router_min_gap_group_boundary"] = None if (not moe_layers or cfg.n_group <= cfg.topk_group) else min_gg
    checks["router_tokens_where_group_limit_changes_selection"] = f"{n_group_diff}/{n_tok}"
    checks["router_tokens_where_bias_changes_selection"] = f"{n_bias_diff}/{n_tok}"
    if moe_layers and (min_eg <= ROUTER_GAP_ABS or (cfg.n_group > cfg.topk_group and min_gg <= ROUTER_GAP_ABS)):
        log(f"  [{name}] router gap check FAILED: expert gap {min_eg:.3e}, group gap {min_gg:.3e}")
        ok = False
    if cfg.n_group > cfg.topk_group and (n_group_diff == 0 or n_bias_diff == 0):
        log(f"  [{name}] grouped routing check FAILED: group effect {n_group_diff}, bias effect {n_bias_diff}")
        ok = False

    # (iii) selection matters: dense (index_topk >= T) vs sparse logits
    if n_drop_rows:
        saved = []
        for layer in model.model.layers:
            if layer.self_attn.indexer is not None:
                saved.append(layer.self_attn.indexer.index_topk)
                layer.self_attn.indexer.index_topk = 1 << 30
        dense = forward(model, ids)
        for layer in model.model.layers:
            if layer.self_attn.indexer is not None:
                layer.self_attn.indexer.index_topk = saved.pop(0)
        again = forward(model, ids)
        assert torch.equal(again, logits), "non-deterministic forward"
        eff = float((dense - logits).abs().max() / logits.abs().max())
        checks["dsa_effect_rel_maxdiff_vs_dense"] = eff
        checks["dsa_effect_argmax_changes"] = f"{int((dense.argmax(-1) != logits.argmax(-1)).sum())}/{T}"
        if eff <= DSA_EFFECT_REL:
            log(f"  [{name}] DSA effect check FAILED: {eff:.3e}")
            ok = False

    if n_drop_rows and any(layer.self_attn.indexer is None for layer in model.model.layers):
        # IndexShare: the shared layers must really use the reused selection (dense attention there instead of
        # the previous full layer's top-k moves the logits by more than DSA_EFFECT_REL)
        eff = index_share_ablation(model, ids, logits)
        checks["index_share_effect_rel_maxdiff_vs_dense_shared_layers"] = eff
        if eff <= DSA_EFFECT_REL:
            log(f"  [{name}] IndexShare effect check FAILED: {eff:.3e}")
            ok = False

    if cfg.model_type == "deepseek_v32":
        ok = deepseek_v32_ablations(model, ids, logits, checks, name, log) and ok

    hidden = torch.stack([cap.emb[0]] + [cap.layer_out[li][0] for li in range(L)]).float()
    checks["hidden_rms_per_layer"] = [round(float(h.pow(2).mean().sqrt()), 4) for h in hidden]
    k = cfg.num_experts_per_tok
    arts = dict(
        logits=logits.numpy().astype(np.float32),
        hidden_states=hidden.numpy().astype(np.float32),
        indexer_scores=scores_all.numpy().astype(np.float32),
        dsa_selected=selected.numpy(),
        router_experts=(torch.stack(r_idx) if r_idx else torch.zeros(0, T, k, dtype=torch.int32)).numpy(),
        router_weights=(torch.stack(r_w) if r_w else torch.zeros(0, T, k)).numpy().astype(np.float32),
    )
    return ok, arts, checks


@torch.no_grad()
def index_share_ablation(model, ids, logits) -> float:
    """Rerun with every shared layer handed all keys (prev_topk_indices = 0..T-1 for every query) instead of the
    previous full layer's top-k; returns max|diff|/max|logit| against `logits`. Full layers are unchanged."""
    saved = []
    for layer in model.model.layers:
        if layer.self_attn.indexer is None:
            orig = layer.self_attn.forward

            def dense(*args, _orig=orig, **kw):
                p = kw.get("prev_topk_indices")
                if p is not None:
                    B, T = p.shape[0], p.shape[1]
                    kw["prev_topk_indices"] = torch.arange(T, device=p.device).expand(B, T, T).contiguous()
                return _orig(*args, **kw)

            layer.self_attn.forward = dense
            saved.append((layer.self_attn, orig))
    try:
        other = forward(model, ids)
    finally:
        for attn, orig in saved:
            attn.forward = orig
    assert torch.equal(forward(model, ids), logits), "patched model not restored"
    return float((other - logits).abs().max() / logits.abs().max())


@torch.no_grad()
def deepseek_v32_ablations(model, ids, logits, checks, name, log):
    """Each way DeepSeek-V3.2 differs from GLM-5 by configuration must change the logits clearly (> ABLATION_REL of
    max|logit|), so that an implementation getting one of them wrong fails the golden. Each variant patches the
    transformers model in memory and is undone afterwards; the unpatched forward must reproduce `logits` exactly."""
    import transformers.models.deepseek_v32.modeling_deepseek_v32 as mdv

    rot = model.model.rotary_emb
    layers = model.model.layers
    scale0 = [layer.self_attn.scaling for layer in layers]
    inv0, att0 = rot.inv_freq.clone(), rot.attention_scaling
    rp = model.config.rope_parameters
    Dr = model.config.qk_rope_head_dim

    def set_inv(v):
        rot.inv_freq.copy_(v)

    def swap_fn(fn):
        def apply():
            saved = mdv.apply_rotary_pos_emb
            mdv.apply_rotary_pos_emb = fn
            return lambda: setattr(mdv, "apply_rotary_pos_emb", saved)

        return apply

    def no_mscale():
        for layer in layers:
            layer.self_attn.scaling = (model.config.qk_nope_head_dim + Dr) ** -0.5
        return lambda: [setattr(layer.self_attn, "scaling", s) for layer, s in zip(layers, scale0)]

    def default_rope():
        set_inv(oc.rope_inv_freq(rp["rope_theta"], Dr))
        return lambda: set_inv(inv0)

    def no_truncate():
        set_inv(oc.rope_frequencies(dict(rp, truncate=False), Dr, model.config.max_position_embeddings)[0])
        return lambda: set_inv(inv0)

    def att_factor_applied_wrongly():
        # e.g. multiplying cos/sin by mscale(factor) although mscale == mscale_all_dim gives 1
        rot.attention_scaling = oc.yarn_get_mscale(rp["factor"])
        return lambda: setattr(rot, "attention_scaling", att0)

    variants = {
        # asserted: the three config-only differences the C++ code must get right
        "indexer_rope_interleaved_instead_of_half_split": (swap_fn(mdv.apply_rotary_pos_emb_interleave), True),
        "yarn_mscale_dropped_from_softmax_scale": (no_mscale, True),
        "yarn_inv_freq_replaced_by_default_rope": (default_rope, True),
        # reported
        "yarn_correction_range_not_truncated": (no_truncate, False),
        "yarn_cos_sin_scaled_by_mscale_factor": (att_factor_applied_wrongly, False),
    }
    ok = True
    eff = {}
    mx = logits.abs().max()
    for vname, (apply, asserted) in variants.items():
        undo = apply()
        try:
            other = forward(model, ids)
        finally:
            undo()
        rel = float((other - logits).abs().max() / mx)
        eff[vname] = dict(rel_maxdiff=rel, argmax_changes=f"{int((other.argmax(-1) != logits.argmax(-1)).sum())}/{len(ids)}")
        if asserted and rel <= ABLATION_REL:
            log(f"  [{name}] ablation check FAILED: {vname} moves the logits by only {rel:.3e}")
            ok = False
    again = forward(model, ids)
    assert torch.equal(again, logits), "patched model not restored"
    checks["deepseek_v32_ablations"] = eff
    return ok


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def fresh_dir(d: str) -> None:
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)


def drop_config_keys(out_dir: str, keys, m16) -> dict:
    """Remove `keys` from the config.json save_pretrained wrote (same JSON formatting as transformers), so that
    readers must derive them (index_pattern: `indexer_types` from `index_topk_pattern`). Checks that the shared
    layers have no indexer tensors in the file."""
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        c = json.load(f)
    dropped = {k: c.pop(k) for k in keys}
    assert "index_topk_pattern" in c, sorted(c)
    with open(path, "w") as f:
        f.write(json.dumps(c, indent=2, sort_keys=True) + "\n")
    names, _ = safetensors_summary(out_dir)
    types = m16.config.indexer_types
    for li, t in enumerate(types):
        has = any(n.startswith(f"model.layers.{li}.self_attn.indexer.") for n in names)
        assert has == (t == "full"), (li, t, has)
    return dict(config_json_keys_removed=dropped, index_topk_pattern=c["index_topk_pattern"],
                indexer_types_derived_by_transformers=list(types),
                indexer_tensors_per_layer={li: sum(n.startswith(f"model.layers.{li}.self_attn.indexer.") for n in names)
                                           for li in range(len(types))})


def write_fp8(m16, out_dir: str, tmp: str):
    """Save the bf16 model, quantize the selected 2-D weights to block FP8 in out_dir, and write an fp32 copy with
    the dequantized weights to tmp/deq (what the goldens are computed from). Returns (deq_dir, quantized names)."""
    bf16_dir, deq_dir = os.path.join(tmp, "bf16"), os.path.join(tmp, "deq")
    fresh_dir(bf16_dir)
    fresh_dir(deq_dir)
    m16.save_pretrained(bf16_dir)
    files = oc.dir_files(bf16_dir)
    assert "model.safetensors" in files, files
    src = load_file(os.path.join(bf16_dir, "model.safetensors"))
    fp8_sd, deq_sd, quantized = {}, {}, []
    for n in sorted(src):
        t = src[n]
        if FP8_QUANT_RE.match(n):
            assert t.dim() == 2 and t.dtype == torch.bfloat16, n
            q, s = oc.fp8_block_quantize(t)
            fp8_sd[n] = q
            fp8_sd[n + "_scale_inv"] = s
            deq_sd[n] = oc.fp8_block_dequantize(q, s)
            quantized.append(n)
        else:
            fp8_sd[n] = t
            deq_sd[n] = t.float()
    save_file(fp8_sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    save_file(deq_sd, os.path.join(deq_dir, "model.safetensors"), metadata={"format": "pt"})
    for f in ("config.json", "generation_config.json"):
        if os.path.exists(os.path.join(bf16_dir, f)):
            shutil.copy(os.path.join(bf16_dir, f), os.path.join(deq_dir, f))
    if os.path.exists(os.path.join(bf16_dir, "generation_config.json")):
        m16.generation_config.save_pretrained(out_dir)
    qcfg = copy.deepcopy(m16.config)
    qcfg.quantization_config = dict(FP8_QUANT_CONFIG)
    qcfg.save_pretrained(out_dir)
    return deq_dir, quantized, deq_sd


def expected_fp8_state(m16, deq_sd):
    """In-memory (fused-expert) fp32 state dict the golden model must hold for the fp8 config."""
    exp = {k: v.float().clone() for k, v in m16.state_dict().items()}
    cfg = m16.config
    I = cfg.moe_intermediate_size
    for n, v in deq_sd.items():
        m = re.match(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$", n)
        if m:
            base, e, which = m.group(1), int(m.group(2)), m.group(3)
            if which == "down_proj":
                exp[base + ".down_proj"][e] = v
            elif which == "gate_proj":
                exp[base + ".gate_up_proj"][e, :I] = v
            else:
                exp[base + ".gate_up_proj"][e, I:] = v
        else:
            exp[n] = v
    if cfg.tie_word_embeddings:
        exp["lm_head.weight"] = exp["model.embed_tokens.weight"]
    return exp


def save_npys(out_dir, ids, arts):
    np.save(os.path.join(out_dir, "input_ids.npy"), ids.numpy().astype(np.int64))
    for k, v in arts.items():
        np.save(os.path.join(out_dir, f"{k}.npy"), v)


def config_summary(cfg):
    keys = [
        "vocab_size", "hidden_size", "num_hidden_layers", "first_k_dense_replace", "mlp_layer_types", "indexer_types",
        "intermediate_size", "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
        "n_group", "topk_group", "norm_topk_prob", "routed_scaling_factor", "num_attention_heads",
        "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
        "index_n_heads", "index_head_dim", "index_topk", "index_topk_pattern", "rope_parameters", "rms_norm_eps", "tie_word_embeddings",
        "eos_token_id", "pad_token_id", "bos_token_id",
    ]
    return {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}


def safetensors_summary(out_dir):
    names, dtypes = [], {}
    for f in oc.dir_files(out_dir):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(out_dir, f), "pt") as sf:
                for k in sf.keys():
                    names.append(k)
                    dt = sf.get_slice(k).get_dtype()
                    dtypes[dt] = dtypes.get(dt, 0) + 1
    return sorted(names), dtypes


def reference_check(out_dir, log):
    """Independent from-the-files fp32 forward (oracle_common.reference_logits) vs the saved HF logits."""
    ids = np.load(os.path.join(out_dir, "input_ids.npy"))
    ref = oc.reference_logits(out_dir, ids).numpy()
    hf = np.load(os.path.join(out_dir, "logits.npy"))
    rel = float(np.abs(ref - hf).max() / np.abs(hf).max())
    same_argmax = bool((ref.argmax(-1) == hf.argmax(-1)).all())
    log(f"  independent reference forward vs HF: max|diff|/max|logit| = {rel:.2e}, same argmax: {same_argmax}")
    assert rel < 1e-4 and same_argmax, f"{out_dir}: reference forward disagrees with transformers ({rel})"
    return rel


def write_oracle(out_dir, info):
    files = {f: oc.sha256_file(os.path.join(out_dir, f)) for f in oc.dir_files(out_dir) if f != "ORACLE.json"}
    info = dict(info)
    info["files_sha256"] = files
    oc.write_json(os.path.join(out_dir, "ORACLE.json"), info)


def command_line():
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    exe = sys.executable
    rel = os.path.relpath(exe, REPO)
    py = rel if not rel.startswith("..") else exe
    return " ".join([py, script] + sys.argv[1:])


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


SETTINGS = {
    "dtype": "float32 (weights: the bf16-rounded values, or the dequantized fp8 values for fp8)",
    "attn_implementation": "eager",
    "experts_implementation": "eager",
    "device": "cpu",
    "batch": 1,
    "padding": "none",
    "attention_mask": "none (default causal)",
    "position_ids": "default 0..T-1",
    "use_cache": False,
    "torch.use_deterministic_algorithms": True,
    "torch.set_num_threads": 1,
}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def build_base(name, spec, out_root, tmp, log, max_tries=40):
    out_dir = os.path.join(out_root, name)
    for seed in range(spec["seed"], spec["seed"] + max_tries):
        fresh_dir(out_dir)
        cfg = make_config(spec)
        model_cls = model_classes(spec)[1]
        m16 = model_cls._from_config(cfg, dtype=torch.bfloat16)
        init_weights(m16, seed)
        assert m16.model.rotary_emb.inv_freq.dtype == torch.float32
        ids = torch.randint(4, cfg.vocab_size, (spec["T"],), generator=torch.Generator().manual_seed(seed + 1000003))
        extra = {}
        if spec.get("fp8"):
            src, quantized, deq_sd = write_fp8(m16, out_dir, tmp)
            golden = load_golden_model(src, model_cls)
            check_same_weights(golden, expected_fp8_state(m16, deq_sd))
            extra["fp8_quantized_tensors"] = len(quantized)
            extra["fp8_quantization_config"] = FP8_QUANT_CONFIG
            extra["fp8_note"] = (
                "weights quantized per 128x128 tile (partial tiles at the edges): scale_inv = amax(|tile|)/448 (fp32), "
                "fp8 = float8_e4m3fn(clamp(w/scale_inv, +-448)) (round to nearest even); goldens use "
                "fp8.float()*scale_inv computed in fp32 (one multiply). Not quantized: embed_tokens, lm_head, norms, "
                "mlp.gate (router), e_score_correction_bias (F32), indexer.weights_proj, indexer.k_norm."
            )
        else:
            m16.save_pretrained(out_dir)
            if spec.get("drop_config_keys"):
                extra.update(drop_config_keys(out_dir, spec["drop_config_keys"], m16))
            golden = load_golden_model(out_dir, model_cls)
            check_same_weights(golden, m16.state_dict())
            if spec.get("drop_config_keys"):
                assert golden.config.indexer_types == m16.config.indexer_types, golden.config.indexer_types
        ok, arts, checks = analyse(golden, ids, name, log)
        if ok:
            return dict(seed=seed, cfg=golden.config, m16=m16, ids=ids, arts=arts, checks=checks, extra=extra,
                        out_dir=out_dir)
        log(f"  [{name}] seed {seed} rejected, trying {seed + 1}")
    raise RuntimeError(f"{name}: no seed passed the checks")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "models"))
    ap.add_argument("--only", nargs="*", default=None, help="subset of configs/variants to (re)generate")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()

    def log(msg):
        print(msg, flush=True)

    wanted = set(args.only) if args.only else set(CONFIGS) | set(VARIANTS)
    need_base = {n for n in CONFIGS if n in wanted} | {VARIANTS[v]["base"] for v in VARIANTS if v in wanted}
    os.makedirs(args.out, exist_ok=True)
    common = dict(command=command_line(), versions=versions(), settings=SETTINGS, init=INIT_DESC)

    results = {}
    with tempfile.TemporaryDirectory(prefix="glm_oracle_") as tmp:
        for name, spec in CONFIGS.items():
            if name not in need_base:
                continue
            log(f"== {name}")
            r = build_base(name, spec, args.out if name in wanted else os.path.join(tmp, "bases"), tmp, log)
            results[name] = r
            for k, v in r["checks"].items():
                log(f"  {k}: {v}")
            if name in wanted:
                save_npys(r["out_dir"], r["ids"], r["arts"])
                names, dtypes = safetensors_summary(r["out_dir"])
                info = dict(common, name=name, description=spec["desc"], seed=r["seed"], T=spec["T"],
                            config=config_summary(r["cfg"]), checks=r["checks"], tensor_dtypes=dtypes,
                            num_tensors=len(names), **r["extra"])
                info["checks"] = dict(info["checks"], reference_forward_max_rel_diff=reference_check(r["out_dir"], log))
                write_oracle(r["out_dir"], info)

        for vname, vspec in VARIANTS.items():
            if vname not in wanted:
                continue
            log(f"== {vname} (from {vspec['base']})")
            b = results[vspec["base"]]
            out_dir = os.path.join(args.out, vname)
            fresh_dir(out_dir)
            b["m16"].save_pretrained(out_dir, **vspec["save_kwargs"])
            golden = load_golden_model(out_dir)
            check_same_weights(golden, b["m16"].state_dict())
            logits = forward(golden, b["ids"])
            assert np.array_equal(logits.numpy(), b["arts"]["logits"]), f"{vname}: logits differ from {vspec['base']}"
            names, dtypes = safetensors_summary(out_dir)
            files = oc.dir_files(out_dir)
            if vname == "fused_experts":
                fused = [n for n in names if ".mlp.experts." in n]
                assert fused and all(n.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")) for n in fused), fused
                log(f"  fused expert tensors: {fused}")
            if vname == "sharded":
                shards = [f for f in files if f.endswith(".safetensors")]
                assert len(shards) >= 2 and "model.safetensors.index.json" in files, files
                log(f"  shards: {shards}")
            log("  logits identical to base: True")
            # loader-layout variants carry only the inputs and logits; debug arrays live in the base folder
            save_npys(out_dir, b["ids"], {"logits": b["arts"]["logits"]})
            info = dict(common, name=vname, description=vspec["desc"], derived_from=vspec["base"], seed=b["seed"],
                        T=int(b["ids"].shape[0]), config=config_summary(golden.config), checks=b["checks"],
                        tensor_dtypes=dtypes, num_tensors=len(names),
                        save_pretrained_kwargs=vspec["save_kwargs"],
                        debug_arrays=f"see ../{vspec['base']}/ (hidden_states, indexer_scores, dsa_selected, router_*)")
            info["checks"] = dict(info["checks"], reference_forward_max_rel_diff=reference_check(out_dir, log))
            write_oracle(out_dir, info)

    total = 0
    for d in sorted(os.listdir(args.out)):
        p = os.path.join(args.out, d)
        if os.path.isdir(p):
            size = sum(os.path.getsize(os.path.join(p, f)) for f in oc.dir_files(p))
            total += size
            log(f"{d}: {size / 1024:.1f} KiB")
    log(f"total: {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
