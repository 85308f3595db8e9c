#!/usr/bin/env python3
"""PyTorch (transformers, bf16 weights, CPU) on the bundled model: prefill and greedy decode speed,
measured like `whittle bench` (random prompt ids, then greedy decode with the KV cache), with the
same thread count. Prints one JSON line. Needs the project's .venv (torch, transformers).

    .venv/bin/python bench/torch_reference.py models/tiny-glm5 --prompt-tokens 128 --gen-tokens 64 --threads 2
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--prompt-tokens", type=int, default=128)
ap.add_argument("--gen-tokens", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

torch.set_num_threads(args.threads)
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
model.eval()
g = torch.Generator().manual_seed(args.seed)
ids = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens), generator=g)


@torch.inference_mode()
def run():
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    t_prefill = time.perf_counter() - t0
    past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(args.gen_tokens):
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return t_prefill, time.perf_counter() - t0


run()  # warm-up
t_prefill, t_decode = run()
print(json.dumps({"engine": f"transformers {transformers.__version__} torch {torch.__version__}",
                  "dtype": args.dtype, "threads": args.threads, "model": args.model,
                  "prompt_tokens": args.prompt_tokens,
                  "prefill_tokens_per_s": args.prompt_tokens / t_prefill,
                  "gen_tokens": args.gen_tokens,
                  "decode_tokens_per_s": args.gen_tokens / t_decode}))
