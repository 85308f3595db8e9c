#!/usr/bin/env python3
"""Reference AutoRound run: auto-round (PyPI 0.16.1) itself, on CPU, on a GLM-5 checkpoint, with given calibration ids.

Usage (from the repository root):
    .venv/bin/python bench/autoround_reference.py MODEL OUT --calib-ids IDS.npy \
        [--iters 200] [--batch 8] [--seed 42] [--limit-blocks N] [--threads 2] [--json PATH]

- MODEL: a bf16 GlmMoeDsaForCausalLM checkpoint (e.g. models/tiny-glm5), loaded with
  AutoModelForCausalLM.from_pretrained(dtype=bfloat16).
- IDS.npy: int32 [samples, seqlen] token ids (what `whittle quantize --save-calibration` writes). Every row is given to
  auto-round as one [1, seqlen] LongTensor (dataset = list of tensors); nsamples = samples, seqlen = seqlen.
- Runs AutoRound(model, tokenizer=AutoTokenizer.from_pretrained(MODEL), device_map="cpu", bits=4, group_size=128,
  sym=True, iters, nsamples, seqlen, batch_size, seed, enable_torch_compile=False, disable_model_free=True)
  .quantize_and_save(OUT, format="auto_gptq"), with the indexer edit of tools/oracle/make_quantize_golden.py:
  "indexer" is removed from auto-round's predefined glm_moe_dsa ignore list (in this process, before AutoRound is
  built), so the indexer's wq_b / wk are quantized as in the published recipe (weights_proj stays bf16).
  auto-round writes into a subfolder of OUT; its contents are moved up so OUT itself is the checkpoint.
- Records per decoder block (by wrapping, behaviour unchanged):
    * wall time of AlgorithmComposer.compress_block (FP targets + tuning + quantized outputs for the next block) and
      of SignRoundQuantizer.quantize_block (the tuning alone: wrap, 200 iterations, unwrap);
    * auto-round's own "loss iter 0: A -> iter N: B" log line (those numbers are auto-round's total_loss: with a
      valid-token mask in use they are the mean MSE divided by the number of valid tokens of the mini-batch);
    * the raw per-iteration MSE that auto-round back-propagates (the return of _get_loss, i.e. MSELoss(mean) of the fp32
      block outputs, before the x1000), so iter 0 / best can be compared with whittle's loss;
    * amp / amp_dtype, the threads, and the load average.
  The json (default OUT/../autoround_blocks.json) also holds versions, settings, total time, the log lines.
- --limit-blocks N stops after N decoder blocks (no export): for timing estimates.

auto-round patches transformers' MoE classes when imported; this script never builds a model without it.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import re
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402


class StopAfterBlocks(Exception):
    pass


def loadavg() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--calib-ids", required=True)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--limit-blocks", type=int, default=0, help="stop after N decoder blocks (no export)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="default: OUT/../autoround_blocks.json")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    out = os.path.abspath(a.out)
    json_path = os.path.abspath(a.json) if a.json else os.path.join(os.path.dirname(out), "autoround_blocks.json")
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    t_start = time.time()

    import auto_round
    import transformers
    from auto_round import AutoRound
    from auto_round.algorithms.composer import AlgorithmComposer
    from auto_round.algorithms.quantization.sign_round.quantizer import SignRoundQuantizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rec: dict = dict(
        command=" ".join([sys.executable] + sys.argv),
        versions=dict(auto_round=getattr(auto_round, "__version__", "?"), torch=torch.__version__,
                      transformers=transformers.__version__, numpy=np.__version__,
                      python=platform.python_version()),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), loadavg_start=loadavg()),
        blocks=[], log=[], warnings=[])

    # ---- the indexer edit (tools/oracle/make_quantize_golden.py's, variant "recipe") ----
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "oracle"))
    from make_quantize_golden import glm_moe_dsa_indexer_edit

    rec["glm_moe_dsa_ignore_rule_as_shipped"], rec["glm_moe_dsa_ignore_rule_used"] = glm_moe_dsa_indexer_edit()

    # ---- capture auto-round's log ----
    class Cap(logging.Handler):
        def emit(self, r):
            try:
                msg = r.getMessage()
            except Exception:  # noqa: BLE001
                msg = str(r.msg)
            rec["log"].append(f"{time.strftime('%H:%M:%S', time.gmtime(r.created))} {r.levelname} {msg}")
            if r.levelno >= logging.WARNING:
                rec["warnings"].append(msg)
            m = re.search(r"quantized (\d+)/(\d+) layers in the block, loss iter 0: (\S+) -> iter (\d+): (\S+)", msg)
            if m and cur.get("block") is not None:
                cur["block"]["ar_log"] = dict(quantized=int(m.group(1)), total=int(m.group(2)),
                                              loss_iter0=float(m.group(3)), best_iter=int(m.group(4)),
                                              loss_best=float(m.group(5)))
            m = re.search(r"Unquantized layers: (.*)", msg)
            if m and cur.get("block") is not None:
                cur["block"]["unquantized_layers"] = m.group(1)

    arlog = logging.getLogger("autoround")
    arlog.addHandler(Cap())
    for n in ("transformers", "py.warnings"):
        logging.getLogger(n).addHandler(Cap())
    logging.captureWarnings(True)

    # ---- wrappers (behaviour unchanged) ----
    cur: dict = {"block": None}
    orig_compress_block = AlgorithmComposer.compress_block
    orig_quantize_block = SignRoundQuantizer.quantize_block
    orig_get_loss = SignRoundQuantizer._get_loss

    def compress_block(self, block, *args, **kw):
        ctx = kw.get("block_ctx")
        b = dict(index=len(rec["blocks"]), name=getattr(ctx, "block_name", None),
                 loadavg_start=loadavg(), threads=torch.get_num_threads(), raw_mse=[])
        rec["blocks"].append(b)
        cur["block"] = b
        t0 = time.time()
        r = orig_compress_block(self, block, *args, **kw)
        b["block_s"] = round(time.time() - t0, 3)
        b["loadavg_end"] = loadavg()
        mse = b.pop("raw_mse")
        ts = b.pop("_t", [])
        if len(ts) > 1:
            b["s_per_iter"] = round((ts[-1] - ts[0]) / (len(ts) - 1), 3)
        if mse:
            best = min(range(len(mse)), key=lambda i: (mse[i], i))
            b["raw_mse_iter0"] = mse[0]
            b["raw_mse_at_ar_best_iter"] = (mse[b["ar_log"]["best_iter"]]
                                            if "ar_log" in b and b["ar_log"]["best_iter"] < len(mse) else None)
            b["raw_mse_min"] = mse[best]
            b["raw_mse_min_iter"] = best
            b["raw_mse_curve"] = mse
        print(f"[ref] block {b['index']} {b['name']}: {b['block_s']:.1f} s (tuning {b.get('tune_s', 0):.1f} s) "
              f"ar {b.get('ar_log')} raw mse iter0 {b.get('raw_mse_iter0')} -> best-iter "
              f"{b.get('raw_mse_at_ar_best_iter')} load {b['loadavg_end']}", flush=True)
        with open(json_path, "w") as f:
            json.dump(rec, f, indent=1)
        if a.limit_blocks and len(rec["blocks"]) >= a.limit_blocks:
            raise StopAfterBlocks()
        return r

    def quantize_block(self, block, *args, **kw):
        b = cur["block"]
        mc = getattr(self, "model_context", None)
        if b is not None:
            b["amp"] = bool(getattr(mc, "amp", False))
            b["amp_dtype"] = str(getattr(mc, "amp_dtype", None))
            b["block_param_dtypes"] = sorted({str(p.dtype) for p in block.parameters()})
            fi = args[0] if args else None
            if isinstance(fi, list) and fi and isinstance(fi[0], torch.Tensor):
                b["input_dtype"] = str(fi[0].dtype)
                b["nsamples"] = len(fi)
        t0 = time.time()
        r = orig_quantize_block(self, block, *args, **kw)
        if b is not None:
            b["tune_s"] = round(time.time() - t0, 3)
            vm = getattr(self, "_cached_valid_token_mask", None)
            b["valid_token_mask"] = (None if vm is None else
                                     dict(masked_positions=int(sum((m == 0).sum().item() for m in vm)),
                                          total_positions=int(sum(m.numel() for m in vm))))
        return r

    def get_loss(self, *args, **kw):
        loss = orig_get_loss(self, *args, **kw)
        if cur["block"] is not None and "raw_mse" in cur["block"]:
            b = cur["block"]
            b["raw_mse"].append(loss.item())
            b.setdefault("_t", []).append(time.time())
            n = len(b["raw_mse"])
            if n % 20 == 0:
                dt = b["_t"][-1] - b["_t"][-20] if n > 20 else b["_t"][-1] - b["_t"][0]
                print(f"[ref]   block {b['index']} iter {n}: mse {b['raw_mse'][-1]:.4g} "
                      f"({dt / (20 if n > 20 else 19):.2f} s/iter, load {loadavg()}) {time.strftime('%H:%M:%S')}",
                      flush=True)
        return loss

    AlgorithmComposer.compress_block = compress_block
    SignRoundQuantizer.quantize_block = quantize_block
    SignRoundQuantizer._get_loss = get_loss

    # ---- data, model ----
    ids = np.load(a.calib_ids)
    assert ids.ndim == 2, ids.shape
    nsamples, seqlen = ids.shape
    dataset = [torch.from_numpy(ids[i: i + 1].astype(np.int64)) for i in range(nsamples)]
    tok = AutoTokenizer.from_pretrained(a.model)
    rec["calibration"] = dict(path=os.path.abspath(a.calib_ids), dtype=str(ids.dtype), shape=list(ids.shape),
                              tokenizer_pad_token_id=tok.pad_token_id,
                              pad_tokens_in_ids=int((ids == tok.pad_token_id).sum()) if tok.pad_token_id is not None
                              else None)
    settings = dict(bits=4, group_size=128, sym=True, iters=a.iters, nsamples=nsamples, seqlen=seqlen,
                    batch_size=a.batch, seed=a.seed, enable_torch_compile=False, disable_model_free=True,
                    device_map="cpu")
    rec["settings"] = dict(settings, format="auto_gptq", limit_blocks=a.limit_blocks, threads=a.threads,
                           model=os.path.abspath(a.model), out=out)
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16)
    rec["model_class"] = type(model).__name__
    rec["load_s"] = round(time.time() - t0, 3)

    tmp = out + ".ar"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    t0 = time.time()
    ar = AutoRound(model, tokenizer=tok, dataset=dataset, **settings)
    rec["construct_s"] = round(time.time() - t0, 3)
    rec["threads_after_construct"] = torch.get_num_threads()
    t0 = time.time()
    stopped = False
    try:
        ar.quantize_and_save(tmp, format="auto_gptq")
    except StopAfterBlocks:
        stopped = True
    rec["quantize_and_save_s"] = round(time.time() - t0, 3)
    rec["stopped_after_blocks"] = stopped
    if not stopped:
        subdirs = sorted({os.path.dirname(p) for p in glob.glob(os.path.join(tmp, "**", "config.json"),
                                                                  recursive=True)})
        assert len(subdirs) == 1, subdirs
        if os.path.exists(out):
            shutil.rmtree(out)
        shutil.move(subdirs[0], out)
        rec["auto_round_output_subfolder"] = os.path.relpath(subdirs[0], tmp)
        shutil.rmtree(tmp)
        rec["export_files"] = sorted(os.listdir(out))
    bt = [b.get("block_s", 0) for b in rec["blocks"]]
    tt = [b.get("tune_s", 0) for b in rec["blocks"]]
    rec["blocks_total_s"] = round(sum(bt), 3)
    rec["tune_total_s"] = round(sum(tt), 3)
    rec["total_s"] = round(time.time() - t_start, 3)
    rec["machine"]["loadavg_end"] = loadavg()
    with open(json_path, "w") as f:
        json.dump(rec, f, indent=1)
    print(f"[ref] total {rec['total_s']:.1f} s; blocks {rec['blocks_total_s']:.1f} s; json {json_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
