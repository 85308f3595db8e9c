#!/usr/bin/env python3
"""Check that a GPTQ checkpoint written by `whittle quantize` loads and computes correctly in the outside loaders.

Usage (from anywhere; needs auto-round and gptqmodel in .venv, see tools/oracle/README.md "GPTQ goldens"):
    .venv/bin/python tools/oracle/check_gptq_export.py EXPORT [--ids 1,2,3] [--name NAME] [--out /tmp/loadcheck]

The export is loaded by
  * gptqmodel: `GPTQModel.load(EXPORT, device="cpu", ...)`, three ways: its plain torch kernel in float16
    (`backend=BACKEND.GPTQ_TORCH, dtype=float16`), its defaults (no dtype, no backend: the config's dtype and the
    kernel it picks), and `dtype=float32` (its default CPU kernel for float32);
  * transformers + auto-round's inference backend: `AutoModelForCausalLM.from_pretrained(EXPORT,
    quantization_config=AutoRoundConfig(), dtype=..., device_map="cpu", output_loading_info=True)` with dtype
    float32 (auto-round forces float16), bfloat16 and the config's dtype ("auto").
Each library runs in its own subprocess (`--worker gptqmodel|autoround`), with cwd = the work folder (gptqmodel
writes a `logs/` folder into the cwd), as make_gptq_goldens.py does.

For every load:
  keys      checkpoint tensor names vs the loaded model's state_dict names (missing = in the model, not in the
            file; unexpected = in the file, not in the model) plus the loader's own report (transformers'
            loading info; for gptqmodel a hook on accelerate.load_checkpoint_in_model, which it loads GPTQ
            checkpoints with). Every unquantized file tensor is compared with the loaded tensor (file value cast
            to the loaded dtype): a tensor left at its random init shows up here even when no key is reported.
            Unexpected `g_idx` keys of modules whose loaded class has no g_idx (auto-round's torch_zp backend for
            desc_act=False) are accepted when the file's g_idx is k // group_size (the backend then computes
            exactly that); any other missing/unexpected key fails.
  modules   the QuantLinear classes used and how many modules; the loaded bits/group_size per module vs the file;
            every module the `dynamic` "-:" rules keep in 16 bit must be a plain nn.Linear.
  dequant   the library's own dequantized weight of every quantized module vs whittle's (the checkpoint read with
            the independent numpy unpacker oracle_common.gptq_dequantize): gptqmodel `dequantize_weight()` and
            auto-round QuantLinear.forward(identity), both with the fp16 scales converted to fp32 first, so every
            value is the exact product scale * (code - zero) and equality must be exact. Also the module's forward
            on an identity matrix in the runtime dtype vs whittle's weight rounded to that dtype (informative).
  logits    the library's logits for --ids vs whittle's (`whittle logits EXPORT --ids ...`): arg-max agreement,
            mean/max KL(whittle || library), max|diff| / max|logit|. Also vs an independent fp32 forward written
            from the spec (oracle_common.reference_logits, GPTQ dequantized by the numpy unpacker), to tell the
            library's rounding noise from whittle's.

Writes OUT/<name>_report.json (and prints it). Exit status 1 if a key is missing/unexpected (beyond the accepted
g_idx case), an unquantized tensor differs from the file, a dequantized weight differs, or the arg-max agreement
of a load is below --min-argmax (0.9), or a load or forward fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

import oracle_common as oc  # noqa: E402
from make_gptq_goldens import kl_and_argmax, lib_versions, quant_linear_shape, read_tensors  # noqa: E402

QSUF = ("qweight", "qzeros", "scales", "g_idx", "bias")


# ----------------------------------------------------------------------------------------------
# Shared helpers (main and workers)
# ----------------------------------------------------------------------------------------------
def checkpoint_tensors(d: str) -> dict:
    import oracle_common as oc

    t = {}
    for fn in oc.checkpoint_files(d):
        t.update(read_tensors(os.path.join(d, fn)))
    return t


def quant_config(d: str) -> dict:
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f).get("quantization_config") or {}


def whittle_weights(t: dict, qcfg: dict) -> dict:
    """{module: float32 [out, in]} from the independent numpy unpacker."""
    fmt = qcfg.get("checkpoint_format", "gptq")
    out = {}
    for m in oc.gptq_modules(t):
        out[m] = oc.gptq_dequantize(t[m + ".qweight"].numpy(), t[m + ".qzeros"].numpy(),
                                    t[m + ".scales"].float().numpy(), t[m + ".g_idx"].numpy(),
                                    checkpoint_format=fmt, v1_read="word")
    return out


def trivial_g_idx(t: dict, m: str) -> bool:
    K, _, _, groups = quant_linear_shape(t, m)
    return bool(torch.equal(t[m + ".g_idx"].long(), torch.arange(K) // (K // groups)))


def key_check(file_t: dict, model, loader_report: dict | None, qmods: list) -> dict:
    """Names, values of unquantized tensors, and the classification of missing/unexpected keys."""
    sd = model.state_dict()
    fkeys, mkeys = set(file_t), set(sd)
    missing = sorted(mkeys - fkeys)
    unexpected = sorted(fkeys - mkeys)
    if loader_report:
        missing = sorted(set(missing) | set(loader_report.get("missing_keys", [])))
        unexpected = sorted(set(unexpected) | set(loader_report.get("unexpected_keys", [])))
    mods = dict(model.named_modules())
    accepted, bad_unexpected = [], []
    for k in unexpected:
        mod, _, suf = k.rpartition(".")
        if (suf == "g_idx" and mod in qmods and mod in mods and not hasattr(mods[mod], "g_idx")
                and trivial_g_idx(file_t, mod)):
            accepted.append(k)
        else:
            bad_unexpected.append(k)
    # values: every file tensor that is not a GPTQ tensor of a quantized module, compared with the loaded one
    qset = set(qmods)
    differ, compared, meta, cast_inexact = [], 0, [], {}
    raw_differ, scales_bf16 = [], []
    for k, v in file_t.items():
        mod, _, suf = k.rpartition(".")
        if k not in sd:
            continue
        lt = sd[k]
        if lt.device.type == "meta":
            meta.append(k)
            continue
        if mod in qset and suf in QSUF:
            # packed tensors: qweight and scales must be the file's (qzeros may be converted v1 -> v2 in memory)
            if suf in ("qweight", "scales") and lt.shape == v.shape and not torch.equal(lt.to(v.dtype), v):
                if suf == "scales" and torch.equal(lt.float(), v.to(torch.bfloat16).float()):
                    scales_bf16.append(k)
                else:
                    raw_differ.append(k)
            continue
        compared += 1
        if lt.shape != v.shape or not torch.equal(lt, v.to(lt.dtype)):
            differ.append(k)
        if v.is_floating_point() and lt.dtype != v.dtype:
            back = v.to(lt.dtype).to(v.dtype)
            n_bad = int((back != v).sum())
            if n_bad:
                cast_inexact[k] = f"{n_bad}/{v.numel()} ({str(v.dtype)[6:]} -> {str(lt.dtype)[6:]})"
    return dict(
        file_tensors=len(fkeys), model_state_dict=len(mkeys),
        missing_keys=missing, unexpected_keys=bad_unexpected,
        unexpected_g_idx_accepted=len(accepted),
        unexpected_g_idx_accepted_note=("file g_idx of these modules is k // group_size; the loaded class has no "
                                        "g_idx and computes exactly that") if accepted else None,
        tensors_left_on_meta=meta,
        unquantized_tensors_compared=compared, unquantized_tensors_differing=differ,
        packed_tensors_differing=raw_differ,
        scales_rounded_to_bf16_by_loader=len(scales_bf16),
        unquantized_dtypes_loaded=sorted({str(sd[k].dtype)[6:] for k in file_t
                                          if k in sd and k.rpartition(".")[0] not in qset}),
        cast_not_exact=cast_inexact,
    )


def module_check(model, qmods: list, file_t: dict, qcfg: dict, is_quant) -> dict:
    mods = dict(model.named_modules())
    classes = {}
    for n, mm in mods.items():
        if is_quant(mm):
            classes.setdefault(f"{type(mm).__module__}.{type(mm).__name__}", 0)
            classes[f"{type(mm).__module__}.{type(mm).__name__}"] += 1
    loaded_q = sorted(n for n, mm in mods.items() if is_quant(mm))
    not_quant = [m for m in qmods if m not in mods or not is_quant(mods[m])]
    extra_quant = [m for m in loaded_q if m not in set(qmods)]
    bad_layout = []
    for m in qmods:
        mm = mods.get(m)
        if mm is None or not is_quant(mm):
            continue
        K, N, bits, groups = quant_linear_shape(file_t, m)
        gs = K // groups
        lb = getattr(mm, "bits", None)
        lg = getattr(mm, "group_size", None)
        if lg == -1:
            lg = K
        if (lb is not None and int(lb) != bits) or (lg is not None and int(lg) != gs):
            bad_layout.append(f"{m}: file bits {bits} group {gs}, loaded bits {lb} group {lg}")
    kept = []
    for n in sorted(file_t):
        if n.endswith(".weight") and file_t[n].dim() == 2:
            m = n[: -len(".weight")]
            key, skip, _ = oc.gptq_dynamic_rule(m, qcfg)
            if skip:
                kept.append((m, key, type(mods[m]).__name__ if m in mods else None))
    kept_not_linear = [f"{m} ({c})" for m, _, c in kept if c != "Linear"]
    return dict(quant_linear_classes=classes, quantized_modules=len(loaded_q),
                file_quantized_modules_not_quantized_in_model=not_quant,
                model_quantized_modules_not_in_file=extra_quant,
                bits_group_size_differing=bad_layout,
                dynamic_minus_rule_modules=len(kept), dynamic_minus_rule_modules_not_plain_linear=kept_not_linear)


def compare_dequant(lib_w: dict, ref: dict, dtype_note: str) -> dict:
    bad, maxdiff, failed = [], 0.0, []
    for m, w in ref.items():
        if m not in lib_w:
            failed.append(m)
            continue
        lw = lib_w[m]
        if isinstance(lw, str):
            failed.append(f"{m}: {lw}")
            continue
        lw = lw.numpy() if isinstance(lw, torch.Tensor) else lw
        if lw.shape != w.shape or not np.array_equal(lw, w):
            bad.append(m)
            if lw.shape == w.shape:
                maxdiff = max(maxdiff, float(np.abs(lw.astype(np.float64) - w).max()))
    n_w = int(sum(v.size for v in ref.values()))
    return dict(how=dtype_note, modules=len(ref), weights=n_w, modules_differing=len(bad),
                modules_differing_list=bad[:20], max_abs_diff=maxdiff, modules_failed=failed[:20],
                modules_failed_count=len(failed), exact=(not bad and not failed))


def runtime_identity_dequant(model, qmods: list, ref: dict, dtype) -> dict:
    """Forward of each quantized module on the identity in `dtype` vs whittle's weight rounded to `dtype`."""
    from torch import _dynamo

    mods = dict(model.named_modules())
    with _dynamo.config.patch(disable=True):  # eager: a compiled forward would recompile for every shape
        return _identity_loop(mods, qmods, ref, dtype)


def _identity_loop(mods, qmods, ref, dtype):
    bad, failed, maxrel = 0, {}, 0.0
    for m in qmods:
        w = torch.from_numpy(ref[m])
        K = w.shape[1]
        try:
            with torch.no_grad():
                y = mods[m](torch.eye(K, dtype=dtype))
            lw = y.t().float()
        except Exception as e:  # noqa: BLE001
            failed[m] = f"{type(e).__name__}: {e}"[:300]
            continue
        exp = w.to(dtype).float()
        if not torch.equal(lw, exp):
            bad += 1
            maxrel = max(maxrel, float((lw - exp).abs().max() / w.abs().max()))
    return dict(dtype=str(dtype)[6:], modules_differing_from_whittle_rounded=bad,
                max_abs_diff_rel=maxrel, failed=dict(list(failed.items())[:5]), failed_count=len(failed))


def forward_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids[None], use_cache=False).logits[0]


# ----------------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------------
def worker_gptqmodel(a: dict) -> dict:
    import accelerate
    from gptqmodel import GPTQModel
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    from gptqmodel.utils.backend import BACKEND

    d, out = a["dir"], a["out"]
    ids = torch.from_numpy(np.load(a["ids"]))
    file_t = checkpoint_tensors(d)
    qcfg = quant_config(d)
    qmods = oc.gptq_modules(file_t)
    ref = whittle_weights(file_t, qcfg)

    # hook: the model gptqmodel loads the checkpoint into, and the keys at that moment
    hook = {}
    orig = accelerate.load_checkpoint_in_model

    def hooked(model, *args, **kw):
        names = set(model.state_dict().keys())
        hook["calls"] = hook.get("calls", 0) + 1
        hook["missing_keys"] = sorted(names - set(file_t))
        hook["unexpected_keys"] = sorted(set(file_t) - names)
        return orig(model, *args, **kw)

    accelerate.load_checkpoint_in_model = hooked

    def is_q(mm):
        return isinstance(mm, BaseQuantLinear)

    runs = [
        ("torch_fp16", "GPTQModel.load(EXPORT, device='cpu', dtype=torch.float16, backend=BACKEND.GPTQ_TORCH)",
         dict(dtype=torch.float16, backend=BACKEND.GPTQ_TORCH)),
        ("default", "GPTQModel.load(EXPORT, device='cpu')", {}),
        ("fp32", "GPTQModel.load(EXPORT, device='cpu', dtype=torch.float32)", dict(dtype=torch.float32)),
    ]
    info = {}
    for tag, loader, kw in runs:
        hook.clear()
        r = dict(loader=loader)
        t0 = time.time()
        try:
            model = GPTQModel.load(d, device="cpu", **kw)
        except Exception as e:  # noqa: BLE001
            r["failed"] = f"{type(e).__name__}: {e}"[:2000]
            info[tag] = r
            continue
        r["load_s"] = round(time.time() - t0, 1)
        hf = model.model
        r["model_dtype"] = str(hf.dtype)[6:]
        r["loader_hook"] = dict(calls=hook.get("calls", 0), missing_keys=hook.get("missing_keys"),
                                unexpected_keys=hook.get("unexpected_keys"))
        r["keys"] = key_check(file_t, hf, {k: v for k, v in hook.items() if k != "calls"}, qmods)
        r["modules"] = module_check(hf, qmods, file_t, qcfg, is_q)
        mods = dict(hf.named_modules())
        r["qzero_format_in_memory"] = sorted({int(mm.qzero_format()) for mm in mods.values()
                                              if is_q(mm) and hasattr(mm, "qzero_format")})
        # exact dequantization (scales -> fp32 first), where the class has dequantize_weight()
        from torch import _dynamo

        dyn = _dynamo.config.patch(disable=True)
        dyn.__enter__()
        lib_w, scales_changed = {}, {}
        for m in qmods:
            mm = mods.get(m)
            if mm is None or not is_q(mm):
                continue
            if not hasattr(mm, "dequantize_weight"):
                lib_w[m] = f"{type(mm).__name__} has no dequantize_weight()"
                continue
            s = mm.scales
            if not torch.equal(s.float(), file_t[m + ".scales"].float()):
                # the loader changed the scales (gptqmodel's bf16 default casts every float tensor to bf16 at
                # load): whittle's codes / zero points / g_idx with the loader's scales, to tell the two apart
                scales_changed[m] = oc.gptq_dequantize(
                    file_t[m + ".qweight"].numpy(), file_t[m + ".qzeros"].numpy(), s.float().numpy(),
                    file_t[m + ".g_idx"].numpy(), checkpoint_format=qcfg.get("checkpoint_format", "gptq"))
            try:
                mm.scales = s.float()
                with torch.no_grad():
                    w = mm.dequantize_weight()  # [in, out]
                lib_w[m] = w.float().t().contiguous() if w.dtype == torch.float32 else f"dtype {w.dtype}"
            except Exception as e:  # noqa: BLE001
                lib_w[m] = f"{type(e).__name__}: {e}"[:300]
            finally:
                mm.scales = s
        dyn.__exit__(None, None, None)
        r["dequant_exact"] = compare_dequant(lib_w, ref, "module.dequantize_weight() with scales converted to "
                                             "float32 (exact products), vs oracle_common.gptq_dequantize")
        if scales_changed:
            r["dequant_exact"]["loader_changed_scales_modules"] = len(scales_changed)
            r["dequant_exact"]["exact_with_loader_scales"] = compare_dequant(
                lib_w, {m: scales_changed.get(m, w) for m, w in ref.items()},
                "vs whittle's codes, zero points and g_idx with the scales as the loader holds them")["exact"]
        # the logits (after the dequantization: some CPU kernels repack a module on its first forward)
        t0 = time.time()
        try:
            logits = forward_logits(hf, ids)
            r["activation_dtype"] = str(logits.dtype)[6:]
            np.save(os.path.join(out, f"logits_gptqmodel_{tag}.npy"), logits.float().numpy())
        except Exception as e:  # noqa: BLE001
            r["forward_failed"] = f"{type(e).__name__}: {e}"[:2000]
        r["forward_s"] = round(time.time() - t0, 1)
        r["dequant_runtime_dtype"] = runtime_identity_dequant(hf, qmods, ref, hf.dtype)
        info[tag] = r
        del model, hf, mods
    accelerate.load_checkpoint_in_model = orig
    return info


def worker_autoround(a: dict) -> dict:
    from transformers import AutoModelForCausalLM, AutoRoundConfig

    d, out = a["dir"], a["out"]
    ids = torch.from_numpy(np.load(a["ids"]))
    file_t = checkpoint_tensors(d)
    qcfg = quant_config(d)
    qmods = oc.gptq_modules(file_t)
    ref = whittle_weights(file_t, qcfg)

    def is_q(mm):
        return hasattr(mm, "qweight") and isinstance(getattr(mm, "qweight"), torch.Tensor)

    runs = [("fp32", torch.float32), ("bf16", torch.bfloat16), ("auto", "auto")]
    info = {}
    for tag, dt in runs:
        loader = (f"AutoModelForCausalLM.from_pretrained(EXPORT, quantization_config=AutoRoundConfig(), "
                  f"dtype={dt if isinstance(dt, str) else 'torch.' + str(dt)[6:]!s}, device_map='cpu', "
                  f"output_loading_info=True)")
        r = dict(loader=loader)
        t0 = time.time()
        try:
            model, li = AutoModelForCausalLM.from_pretrained(d, quantization_config=AutoRoundConfig(), dtype=dt,
                                                             device_map="cpu", output_loading_info=True)
        except Exception as e:  # noqa: BLE001
            r["failed"] = f"{type(e).__name__}: {e}"[:2000]
            info[tag] = r
            continue
        model.eval()
        r["load_s"] = round(time.time() - t0, 1)
        r["model_dtype"] = str(model.dtype)[6:]
        rep = {k: sorted(v) for k, v in li.items() if k in ("missing_keys", "unexpected_keys")}
        r["loading_info"] = {k: (len(v) if hasattr(v, "__len__") else v) for k, v in li.items()}
        r["keys"] = key_check(file_t, model, rep, qmods)
        r["modules"] = module_check(model, qmods, file_t, qcfg, is_q)
        mods = dict(model.named_modules())
        moe = [type(mm).__name__ for n, mm in mods.items() if re.fullmatch(r"model\.layers\.\d+\.mlp", n)]
        r["mlp_classes"] = sorted(set(moe))
        t0 = time.time()
        try:
            logits = forward_logits(model, ids)
            r["activation_dtype"] = str(logits.dtype)[6:]
            np.save(os.path.join(out, f"logits_autoround_{tag}.npy"), logits.float().numpy())
        except Exception as e:  # noqa: BLE001
            r["forward_failed"] = f"{type(e).__name__}: {e}"[:2000]
        r["forward_s"] = round(time.time() - t0, 1)
        if tag == "fp32":
            # auto-round's own dequantization: module forward on the fp32 identity with fp32 scales
            lib_w = {}
            for m in qmods:
                mm = mods.get(m)
                if mm is None or not is_q(mm):
                    continue
                K = file_t[m + ".g_idx"].shape[0]
                s = mm.scales
                try:
                    mm.scales = s.float()
                    with torch.no_grad():
                        y = mm(torch.eye(K, dtype=torch.float32))
                    lib_w[m] = y.t().contiguous() if y.dtype == torch.float32 else f"output dtype {y.dtype}"
                except Exception as e:  # noqa: BLE001
                    lib_w[m] = f"{type(e).__name__}: {e}"[:300]
                finally:
                    mm.scales = s
            r["dequant_exact"] = compare_dequant(lib_w, ref, "QuantLinear.forward(identity fp32) with scales "
                                                 "converted to float32 (exact products), vs "
                                                 "oracle_common.gptq_dequantize")
        r["dequant_runtime_dtype"] = runtime_identity_dequant(model, qmods, ref, model.dtype)
        info[tag] = r
        del model, mods
    return info


WORKERS = {"gptqmodel": worker_gptqmodel, "autoround": worker_autoround}


def worker_main():
    kind, args_json, result_path = sys.argv[2], sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    info = WORKERS[kind](json.loads(args_json))
    with open(result_path, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)


def run_worker(kind: str, args: dict, work: str) -> dict:
    res = os.path.join(work, f"{kind}.result.json")
    log_path = os.path.join(work, f"{kind}.log")
    t0 = time.time()
    with open(log_path, "w") as lf:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, json.dumps(args), res],
                           stdout=lf, stderr=subprocess.STDOUT, cwd=work)
    if p.returncode != 0:
        with open(log_path) as lf:
            tail = lf.read()[-4000:]
        return {"worker_failed": f"rc {p.returncode}; log {log_path}", "log_tail": tail}
    with open(res) as f:
        out = json.load(f)
    print(f"  worker {kind}: {time.time() - t0:.1f} s", flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def default_ids(export: str, text: str, n: int) -> list:
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(os.path.join(export, "tokenizer.json"))
    with open(text) as f:
        return tk.encode(f.read(), add_special_tokens=False).ids[:n]


def disagreements(wl: np.ndarray, ll: np.ndarray) -> list:
    """Positions where the arg-max differs: whittle's top-1 minus top-2 logit and the library's logit of its own
    arg-max minus its logit of whittle's arg-max, both relative to max|whittle logit| (0 = a tie in the library)."""
    scale = float(np.abs(wl).max())
    top2 = np.sort(wl, -1)[:, -2:]
    out = []
    for p in np.where(wl.argmax(-1) != ll.argmax(-1))[0]:
        a, b = int(wl[p].argmax()), int(ll[p].argmax())
        out.append(dict(pos=int(p), whittle_argmax=a, library_argmax=b,
                        whittle_margin_rel=float((top2[p, 1] - top2[p, 0]) / scale),
                        library_margin_rel=float((ll[p, b] - ll[p, a]) / scale)))
    return out


def whittle_binary(given: str | None) -> str:
    for p in ([given] if given else []) + ["/work/results_q/whittle", os.path.join(REPO, "build", "whittle")]:
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise SystemExit("whittle binary not found (--whittle)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export")
    ap.add_argument("--ids", help="comma-separated token ids (default: the first --tokens tokens of --text)")
    ap.add_argument("--text", default=os.path.join(REPO, "models", "tiny-glm5", "eval", "prose.txt"))
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--name", help="report name (default: the export folder's name)")
    ap.add_argument("--out", default="/tmp/loadcheck")
    ap.add_argument("--whittle", help="whittle binary (default /work/results_q/whittle, else build/whittle)")
    ap.add_argument("--whittle-logits", help="use these whittle logits (.npy [T, vocab]) instead of running whittle")
    ap.add_argument("--min-argmax", type=float, default=0.9)
    ap.add_argument("--only", choices=["gptqmodel", "autoround"], nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    export = os.path.abspath(args.export)
    name = args.name or os.path.basename(export.rstrip("/"))
    work = os.path.join(os.path.abspath(args.out), f"{name}_work")
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    ids = ([int(x) for x in args.ids.split(",")] if args.ids else default_ids(export, args.text, args.tokens))
    ids_path = os.path.join(work, "input_ids.npy")
    np.save(ids_path, np.asarray(ids, dtype=np.int64))

    wb = whittle_binary(args.whittle)
    wl_path = os.path.join(work, "logits_whittle.npy")
    wcmd = [wb, "logits", export, "--ids", ",".join(map(str, ids)), "--out", wl_path, "--threads", "1"]
    fails, warnings = [], []
    t0 = time.time()
    if args.whittle_logits:
        wcmd = ["(given)", args.whittle_logits]
        shutil.copy(args.whittle_logits, wl_path)
    else:
        p = subprocess.run(wcmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            fails.append(f"whittle logits failed (rc {p.returncode}): {p.stderr.strip()[-600:]}")
            print(f"  {fails[-1]}", flush=True)
    print(f"  whittle logits: {time.time() - t0:.1f} s", flush=True)

    file_t = checkpoint_tensors(export)
    qcfg = quant_config(export)
    qmods = oc.gptq_modules(file_t)
    with open(os.path.join(export, "config.json")) as f:
        cfg = json.load(f)
    bits = sorted({quant_linear_shape(file_t, m)[2] for m in qmods})
    gsz = sorted({quant_linear_shape(file_t, m)[0] // quant_linear_shape(file_t, m)[3] for m in qmods})
    minus_hits = [m for m in qmods if oc.gptq_dynamic_rule(m, qcfg)[1]]
    unq_2d = [n[: -len(".weight")] for n in file_t if n.endswith(".weight") and file_t[n].dim() == 2]
    unq_2d_no_rule = [m for m in unq_2d if not oc.gptq_dynamic_rule(m, qcfg)[1]
                      and not re.search(r"(embed_tokens|lm_head|mlp\.gate)$", m)]

    t0 = time.time()
    try:
        ref = oc.reference_logits(export, torch.tensor(ids)).float().numpy()
    except Exception as e:  # noqa: BLE001
        ref = None
        fails.append(f"reference fp32 forward failed: {type(e).__name__}: {e}"[:600])
    print(f"  reference fp32 forward: {time.time() - t0:.1f} s", flush=True)
    if os.path.exists(wl_path):
        wl = np.load(wl_path).astype(np.float32)
    else:
        wl = ref
        warnings.append("no whittle logits: the library logits are compared with the reference fp32 forward")

    report = dict(
        export=export, name=name, command=" ".join([os.path.relpath(sys.executable, REPO)
                                                    if not os.path.relpath(sys.executable, REPO).startswith("..")
                                                    else sys.executable, os.path.relpath(__file__, REPO)]
                                                   + sys.argv[1:]),
        versions=lib_versions(), whittle=dict(binary=wb, logits_command=" ".join(wcmd)),
        input_ids=ids, T=len(ids),
        export_summary=dict(
            config_dtype=cfg.get("dtype"), config_torch_dtype=cfg.get("torch_dtype"),
            quantization_config={k: v for k, v in qcfg.items() if k != "modules_in_block_to_quantize"},
            quantized_modules=len(qmods), bits=bits, group_sizes=gsz,
            nontrivial_g_idx=sum(1 for m in qmods if not trivial_g_idx(file_t, m)),
            file_tensor_dtypes=sorted({str(v.dtype)[6:] for v in file_t.values()}),
            quantized_modules_matching_minus_rule=minus_hits,
            unquantized_linears_without_minus_rule=unq_2d_no_rule,
        ),
        whittle_vs_reference_fp32=(kl_and_argmax(ref, wl) if ref is not None and wl is not None else None),
        loaders={},
    )

    libs = args.only or ["gptqmodel", "autoround"]
    for lib in libs:
        print(f"== {lib}", flush=True)
        res = run_worker(lib, dict(dir=export, out=work, ids=ids_path), work)
        if "worker_failed" in res:
            report["loaders"][lib] = res
            fails.append(f"{lib}: worker failed")
            continue
        for tag, r in res.items():
            key = f"{lib}_{tag}"
            if "failed" in r:
                fails.append(f"{key}: load failed")
                report["loaders"][key] = r
                continue
            lp = os.path.join(work, f"logits_{key}.npy")
            if os.path.exists(lp) and wl is not None:
                ll = np.load(lp)
                r["logits_vs_whittle"] = kl_and_argmax(wl, ll)
                r["logits_vs_reference_fp32"] = kl_and_argmax(ref, ll) if ref is not None else None
                r["argmax_disagreements"] = disagreements(wl, ll)
                agree = float(r["logits_vs_whittle"]["argmax_agree"].split("/")[0]) / len(ids)
                if agree < args.min_argmax:
                    fails.append(f"{key}: arg-max agreement {r['logits_vs_whittle']['argmax_agree']}")
            else:
                fails.append(f"{key}: no logits ({r.get('forward_failed', '?')[:200]})")
            k = r["keys"]
            if k["missing_keys"] or k["unexpected_keys"]:
                fails.append(f"{key}: {len(k['missing_keys'])} missing, {len(k['unexpected_keys'])} unexpected keys")
            if k["unquantized_tensors_differing"] or k["tensors_left_on_meta"] or k["packed_tensors_differing"]:
                fails.append(f"{key}: {len(k['unquantized_tensors_differing'])} unquantized tensors differ from the "
                             f"file, {len(k['tensors_left_on_meta'])} on meta, {len(k['packed_tensors_differing'])} "
                             f"packed tensors differ")
            mo = r["modules"]
            if (mo["file_quantized_modules_not_quantized_in_model"] or mo["model_quantized_modules_not_in_file"]
                    or mo["bits_group_size_differing"] or mo["dynamic_minus_rule_modules_not_plain_linear"]):
                fails.append(f"{key}: module mismatch")
            de = r.get("dequant_exact")
            if de and not de["exact"] and de.get("exact_with_loader_scales") and not de["modules_failed_count"]:
                warnings.append(f"{key}: dequantized weights differ from whittle's in {de['modules_differing']} "
                                f"modules only because the loader changed {de['loader_changed_scales_modules']} "
                                f"modules' fp16 scales (rounded to bf16 at load: "
                                f"{r['keys']['scales_rounded_to_bf16_by_loader']} scales tensors); with the loader's "
                                f"scales they are exact")
            elif "dequant_exact" in r and not r["dequant_exact"]["exact"]:
                fails.append(f"{key}: dequantized weights differ in {r['dequant_exact']['modules_differing']} "
                             f"modules, failed in {r['dequant_exact']['modules_failed_count']}")
            report["loaders"][key] = r
        # gptqmodel's logs/ folder lands in the worker's cwd (the work folder): drop it
        shutil.rmtree(os.path.join(work, "logs"), ignore_errors=True)

    report["failures"] = fails
    report["warnings"] = warnings
    report["ok"] = not fails
    summary = {}
    for key, r in report["loaders"].items():
        if "logits_vs_whittle" in r:
            lv = r["logits_vs_whittle"]
            summary[key] = (f"{r.get('activation_dtype')}: {r['modules']['quantized_modules']} qmodules "
                            f"{'/'.join(c.rsplit('.', 1)[-1] for c in r['modules']['quant_linear_classes'])}, "
                            f"missing {len(r['keys']['missing_keys'])} unexpected {len(r['keys']['unexpected_keys'])}"
                            f" (+{r['keys']['unexpected_g_idx_accepted']} trivial g_idx), dequant "
                            f"{'exact' if r.get('dequant_exact', {}).get('exact') else r.get('dequant_exact', {}).get('modules_differing', 'n/a')}"
                            f", argmax {lv['argmax_agree']}, KL mean {lv['kl_mean']:.2e} max {lv['kl_max']:.2e}, "
                            f"max|diff|/max|logit| {lv['max_abs_diff_rel']:.2e}")
        else:
            summary[key] = r.get("failed") or r.get("worker_failed") or r.get("forward_failed")
    report["summary"] = summary
    path = os.path.join(os.path.abspath(args.out), f"{name}_report.json")
    oc.write_json(path, report)
    print(json.dumps(report, indent=1, sort_keys=True))
    print(f"report: {path}")
    if warnings:
        print("WARNINGS:\n  " + "\n  ".join(warnings))
    print("OK" if report["ok"] else "FAIL:\n  " + "\n  ".join(fails))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main()
    else:
        main()
