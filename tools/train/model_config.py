"""The tiny GLM-5 (`glm_moe_dsa`) configuration trained by tools/train/train.py.

Every feature of the real GLM-5 is present, scaled down: dense layer(s) then MoE layers, >= 32 routed
experts with top-k >= 4 and one shared expert, sigmoid routing with `e_score_correction_bias`, MLA with q and
kv low-rank paths, a DSA lightning indexer whose `index_topk` is below the training context.

Sizes obey vLLM Marlin's int4 constraints for every Linear that will be quantized
(in-features % 128 == 0, out-features % 64 == 0); `check_marlin` asserts this on a built model.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import GlmMoeDsaConfig

# Candidate presets measured in tools/train/README.md ("Choosing the size").
_S256 = dict(
    hidden_size=256,
    num_hidden_layers=6,
    first_k_dense_replace=1,
    intermediate_size=768,
    num_attention_heads=4,
    q_lora_rank=128,
    kv_lora_rank=128,
    qk_nope_head_dim=64,
    qk_rope_head_dim=64,
    v_head_dim=64,
    index_n_heads=8,
    index_head_dim=128,
    n_routed_experts=32,
    num_experts_per_tok=4,
    n_shared_experts=1,
    moe_intermediate_size=128,
)
PRESETS: dict[str, dict] = {
    # hidden 256, 6 layers (1 dense + 5 MoE), 32 experts top-4, moe_intermediate 128
    "s256": _S256,
    # hidden 384, 6 layers, wider attention
    "s384": {**_S256, "hidden_size": 384, "intermediate_size": 1152, "num_attention_heads": 6},
    # hidden 256, 4 layers (1 dense + 3 MoE): the fastest
    "s256l4": {**_S256, "num_hidden_layers": 4},
}


def special_ids(tokenizer_json: str | Path) -> dict[str, int]:
    tok = json.loads(Path(tokenizer_json).read_text())
    return {a["content"]: a["id"] for a in tok["added_tokens"]}


def vocab_size_of(tokenizer_json: str | Path) -> int:
    tok = json.loads(Path(tokenizer_json).read_text())
    ids = list(tok["model"]["vocab"].values()) + [a["id"] for a in tok["added_tokens"]]
    return max(ids) + 1


def make_config(tokenizer_json: str | Path, preset: str, context: int, index_topk: int) -> GlmMoeDsaConfig:
    sp = special_ids(tokenizer_json)
    eot, user, obs = sp["<|endoftext|>"], sp["<|user|>"], sp["<|observation|>"]
    p = dict(PRESETS[preset])
    n = p["num_hidden_layers"]
    k = p["first_k_dense_replace"]
    cfg = GlmMoeDsaConfig(
        vocab_size=vocab_size_of(tokenizer_json),
        num_key_value_heads=p["num_attention_heads"],  # must equal heads in HF (D13)
        mlp_layer_types=["dense"] * k + ["sparse"] * (n - k),
        indexer_types=["full"] * n,
        index_topk=index_topk,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        initializer_range=0.02,
        bos_token_id=None,
        eos_token_id=[eot, user, obs],
        pad_token_id=eot,
        use_cache=True,
        **p,
    )
    assert cfg.index_topk < context, "index_topk must be below the training context so DSA is sparse"
    return cfg


QUANTIZED_SUFFIXES = (
    "self_attn.q_a_proj",
    "self_attn.q_b_proj",
    "self_attn.kv_a_proj_with_mqa",
    "self_attn.kv_b_proj",
    "self_attn.o_proj",
    "self_attn.indexer.wq_b",
    "self_attn.indexer.wk",
    "mlp.shared_experts.gate_proj",
    "mlp.shared_experts.up_proj",
    "mlp.shared_experts.down_proj",
)


def check_marlin(model) -> list[str]:
    """Assert Marlin's int4 shape rules on every Linear that will be quantized. Returns the names checked."""
    import torch

    checked = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.endswith(QUANTIZED_SUFFIXES):
            out_f, in_f = mod.weight.shape
            assert in_f % 128 == 0 and out_f % 64 == 0, f"{name}: [{out_f},{in_f}] violates Marlin (in%128, out%64)"
            checked.append(name)
        if name.endswith("mlp.experts"):
            E, two_i, h = mod.gate_up_proj.shape  # per expert: gate [I,H], up [I,H]
            _, h2, i = mod.down_proj.shape  # per expert: down [H,I]
            assert h % 128 == 0 and (two_i // 2) % 64 == 0, f"{name}.gate/up [{two_i // 2},{h}] violates Marlin"
            assert i % 128 == 0 and h2 % 64 == 0, f"{name}.down [{h2},{i}] violates Marlin"
            checked.append(name)
    assert checked, "no quantizable Linear found"
    cfg = model.config
    n_moe = sum(t == "sparse" for t in cfg.mlp_layer_types)
    assert n_moe >= 1 and cfg.mlp_layer_types[0] == "dense"
    assert cfg.n_routed_experts >= 32 and cfg.num_experts_per_tok >= 4 and cfg.n_shared_experts == 1
    assert cfg.index_head_dim > cfg.qk_rope_head_dim
    return checked
