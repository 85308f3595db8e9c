#!/usr/bin/env python3
"""Make models/tiny-glm5-random: a tiny GlmMoeDsaForCausalLM with random weights and the small
GLM-5-form tokenizer of tests/golden/tokenizer, so that tests have a complete Hugging Face model
folder (config, bf16 safetensors, tokenizer, chat template, generation config) to run end to end.
It has learned nothing: its text is noise. The demo runs the trained models/tiny-glm5 instead.

Usage (repository root): .venv/bin/python tools/oracle/make_demo_model.py [--out models/tiny-glm5-random]
Deterministic: rerunning writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GenerationConfig, GlmMoeDsaConfig, GlmMoeDsaForCausalLM  # noqa: E402

TOKENIZER_DIR = "tests/golden/tokenizer"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/tiny-glm5-random")
    args = ap.parse_args()

    tok = json.load(open(os.path.join(TOKENIZER_DIR, "tokenizer.json"), encoding="utf-8"))
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    n_ids = max(max(tok["model"]["vocab"].values()), max(added.values())) + 1
    vocab = (n_ids + 63) // 64 * 64  # padded like GLM-5's embedding
    eos = [added["<|endoftext|>"], added["<|user|>"], added["<|observation|>"]]

    torch.manual_seed(0)
    cfg = GlmMoeDsaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
        first_k_dense_replace=1, routed_scaling_factor=2.5, index_n_heads=4, index_head_dim=16, index_topk=32,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-5,
        max_position_embeddings=4096, tie_word_embeddings=False,
        eos_token_id=eos, pad_token_id=added["<|endoftext|>"], bos_token_id=None,
        architectures=["GlmMoeDsaForCausalLM"])
    model = GlmMoeDsaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    model = model.to(torch.bfloat16)
    for layer in model.model.layers:  # the correction bias stays fp32, as transformers keeps it
        if hasattr(layer.mlp, "gate"):
            layer.mlp.gate.e_score_correction_bias.data = layer.mlp.gate.e_score_correction_bias.data.float()

    tmp = args.out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    GenerationConfig(eos_token_id=eos, pad_token_id=added["<|endoftext|>"], do_sample=True,
                     temperature=1.0, top_p=0.95).save_pretrained(tmp)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(TOKENIZER_DIR, f)):
            shutil.copy(os.path.join(TOKENIZER_DIR, f), os.path.join(tmp, f))
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
        f.write("# tiny-glm5-random\n\nA tiny `GlmMoeDsaForCausalLM` with **random weights** (it has learned nothing)\n"
                "and the small GLM-5-form tokenizer of `tests/golden/tokenizer`, made by\n"
                f"`{' '.join(['.venv/bin/python'] + sys.argv)}` with torch {torch.__version__} and transformers "
                f"{transformers.__version__}.\nIt exists so that tests run a complete model folder end to end; `make demo` runs the trained\n"
                "`models/tiny-glm5`.\n")
    shutil.rmtree(args.out, ignore_errors=True)
    os.rename(tmp, args.out)
    print(f"wrote {args.out}: vocab {vocab}, {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
