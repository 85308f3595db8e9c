#!/usr/bin/env python3
"""Export a training checkpoint (data/train/<run>/ckpt.pt) as a Hugging Face model folder with bf16 weights.

    .venv/bin/python tools/train/export.py --run tiny-v1 --out models/tiny-glm5

Writes config.json, generation_config.json and model.safetensors (bf16; `e_score_correction_bias` F32 as
transformers keeps it, D10) into OUT, built in a temporary folder and moved in file by file; tokenizer files
already in OUT are kept (and copied from --tokenizer-dir when OUT lacks them). The model is created with
dtype=bfloat16 at construction (never `.to(bf16)`), so the keep-in-fp32 plan applies and `inv_freq` stays fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")


def export_model(state_dict: dict, cfg, out: Path, tokenizer_dir: Path | None, meta: dict | None = None,
                 trained_context: int | None = None) -> Path:
    from transformers import GenerationConfig, GlmMoeDsaConfig, GlmMoeDsaForCausalLM

    cfg = GlmMoeDsaConfig.from_dict(cfg.to_dict()) if not isinstance(cfg, dict) else GlmMoeDsaConfig.from_dict(cfg)
    if trained_context is not None:
        # With default RoPE max_position_embeddings changes no weight and no computation; it tells users (and
        # `whittle eval`'s default window) how long the sequences were that the model was trained on.
        cfg.max_position_embeddings = trained_context
    model = GlmMoeDsaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(state_dict, strict=True), None
    for n, b in model.named_buffers():
        if n.endswith("e_score_correction_bias"):
            assert b.dtype == torch.float32, f"{n} is {b.dtype}"
        if n.endswith("inv_freq"):
            assert b.dtype == torch.float32, f"{n} is {b.dtype}"
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16, f"{n} is {p.dtype}"
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        top_k=50,
        max_new_tokens=256,
        eos_token_id=list(cfg.eos_token_id),
        pad_token_id=cfg.pad_token_id,
        bos_token_id=None,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if meta:
            (Path(tmp) / "TRAINING_STATE.json").write_text(json.dumps(meta, indent=1) + "\n")
        for f in MODEL_FILES + (("TRAINING_STATE.json",) if meta else ()):
            os.chmod(Path(tmp) / f, 0o644)  # save_pretrained's safetensors file comes out 0600
            os.replace(Path(tmp) / f, out / f)
    if tokenizer_dir is not None:
        for f in TOKENIZER_FILES:
            if not (out / f).exists() and (Path(tokenizer_dir) / f).exists():
                shutil.copy2(Path(tokenizer_dir) / f, out / f)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default="models/tiny-glm5")
    ap.add_argument("--tokenizer-dir", default="models/tiny-glm5")
    ap.add_argument("--ckpt", default=None, help="default: data/train/<run>/ckpt.pt")
    a = ap.parse_args()
    os.chdir(ROOT)
    ck = torch.load(a.ckpt or f"data/train/{a.run}/ckpt.pt", map_location="cpu", weights_only=False)
    st = ck["state"]
    meta = {"run": a.run, "step": st["step"], "steps": ck["args"]["steps"], "tokens": st["tokens"],
            "train_seconds": st["train_seconds"]}
    out = export_model(ck["model"], ck["config"], Path(a.out), Path(a.tokenizer_dir), meta=None,
                       trained_context=ck["args"]["context"])
    meta["out"] = str(a.out)
    # what was exported where (read by report.py / model_card.py); not written into the model folder
    Path(f"data/train/{a.run}/exported.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))
    print(f"wrote {out}: " + ", ".join(f"{f} {(out / f).stat().st_size} B" for f in MODEL_FILES))


if __name__ == "__main__":
    main()
