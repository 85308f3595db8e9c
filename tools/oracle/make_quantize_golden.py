#!/usr/bin/env python3
"""Golden files proving that whittle's GPTQ export (`whittle quantize`) is byte-identical to auto-round's.

Usage (from the repository root; needs auto-round 0.16.1 in .venv, see tools/oracle/README.md "GPTQ goldens"):
    .venv/bin/python tools/oracle/make_quantize_golden.py [--out tests/golden/quantize] [--keep-tmp]

Writes tests/golden/quantize/:
    source/                 tiny random bf16 GlmMoeDsaForCausalLM (2 layers: layer 0 dense MLP, layer 1 MoE with
                            4 routed experts top-2 + 1 shared): config.json, generation_config.json, model.safetensors
                            (save_pretrained). Two weight groups are set to all zeros (ZERO_GROUPS).
    autoround_rtn/          auto-round 0.16.1 plain RTN (iters=0, disable_opt_rtn=True), int4, group 32, sym,
                            format="auto_gptq", of source/, with the DSA indexer's wq_b and wk quantized (the
                            published recipe's module set; see INDEXER below): config.json, generation_config.json,
                            model.safetensors, quantization_config.json exactly as auto-round wrote them.
    autoround_rtn_default/  the same run with auto-round 0.16.1's own default module set (whole indexer kept in
                            bf16): config.json, generation_config.json, quantization_config.json as written, and
                            tensors.json (name, dtype, shape, sha256 of the raw bytes of every tensor of its
                            model.safetensors, which is not stored: every tensor equals autoround_rtn's or source's,
                            asserted here).
    packer/<case>/          auto-round's GPTQ packer (auto_round_extension.torch.qlinear_torch_zp.QuantLinear.pack,
                            the class export_to_autogptq.pack_layer packs with) run on given codes and scales:
                            q.npy, scales.npy (inputs) and qweight.npy, qzeros.npy, scales_out.npy, g_idx.npy.
    ORACLE.json             command, versions, settings, checks, sha256 of every file.

auto-round runs in subprocesses of this script (`--worker ...`): it patches transformers' MoE class in the process
that imports it, so the source model is built in a process that never imports auto-round. Running the script twice
gives byte-identical files. See tests/golden/quantize/README.md.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.dont_write_bytecode = True  # keep tools/oracle free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

import make_gptq_goldens as gg  # noqa: E402  (helpers only; it imports neither auto-round nor gptqmodel at top)

SEED = 8000
# GPTQ_ARCH of make_gptq_goldens.py: 2 layers, first_k_dense_replace 1 -> mlp_layer_types ["dense", "sparse"]
ARCH = dict(gg.GPTQ_ARCH)
assert ARCH["num_hidden_layers"] == 2 and ARCH["first_k_dense_replace"] == 1

# (tensor, row, input columns) set to 0 in the bf16 source after init_weights: all-zero groups of 32
ZERO_GROUPS = [
    ("model.layers.1.self_attn.o_proj.weight", 5, (0, 32)),  # in 32: the whole row is one group
    ("model.layers.1.self_attn.q_a_proj.weight", 3, (32, 64)),  # in 64: the second group of row 3
]

QUANT = dict(bits=4, group_size=32, sym=True, iters=0, disable_opt_rtn=True)
AUTOROUND_CALL = ("AutoRound(model_bf16, tokenizer=<tiny WordLevel>, device_map='cpu', disable_model_free=True, "
                  "bits=4, group_size=32, sym=True, iters=0, disable_opt_rtn=True)"
                  ".quantize_and_save(dir, format='auto_gptq')")

# How the indexer's wq_b / wk get quantized (variant "recipe"). auto-round 0.16.1 registers, for
# model_type == "glm_moe_dsa", predefined ignore_layers [get_glm_flash_ignore_layers (layers.0..k-1.mlp),
# "weights_proj", "indexer"] (special_model_handler.py). A user layer_config entry for
# "model.layers.L.self_attn.indexer.wq_b" cannot override it: layer_config_resolver._resolve_layer_config_presets
# writes the ignore entries (bits 16) over the user's entries with the same name, and the raw ignore pattern
# "indexer" is expanded after the user's entries, overwriting them again (checked: with such a layer_config the
# export keeps wq_b / wk in bf16 and writes no "+:" rule). So the recipe variant removes "indexer" from that
# predefined rule in the worker process before AutoRound is constructed (the rule auto-round 0.12 had: dense MLPs +
# weights_proj); nothing else is changed.
INDEXER = ("auto_round.special_model_handler._PRE_DEFINED_IGNORE_LAYERS: the glm_moe_dsa rule's ignore_layers "
           "[get_glm_flash_ignore_layers, 'weights_proj', 'indexer'] -> [get_glm_flash_ignore_layers, "
           "'weights_proj'] (in the worker process, before AutoRound(...)); no layer_config")

LAYER_CONFIG_ATTEMPT = {f"model.layers.{i}.self_attn.indexer.{p}": {"bits": 4, "group_size": 32, "sym": True}
                        for i in range(2) for p in ("wq_b", "wk")}

VARIANTS = {
    "autoround_rtn": dict(keep_indexer=False, desc="indexer wq_b and wk quantized (published recipe's module set)"),
    "autoround_rtn_default": dict(keep_indexer=True,
                                  desc="auto-round 0.16.1 default module set: whole indexer kept in bf16"),
}

# packer cases: (K, N, group_size, bits, seed)
PACK_CASES = {
    "k256_n96_g128_b4": dict(K=256, N=96, G=128, bits=4, seed=8101),
    "k64_n32_g32_b4": dict(K=64, N=32, G=32, bits=4, seed=8102),
    "k64_n32_g32_b8": dict(K=64, N=32, G=32, bits=8, seed=8103),
}


def pack_inputs(c: dict):
    """Codes q int8 [N, K] in [-2^(b-1), 2^(b-1)-1] and signed fp16 scales [N, K/G] (numpy PCG64)."""
    K, N, G, bits = c["K"], c["N"], c["G"], c["bits"]
    rng = np.random.default_rng(c["seed"])
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = rng.integers(lo, hi + 1, size=(N, K)).astype(np.int8)
    q[0, :] = lo  # a row of all minimum codes
    q[1, :] = hi  # a row of all maximum codes
    q[2, : K // 2] = lo
    q[2, K // 2:] = hi
    nc = 1 << bits  # every code at least once: rows 10.. hold lo..hi in order
    rows = -(-nc // K)
    blk = q[10: 10 + rows].reshape(-1)
    blk[:nc] = np.arange(lo, hi + 1)
    q[10: 10 + rows] = blk.reshape(rows, K)
    mag = rng.uniform(0.5, 2.0, size=(N, K // G)) * 10.0 ** rng.uniform(-4, 0, size=(N, K // G))
    sign = np.where(rng.integers(0, 2, size=(N, K // G)) == 0, -1.0, 1.0)
    s = (mag * sign).astype(np.float16)
    # tiny and subnormal fp16 scales (fp16 subnormal below 2^-14 = 6.1e-5), both signs
    s[3, 0] = np.float16(2.0 ** -24)  # smallest positive subnormal
    s[4, 0] = np.float16(-1e-5)  # auto-round's clamp value, negative
    s[5, 0] = np.float16(1e-5)  # auto-round's scale for an all-zero group (1.0014e-5)
    s[6, -1] = np.float16(-3e-7)
    s[7, 0] = np.float16(-2.0 ** -14)  # smallest normal, negative
    s[8, -1] = np.float16(12.5)  # a large one
    assert (s != 0).all() and np.isfinite(s).all()
    return q, s


# ----------------------------------------------------------------------------------------------
# Workers (subprocesses; these import auto-round)
# ----------------------------------------------------------------------------------------------
def _observe_pack(QuantLinear, seen: list):
    """Wrap QuantLinear.pack to record how the exporter calls it (types, dtypes, shapes); behaviour unchanged."""
    orig = QuantLinear.pack

    def pack(self, linear, scales, zeros, g_idx=None, device=None):
        seen.append(dict(
            bits=self.bits, group_size=self.group_size, infeatures=self.infeatures, outfeatures=self.outfeatures,
            has_g_idx_buffer=hasattr(self, "g_idx") and isinstance(getattr(self, "g_idx"), torch.Tensor),
            linear=type(linear).__name__, weight_dtype=str(linear.weight.dtype), bias=linear.bias is not None,
            scales=f"{type(scales).__name__} {str(getattr(scales, 'dtype', ''))} {list(getattr(scales, 'shape', []))}",
            zeros=(f"{type(zeros).__name__} {zeros}" if not isinstance(zeros, torch.Tensor)
                   else f"Tensor {zeros.dtype} {list(zeros.shape)}"),
            g_idx=repr(g_idx), device=repr(device)))
        return orig(self, linear, scales, zeros, g_idx, device)

    QuantLinear.pack = pack


def glm_moe_dsa_indexer_edit(keep_indexer: bool = False) -> tuple[list, list]:
    """The recipe's indexer edit, in this process: auto-round's predefined glm_moe_dsa ignore rule loses "indexer"
    (unless keep_indexer), so the indexer's wq_b / wk are quantized and weights_proj stays 16-bit. Returns the
    rule's ignore list as shipped and as used (names)."""
    import auto_round.special_model_handler as smh
    from auto_round.special_model_handler import ModelTypeMatcher

    rules = [r for r in smh._PRE_DEFINED_IGNORE_LAYERS
             if any(isinstance(m, ModelTypeMatcher) and m.model_type == "glm_moe_dsa" for m in r.matchers)]
    assert len(rules) == 1, rules

    def names(lst):
        return [x if isinstance(x, str) else getattr(x, "__name__", repr(x)) for x in lst]

    shipped = names(rules[0].ignore_layers)
    if not keep_indexer:
        rules[0].ignore_layers = [x for x in rules[0].ignore_layers if x != "indexer"]
    return shipped, names(rules[0].ignore_layers)


def worker_quantize(a: dict) -> dict:
    src, dst, keep_indexer, layer_config = a["src"], a["dst"], a["keep_indexer"], a.get("layer_config")
    torch.manual_seed(0)
    from auto_round import AutoRound
    from auto_round_extension.torch.qlinear_torch_zp import QuantLinear
    from transformers import AutoModelForCausalLM

    info = {}
    shipped, used = glm_moe_dsa_indexer_edit(keep_indexer)
    info["glm_moe_dsa_ignore_rule_as_shipped"] = shipped
    assert shipped == ["get_glm_flash_ignore_layers", "weights_proj", "indexer"]
    info["glm_moe_dsa_ignore_rule_used"] = used

    seen = []
    _observe_pack(QuantLinear, seen)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    tmp = dst + ".ar"
    kw = dict(layer_config=layer_config) if layer_config else {}
    ar = AutoRound(model, tokenizer=gg.tiny_tokenizer(model.config.vocab_size), device_map="cpu",
                   disable_model_free=True, **QUANT, **kw)
    ar.quantize_and_save(tmp, format="auto_gptq")
    subdirs = sorted({os.path.dirname(p) for p in glob.glob(os.path.join(tmp, "**", "config.json"), recursive=True)})
    assert len(subdirs) == 1, subdirs
    shutil.move(subdirs[0], dst)
    shutil.rmtree(tmp)
    info["auto_round_output_subfolder"] = os.path.relpath(subdirs[0], tmp)
    uniq = []
    for s in seen:
        s = {k: v for k, v in s.items() if k not in ("infeatures", "outfeatures")}
        if s not in uniq:
            uniq.append(s)
    info["exporter_pack_calls"] = len(seen)
    info["exporter_pack_call_kinds"] = uniq
    info["packer_class"] = f"{QuantLinear.__module__}.{QuantLinear.__name__}"
    return info


def worker_pack(a: dict) -> dict:
    """auto-round's GPTQ packer on given codes and scales, fed as export_to_autogptq.export.pack_layer feeds it."""
    import auto_round.export.export_to_autogptq.export as ex
    from auto_round.export.utils import get_autogptq_packing_qlinear

    out = a["out"]
    info = {}
    for name, c in PACK_CASES.items():
        K, N, G, bits = c["K"], c["N"], c["G"], c["bits"]
        q, s = pack_inputs(c)
        QuantLinear = get_autogptq_packing_qlinear("auto_gptq", bits, G, True)  # what pack_layer asks for
        # the layer as auto-round holds it at export: weight = W~ = bf16(fp32(scale) * q), scale fp16 [N, K/G],
        # zp: symmetric -> the Python int 2^(bits-1) (pack_layer: `zero = int(zero.flatten()[0])`)
        lin = torch.nn.Linear(K, N, bias=False, dtype=torch.bfloat16)
        st = torch.from_numpy(s)
        with torch.no_grad():
            w = st.float().repeat_interleave(G, 1) * torch.from_numpy(q).float()
            lin.weight.copy_(w.to(torch.bfloat16))
        zero = 1 << (bits - 1)
        qlayer = QuantLinear(bits, G, K, N, False, g_idx=True)
        qlayer.device = torch.device("cpu")
        qlayer.to("cpu")
        qlayer.pack(lin, st, zero, None, "cpu")  # pack_layer's call for a pack(linear, scales, zeros, g_idx, device)
        d = os.path.join(out, name)
        os.makedirs(d)
        np.save(os.path.join(d, "q.npy"), q)
        np.save(os.path.join(d, "scales.npy"), s)
        np.save(os.path.join(d, "qweight.npy"), qlayer.qweight.numpy())
        np.save(os.path.join(d, "qzeros.npy"), qlayer.qzeros.numpy())
        np.save(os.path.join(d, "scales_out.npy"), qlayer.scales.numpy())
        np.save(os.path.join(d, "g_idx.npy"), qlayer.g_idx.numpy())
        info[name] = dict(K=K, N=N, group_size=G, bits=bits, seed=c["seed"],
                          dtypes={k: str(getattr(qlayer, k).dtype).replace("torch.", "")
                                  for k in ("qweight", "qzeros", "scales", "g_idx")})
    info["packer_class"] = f"{QuantLinear.__module__}.{QuantLinear.__name__}"
    info["packer_method"] = "QuantLinear.pack -> pack_248_bits (bits 2/4/8)"
    info["exporter_uses_same_class"] = ex.get_autogptq_packing_qlinear is get_autogptq_packing_qlinear
    return info


WORKERS = {"quantize": worker_quantize, "pack": worker_pack}


def run_worker(kind: str, args: dict, log_path: str, log) -> dict:
    res = os.path.join(os.path.dirname(log_path), f"{kind}_{os.path.basename(log_path)}.result.json")
    t0 = time.time()
    with open(log_path, "w") as lf:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, json.dumps(args), res],
                           stdout=lf, stderr=subprocess.STDOUT, cwd=REPO)
    if p.returncode != 0:
        with open(log_path) as lf:
            tail = lf.read()[-6000:]
        raise RuntimeError(f"worker {kind} failed (rc {p.returncode}); log {log_path}:\n{tail}")
    with open(res) as f:
        out = json.load(f)
    log(f"    worker {kind}: {time.time() - t0:.1f} s")
    return out


# ----------------------------------------------------------------------------------------------
# Main process (transformers only; never imports auto-round)
# ----------------------------------------------------------------------------------------------
def build_source(dst: str, tmp: str, mg) -> dict:
    cfg = mg.make_config(dict(arch=ARCH))
    m16 = mg.GlmMoeDsaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    mg.init_weights(m16, SEED)
    params = dict(m16.named_parameters())
    with torch.no_grad():
        for name, row, (c0, c1) in ZERO_GROUPS:
            params[name][row, c0:c1] = 0
    work = os.path.join(tmp, "source_save")
    m16.save_pretrained(work)
    produced = sorted(os.listdir(work))
    assert produced == ["config.json", "generation_config.json", "model.safetensors"], produced
    os.makedirs(dst)
    for f in produced:
        shutil.copy(os.path.join(work, f), os.path.join(dst, f))
    return dict(mlp_layer_types=list(cfg.mlp_layer_types), first_k_dense_replace=cfg.first_k_dense_replace)


ST_DTYPE = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int32: "I32"}


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def check_export(src: dict, t: dict, qcfg: dict) -> dict:
    """Facts and assertions on one auto-round export."""
    import oracle_common as oc

    qmods = oc.gptq_modules(t)
    kept = {}
    for n, v in t.items():
        mod = n.rpartition(".")[0]
        if mod in qmods:
            continue
        # every unquantized tensor is the source tensor, same dtype, same bytes
        assert n in src, n
        assert src[n].dtype == v.dtype and src[n].shape == v.shape, (n, src[n].dtype, v.dtype)
        assert tensor_bytes(src[n]) == tensor_bytes(v), n
        kept[n] = str(v.dtype).replace("torch.", "")
    assert sorted(set(src) - set(t)) == sorted(m + ".weight" for m in qmods), "export drops/renames tensors"
    neg = pos = 0
    for m in qmods:
        K, N, bits, groups = gg.quant_linear_shape(t, m)
        assert bits == 4 and K // groups == 32, (m, bits, K, groups)
        assert t[m + ".qweight"].dtype == torch.int32 and t[m + ".qzeros"].dtype == torch.int32
        assert t[m + ".scales"].dtype == torch.float16 and t[m + ".g_idx"].dtype == torch.int32
        assert (t[m + ".qzeros"] == 0x77777777).all(), m
        assert torch.equal(t[m + ".g_idx"], torch.arange(K, dtype=torch.int32) // 32), m
        rule, skip, _ = oc.gptq_dynamic_rule(m, qcfg)
        assert not skip, (m, rule)
        neg += int((t[m + ".scales"] < 0).sum())
        pos += int((t[m + ".scales"] > 0).sum())
    for n in kept:
        if n.endswith(".weight") and t[n].dim() == 2 and "embed_tokens" not in n and n != "lm_head.weight" \
                and not n.endswith("mlp.gate.weight"):
            rule, skip, _ = oc.gptq_dynamic_rule(n[: -len(".weight")], qcfg)
            assert skip, f"{n} kept in 16 bit without a '-:' rule"
    # the all-zero groups: scale +fp16(1e-5), every code 8
    zero_groups = []
    for name, row, (c0, c1) in ZERO_GROUPS:
        m = name[: -len(".weight")]
        if m not in qmods:
            continue
        g = c0 // 32
        sc = t[m + ".scales"][g, row]
        codes = oc.gptq_unpack(t[m + ".qweight"].numpy(), 4, axis=0)[c0:c1, row]
        assert float(sc) == float(np.float16(1e-5)) and (codes == 8).all(), (m, float(sc), codes)
        zero_groups.append(f"{m} row {row} group {g}: scale {float(sc):.6g} (fp16 bits 0x{int(sc.view(torch.int16)) & 0xffff:04x}), "
                           "codes all 8")
    return dict(quantized_modules=qmods, kept_tensors=kept, negative_scales=neg, positive_scales=pos,
                zero_groups=zero_groups)


def rtn_check(src: dict, t: dict) -> dict:
    """auto-round plain RTN re-derived from the bf16 source (gg.spec_rtn_check's formula, on tensors), plus the
    number of exact .5 ties of w/s (where round-half-even matters)."""
    import oracle_common as oc

    bad_codes = bad_scales = total = ties = ties_away_differs = 0
    for m in oc.gptq_modules(t):
        w = src[m + ".weight"].float().numpy()
        N, K = w.shape
        g = w.reshape(N, K // 32, 32)
        lo, hi = np.minimum(g.min(-1), 0), np.maximum(g.max(-1), 0)
        s = np.where(-lo > hi, -lo, -hi).astype(np.float32) / np.float32(8)
        s = s.astype(np.float16).astype(np.float32)
        s = np.where(s < 0, np.minimum(s, np.float32(-1e-5)), np.maximum(s, np.float32(1e-5))).astype(np.float16)
        r = g / s.astype(np.float32)[..., None]
        tie = np.abs(r - np.floor(r)) == 0.5
        ties += int(tie.sum())
        away = np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5), -8, 7)  # round half away from zero
        ties_away_differs += int((tie & (away != np.clip(np.round(r), -8, 7))).sum())
        q = np.clip(np.round(r), -8, 7).astype(np.int64).reshape(N, K)
        codes = oc.gptq_unpack(t[m + ".qweight"].numpy(), 4, axis=0)[:K].T - 8
        bad_codes += int((codes != q).sum())
        bad_scales += int((t[m + ".scales"].numpy().T.view(np.uint16) != s.view(np.uint16)).sum())
        total += N * K
    return dict(mismatching_codes=f"{bad_codes}/{total}", mismatching_scales=bad_scales,
                exact_half_ties_of_w_over_s=ties, ties_where_round_half_away_from_zero_would_differ=ties_away_differs)


def check_packer(d: str, c: dict) -> dict:
    import oracle_common as oc

    K, N, G, bits = c["K"], c["N"], c["G"], c["bits"]
    q, s = (np.load(os.path.join(d, f)) for f in ("q.npy", "scales.npy"))
    qw, qz, so, gi = (np.load(os.path.join(d, f)) for f in ("qweight.npy", "qzeros.npy", "scales_out.npy", "g_idx.npy"))
    assert q.dtype == np.int8 and q.shape == (N, K) and s.dtype == np.float16 and s.shape == (N, K // G)
    assert qw.dtype == np.int32 and qw.shape == (K * bits // 32, N), qw.shape
    assert qz.dtype == np.int32 and qz.shape == (K // G, N * bits // 32), qz.shape
    assert so.dtype == np.float16 and so.shape == (K // G, N) and gi.dtype == np.int32 and gi.shape == (K,)
    off = 1 << (bits - 1)
    u = oc.gptq_unpack(qw, bits, axis=0)  # [K, N]
    assert np.array_equal(u.T - off, q.astype(np.int64)), "unpacked qweight != q + 2^(bits-1)"
    assert np.array_equal(oc.gptq_unpack(qz, bits, axis=1), np.full((K // G, N), off - 1)), "qzeros"
    word = sum((off - 1) << (bits * j) for j in range(32 // bits))
    assert (qz.view(np.uint32) == word).all()
    assert np.array_equal(so.view(np.uint16), np.ascontiguousarray(s.T).view(np.uint16)), "scales_out != scales^T"
    assert np.array_equal(gi, np.arange(K, dtype=np.int32) // G)
    codes = np.unique(q)
    assert len(codes) == 1 << bits, "not every code appears"
    return dict(every_code_appears=True, rows_all_min=bool((q[0] == -off).all()), rows_all_max=bool((q[1] == off - 1).all()),
                negative_scales=int((s < 0).sum()), subnormal_scales=int(((np.abs(s) < 2.0 ** -14) & (s != 0)).sum()),
                scale_range=[float(np.abs(s).min()), float(np.abs(s).max())],
                qzeros_word=f"0x{word:08x}", unpack_equals_q_plus_offset=True, scales_out_is_transpose=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "quantize"))
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()

    import make_model_goldens as mg  # transformers, no quantization library
    import oracle_common as oc

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    def log(msg):
        print(msg, flush=True)

    out = args.out
    os.makedirs(out, exist_ok=True)
    for sub in ("source", *VARIANTS, "packer"):
        if os.path.isdir(os.path.join(out, sub)):
            shutil.rmtree(os.path.join(out, sub))
    tmp = tempfile.mkdtemp(prefix="quantize_oracle_")
    try:
        log("== source")
        src_dir = os.path.join(out, "source")
        src_info = build_source(src_dir, tmp, mg)
        src = gg.read_tensors(os.path.join(src_dir, "model.safetensors"))

        exports, qinfo, facts = {}, {}, {}
        for name, v in VARIANTS.items():
            log(f"== {name}")
            dst = os.path.join(tmp, name)
            qinfo[name] = run_worker("quantize", dict(src=src_dir, dst=dst, keep_indexer=v["keep_indexer"]),
                                     os.path.join(tmp, f"{name}.log"), log)
            produced = sorted(os.listdir(dst))
            keep = ["config.json", "generation_config.json", "model.safetensors", "quantization_config.json"]
            for f in keep:
                assert f in produced, (f, produced)
            t = gg.read_tensors(os.path.join(dst, "model.safetensors"))
            with open(os.path.join(dst, "config.json")) as f:
                qcfg = json.load(f)["quantization_config"]
            with open(os.path.join(dst, "quantization_config.json")) as f:
                qcfg_side = json.load(f)
            assert qcfg == qcfg_side, "config.json quantization_config != quantization_config.json"
            facts[name] = check_export(src, t, qcfg)
            facts[name]["spec_plain_rtn_vs_export"] = rtn_check(src, t)
            assert facts[name]["spec_plain_rtn_vs_export"]["mismatching_codes"].startswith("0/")
            assert facts[name]["spec_plain_rtn_vs_export"]["mismatching_scales"] == 0
            facts[name]["quantization_config_keys_in_file_order"] = list(qcfg_side)
            facts[name]["dynamic_in_file_order"] = list((qcfg_side.get("dynamic") or {}))
            facts[name]["modules_in_block_to_quantize"] = qcfg_side.get("modules_in_block_to_quantize")
            from safetensors import safe_open

            with safe_open(os.path.join(dst, "model.safetensors"), "pt") as f:
                facts[name]["safetensors_metadata"] = f.metadata()
            facts[name]["export_files_dropped"] = [f for f in produced if f not in keep]
            exports[name] = (dst, t)
            od = os.path.join(out, name)
            os.makedirs(od)
            for f in keep:
                if name == "autoround_rtn_default" and f == "model.safetensors":
                    continue
                shutil.copy(os.path.join(dst, f), os.path.join(od, f))
            log(f"  quantized {len(facts[name]['quantized_modules'])} modules; dynamic "
                f"{facts[name]['dynamic_in_file_order']}")

        # the public-API way (layer_config) does not get the indexer quantized: checked, not stored
        log("== layer_config attempt (not stored)")
        dst = os.path.join(tmp, "layer_config_attempt")
        run_worker("quantize", dict(src=src_dir, dst=dst, keep_indexer=True, layer_config=LAYER_CONFIG_ATTEMPT),
                   os.path.join(tmp, "layer_config_attempt.log"), log)
        t_lc = gg.read_tensors(os.path.join(dst, "model.safetensors"))
        with open(os.path.join(dst, "quantization_config.json")) as f:
            lc_dynamic = list((json.load(f).get("dynamic") or {}))
        lc_mods = oc.gptq_modules(t_lc)
        assert lc_mods == facts["autoround_rtn_default"]["quantized_modules"], lc_mods
        assert lc_dynamic == facts["autoround_rtn_default"]["dynamic_in_file_order"], lc_dynamic
        lc_fact = dict(layer_config=LAYER_CONFIG_ATTEMPT, quantized_modules=len(lc_mods),
                       result="ignored: the same modules and the same `dynamic` as autoround_rtn_default (wq_b and "
                              "wk stay bf16, no '+:' rule)")

        # the default export's tensors: each equals the recipe export's (same name) or the source's
        _, t_rec = exports["autoround_rtn"]
        _, t_def = exports["autoround_rtn_default"]
        manifest, from_rec, from_src = {}, 0, 0
        for n in sorted(t_def):
            v = t_def[n]
            if n in t_rec and t_rec[n].dtype == v.dtype and tensor_bytes(t_rec[n]) == tensor_bytes(v):
                from_rec += 1
            else:
                assert n in src and src[n].dtype == v.dtype and tensor_bytes(src[n]) == tensor_bytes(v), n
                from_src += 1
            manifest[n] = dict(dtype=ST_DTYPE[v.dtype], shape=list(v.shape),
                               sha256=hashlib.sha256(tensor_bytes(v)).hexdigest())
        with open(os.path.join(out, "autoround_rtn_default", "tensors.json"), "w") as f:  # one line per tensor
            f.write("{\n" + ",\n".join(f"  {json.dumps(n)}: {json.dumps(manifest[n], sort_keys=True)}"
                                         for n in sorted(manifest)) + "\n}\n")
        only_rec = sorted(set(facts["autoround_rtn"]["quantized_modules"]) -
                          set(facts["autoround_rtn_default"]["quantized_modules"]))
        assert only_rec == [f"model.layers.{i}.self_attn.indexer.{p}" for i in range(2) for p in ("wk", "wq_b")], only_rec

        log("== packer")
        pk = os.path.join(out, "packer")
        os.makedirs(pk)
        pinfo = run_worker("pack", dict(out=pk), os.path.join(tmp, "pack.log"), log)
        pchecks = {n: check_packer(os.path.join(pk, n), c) for n, c in PACK_CASES.items()}

        # ORACLE.json
        files = {}
        for r, _, fs in os.walk(out):
            for f in fs:
                p = os.path.join(r, f)
                rel = os.path.relpath(p, out)
                if rel in ("ORACLE.json", "README.md"):
                    continue
                files[rel] = dict(bytes=os.path.getsize(p), sha256=oc.sha256_file(p))
        info = dict(
            command=mg.command_line(),
            versions=gg.lib_versions(),
            source=dict(arch=ARCH, **src_info, seed=SEED, init=gg.INIT_DESC, zero_groups=[
                dict(tensor=n, row=r, cols=list(c)) for n, r, c in ZERO_GROUPS]),
            quantization=dict(call=AUTOROUND_CALL, settings=QUANT,
                              variants={n: dict(v, indexer_handling=(INDEXER if not v["keep_indexer"] else
                                                                     "auto-round default (no change)"),
                                                worker=qinfo[n]) for n, v in VARIANTS.items()},
                              layer_config_attempt=lc_fact),
            exports=facts,
            default_vs_recipe=dict(tensors_equal_to_recipe_export=from_rec, tensors_equal_to_source=from_src,
                                   modules_quantized_only_in_recipe=only_rec),
            packer=dict(worker=pinfo, cases={n: dict(c, checks=pchecks[n]) for n, c in PACK_CASES.items()},
                        feeding=("QuantLinear(bits, G, K, N, bias=False, g_idx=True).pack(linear, scales, zero, None, "
                                 "'cpu') with linear = nn.Linear(K, N, bias=False) in bf16 holding W~ = "
                                 "bf16(fp32(scales[n, k // G]) * q[n, k]), scales the fp16 [N, K/G] tensor, zero the "
                                 "Python int 2^(bits-1): what export_to_autogptq.export.pack_layer passes for a "
                                 "symmetric layer (see quantization.variants.*.worker.exporter_pack_call_kinds)")),
            files=files,
        )
        oc.write_json(os.path.join(out, "ORACLE.json"), info)
    finally:
        if args.keep_tmp:
            log(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    log(f"total: {total / 1024:.1f} KiB")


def worker_main():
    kind, args_json, result_path = sys.argv[2], sys.argv[3], sys.argv[4]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    info = WORKERS[kind](json.loads(args_json))
    with open(result_path, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main()
    else:
        main()
