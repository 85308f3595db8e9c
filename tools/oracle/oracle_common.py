"""Helpers for the GLM-5 (glm_moe_dsa) and DeepSeek-V3.2 (deepseek_v32) transformers oracle.

Independent re-implementations (of the DSA indexer scores and the MoE router) used to check
that the golden files are robust (top-k margins), plus FP8 block quantization, a numpy GPTQ
unpacker (checked against auto-round's and gptqmodel's own dequantization), the indexer_types
derivation, and file helpers. Nothing here is used to *produce* logits: those always come from
transformers itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

FP8_MAX = 448.0  # largest finite float8_e4m3fn value
FP8_BLOCK = 128


# ----------------------------------------------------------------------------------------------
# RoPE / indexer re-implementation
# ----------------------------------------------------------------------------------------------
def rope_inv_freq(theta: float, rot_dim: int) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i/rot_dim), computed in fp32 like GlmMoeDsaRotaryEmbedding."""
    return 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float) / rot_dim))


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN magnitude correction 0.1*mscale*ln(scale) + 1 (1 for scale <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_frequencies(rp: dict, rot_dim: int, max_position_embeddings: int):
    """(inv_freq fp32 [rot_dim/2], attention_scaling) for a standardized `rope_parameters` dict.

    "default": theta^(-2i/d), scaling 1. "yarn": written from the YaRN paper / DeepSeek-V3 reference (not
    transformers code): blend of the extrapolated (theta^(-2i/d)) and interpolated (/factor) frequencies with a
    linear ramp over pair index i between the correction dims of beta_fast and beta_slow (floored / ceiled unless
    truncate is false, clamped to [0, d-1]); cos/sin scaled by attention_factor, which defaults to
    mscale(factor, mscale)/mscale(factor, mscale_all_dim) when both are set (non-zero), else mscale(factor).
    """
    theta = float(rp["rope_theta"])
    inv_freq = rope_inv_freq(theta, rot_dim)
    rtype = rp.get("rope_type", rp.get("type", "default"))
    if rtype == "default":
        return inv_freq, 1.0
    assert rtype == "yarn", rtype
    orig = rp.get("original_max_position_embeddings") or max_position_embeddings
    factor = rp.get("factor")
    if factor is None:
        factor = max_position_embeddings / orig
    beta_fast, beta_slow = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1

    def corr_dim(rot):
        return rot_dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(theta))

    lo, hi = corr_dim(beta_fast), corr_dim(beta_slow)
    if rp.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, rot_dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(rot_dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)  # 1 = interpolate
    extra = inv_freq
    inter = 1.0 / (factor * (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float) / rot_dim)))
    keep = 1 - ramp
    inv = inter * (1 - keep) + extra * keep
    att = rp.get("attention_factor")
    if att is None:
        m, mad = rp.get("mscale"), rp.get("mscale_all_dim")
        att = yarn_get_mscale(factor, m) / yarn_get_mscale(factor, mad) if (m and mad) else yarn_get_mscale(factor)
    return inv, float(att)


def mla_softmax_scale(rp: dict, qk_head_dim: int) -> float:
    """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 for a non-default rope with mscale_all_dim set."""
    s = qk_head_dim**-0.5
    if rp.get("rope_type", rp.get("type", "default")) != "default" and rp.get("mscale_all_dim"):
        m = yarn_get_mscale(rp["factor"], rp["mscale_all_dim"])
        s = s * m * m
    return s


def _cos_sin(pos, inv_freq, scaling, x):
    ang = pos.float()[:, None] * inv_freq[None, :]  # [T, rot/2]
    cos, sin = ang.cos(), ang.sin()
    if scaling != 1.0:
        cos, sin = cos * scaling, sin * scaling
    if x.dim() == 3:  # [T, H, rot]
        cos, sin = cos[:, None, :], sin[:, None, :]
    return cos, sin


def rope_interleaved_pairs(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor, scaling: float = 1.0):
    """GPT-J style RoPE that keeps the interleaved layout: pair (2i, 2i+1) rotated by pos*inv_freq[i].

    x: [..., T, (H,) rot_dim] with the T axis given by `pos` broadcasting over the last-but-(0|1) axis.
    Written independently of transformers (which de-interleaves); dot products must agree.
    cos/sin are multiplied by `scaling` (YaRN attention_factor).
    """
    cos, sin = _cos_sin(pos, inv_freq, scaling, x)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = torch.empty_like(x)
    y[..., 0::2] = x0 * cos - x1 * sin
    y[..., 1::2] = x0 * sin + x1 * cos
    return y


def rope_half_split(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor, scaling: float = 1.0):
    """NeoX style RoPE: pair (i, i + rot_dim/2) rotated by pos*inv_freq[i] (DeepSeek-V3.2 indexer)."""
    cos, sin = _cos_sin(pos, inv_freq, scaling, x)
    h = x.shape[-1] // 2
    x0, x1 = x[..., :h], x[..., h:]
    return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)


# Indexer RoPE pairing per model_type (MLA is interleaved in both).
INDEXER_ROPE_INTERLEAVED = {"glm_moe_dsa": True, "deepseek_v32": False}


def config_rope_parameters(c: dict) -> dict:
    """transformers' precedence for a config.json dict: `rope_scaling` replaces `rope_parameters`; rope_theta from
    there, else top-level `rope_theta`, else 10000; original_max_position_embeddings defaults to
    max_position_embeddings for yarn."""
    rp = dict(c.get("rope_scaling") or c.get("rope_parameters") or {})
    rp.setdefault("rope_theta", c.get("rope_theta", 10000.0))
    rp.setdefault("rope_type", rp.get("type", "default"))
    if rp["rope_type"] == "yarn":
        rp.setdefault("original_max_position_embeddings", c["max_position_embeddings"])
    return rp


def config_indexer_types(c: dict) -> list:
    """Per-layer "full"/"shared" for a config.json dict, the way transformers 5.23 derives it
    (GlmMoeDsaConfig.__post_init__): `indexer_types` if present; else `index_topk_pattern` (a string: each character
    "F" -> "full", "S" -> "shared", any other character raises KeyError; a list is taken as it is); else
    `index_topk_freq` (default 1, values < 1 count as 1) / `index_skip_topk_offset` (default 2): layer i is full iff
    max(i - offset + 1, 0) % freq == 0. The modeling code then treats exactly "shared" as shared and anything else
    as full, and indexes the list by layer (a shorter list raises IndexError, a longer one is cut).
    deepseek_v32 has no IndexShare: every layer is full."""
    L = c["num_hidden_layers"]
    if c["model_type"] != "glm_moe_dsa":
        return ["full"] * L
    types = c.get("indexer_types")
    if types is None:
        pattern = c.get("index_topk_pattern")
        if pattern is not None:
            types = [{"F": "full", "S": "shared"}[ch] for ch in pattern] if isinstance(pattern, str) else list(pattern)
        else:
            freq = max(c.get("index_topk_freq", 1), 1)
            offset = c.get("index_skip_topk_offset", 2)
            types = ["full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(L)]
    return ["shared" if types[i] == "shared" else "full" for i in range(L)]


@torch.no_grad()
def indexer_scores_w(wq_b, wk, kn_w, kn_b, wp, n_heads, x, q_resid, theta, rot_dim, eps=1e-6, inv_freq=None,
                     scaling=1.0, interleaved=True) -> torch.Tensor:
    """DSA lightning-indexer scores I[t, s] for one sequence, fp32, future keys = -inf.

    x: [T, hidden] (normed attention input), q_resid: [T, q_lora_rank] (post q_a_layernorm).
    q = wq_b(q_resid) per head [rope | nope]; k = LayerNorm(wk(x); kn_w, kn_b, eps 1e-6) [rope | nope];
    RoPE on the first rot_dim dims of q and k: interleaved pairs (GLM-5) or half-split (DeepSeek-V3.2,
    interleaved=False); inv_freq defaults to theta^(-2i/rot_dim), cos/sin scaled by `scaling`;
    I[t,s] = sum_h (weights_proj(x)_h * n_heads^-0.5) * ReLU(q_h(t).k(s) * head_dim^-0.5)
    """
    T = x.shape[0]
    hd = wk.shape[0]
    pos = torch.arange(T)
    if inv_freq is None:
        inv_freq = rope_inv_freq(theta, rot_dim)
    rope = rope_interleaved_pairs if interleaved else rope_half_split
    q = F.linear(q_resid.float(), wq_b.float()).view(T, n_heads, hd)
    k = F.linear(x.float(), wk.float())
    k = F.layer_norm(k, (hd,), kn_w.float(), kn_b.float(), eps=eps)
    q = torch.cat([rope(q[..., :rot_dim], pos, inv_freq, scaling), q[..., rot_dim:]], dim=-1)
    k = torch.cat([rope(k[..., :rot_dim], pos, inv_freq, scaling), k[..., rot_dim:]], dim=-1)
    s = torch.einsum("thd,sd->ths", q, k) * (hd**-0.5)
    s = F.relu(s)
    w = F.linear(x.float(), wp.float()) * (n_heads**-0.5)  # [T, nh]
    out = torch.einsum("th,ths->ts", w, s)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return out.masked_fill(~causal, float("-inf"))


def indexer_scores(indexer, x, q_resid, theta, rot_dim, **rope_kw):
    """Same, reading the weights of a transformers GlmMoeDsaIndexer / DeepseekV32Indexer module."""
    return indexer_scores_w(indexer.wq_b.weight, indexer.wk.weight, indexer.k_norm.weight, indexer.k_norm.bias,
                            indexer.weights_proj.weight, indexer.n_heads, x, q_resid, theta, rot_dim,
                            eps=indexer.k_norm.eps, **rope_kw)


def topk_boundary_gaps(scores: torch.Tensor, k: int):
    """For each row t with more than k visible keys: relative gap between the k-th and (k+1)-th score.

    Returns (list of (t, rel_gap, abs_gap)), selection mask [T, T] (bool, causal).
    Relative gap = (s_k - s_{k+1}) / max_s |s| over the visible keys of that row.
    """
    T = scores.shape[0]
    sel = torch.zeros(T, T, dtype=torch.bool)
    gaps = []
    for t in range(T):
        row = scores[t, : t + 1]
        if t + 1 <= k:
            sel[t, : t + 1] = True
            continue
        v, i = row.sort(descending=True, stable=True)
        sel[t, i[:k]] = True
        absgap = float(v[k - 1] - v[k])
        scale = float(row.abs().max())
        gaps.append((t, absgap / scale if scale > 0 else 0.0, absgap))
    return gaps, sel


# ----------------------------------------------------------------------------------------------
# Router re-implementation (GlmMoeDsaTopkRouter semantics)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def route(x, weight, bias, n_group, topk_group, top_k, norm_topk_prob, scaling, use_groups=True, use_bias=True):
    """Returns (indices sorted ascending [T,k], weights in that order [T,k], group_gaps [T], expert_gaps [T])."""
    scores = torch.sigmoid(F.linear(x.float(), weight.float()))
    choice = scores + bias.float() if use_bias else scores.clone()
    T, E = choice.shape
    group_gap = torch.full((T,), float("inf"))
    if use_groups and n_group > 1:
        gs = choice.view(T, n_group, E // n_group).topk(2, dim=-1).values.sum(-1)
        gsorted = gs.sort(dim=-1, descending=True).values
        if topk_group < n_group:
            group_gap = gsorted[:, topk_group - 1] - gsorted[:, topk_group]
        gidx = gs.topk(topk_group, dim=-1).indices
        gmask = torch.zeros_like(gs, dtype=torch.bool).scatter(1, gidx, True)
        emask = gmask[:, :, None].expand(T, n_group, E // n_group).reshape(T, E)
        choice = choice.masked_fill(~emask, float("-inf"))
    csorted = choice.sort(dim=-1, descending=True).values
    expert_gap = torch.full((T,), float("inf"))
    if top_k < E:
        nxt = csorted[:, top_k]
        fin = torch.isfinite(nxt)
        expert_gap[fin] = (csorted[:, top_k - 1] - nxt)[fin]
    idx = choice.topk(top_k, dim=-1).indices.sort(dim=-1).values
    w = scores.gather(1, idx)
    if norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    w = w * scaling
    return idx, w, group_gap, expert_gap


# ----------------------------------------------------------------------------------------------
# DeepSeek / GLM block FP8 (e4m3, 128x128 tiles, weight = fp8 * weight_scale_inv)
# ----------------------------------------------------------------------------------------------
def fp8_block_quantize(w: torch.Tensor, block: int = FP8_BLOCK):
    """w: 2-D [out, in]. Returns (fp8 tensor [out,in] float8_e4m3fn, scale_inv fp32 [ceil(out/b), ceil(in/b)])."""
    assert w.dim() == 2
    w = w.float()
    R, C = w.shape
    nr, nc = math.ceil(R / block), math.ceil(C / block)
    q = torch.empty(R, C, dtype=torch.float8_e4m3fn)
    s = torch.empty(nr, nc, dtype=torch.float32)
    for i in range(nr):
        for j in range(nc):
            tile = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
            amax = float(tile.abs().max())
            scale = torch.tensor(max(amax, 1e-12), dtype=torch.float32) / FP8_MAX
            s[i, j] = scale
            q[i * block : (i + 1) * block, j * block : (j + 1) * block] = (
                (tile / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            )
    return q, s


def fp8_block_dequantize(q: torch.Tensor, s: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    """fp32 result of q.float() * scale_inv of its tile (one fp32 multiply per element)."""
    R, C = q.shape
    full = s.repeat_interleave(block, dim=0)[:R].repeat_interleave(block, dim=1)[:, :C]
    return q.float() * full


# ----------------------------------------------------------------------------------------------
# GPTQ (qweight / qzeros / scales / g_idx), numpy only: an independent unpacker written from the format
# description (shared/specs/autoround_gptq.md §3), used to check the libraries' own dequantization.
# ----------------------------------------------------------------------------------------------
GPTQ_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx", "bias")


def gptq_unpack(words, bits: int, axis: int) -> np.ndarray:
    """Unpack int32 words into `bits`-wide unsigned codes along `axis` (0: rows, as qweight [K*bits/32, N];
    1: columns, as qzeros [G, N*bits/32]). Code j of a word sits in bits bits*j .. bits*j+bits-1 (lowest first)."""
    assert 32 % bits == 0, bits
    w = np.ascontiguousarray(words).view(np.uint32)
    pf, mask = 32 // bits, (1 << bits) - 1
    shifts = (np.arange(pf, dtype=np.uint32) * bits).astype(np.uint32)
    if axis == 0:
        c = (w[:, None, :] >> shifts[None, :, None]) & mask  # [R, pf, N]
        return c.reshape(w.shape[0] * pf, w.shape[1]).astype(np.int64)
    c = (w[:, :, None] >> shifts[None, None, :]) & mask  # [G, C, pf]
    return c.reshape(w.shape[0], w.shape[1] * pf).astype(np.int64)


def gptq_v1_word_offset(bits: int) -> int:
    """The int32 a GPTQ v1 writer subtracted from every qzeros word (one 1 per code): 0x11111111 for 4 bit."""
    return sum(1 << (bits * j) for j in range(32 // bits))


def gptq_module_bits(qweight, g_idx) -> int:
    K = int(np.asarray(g_idx).shape[0])
    bits, rem = divmod(32 * int(qweight.shape[0]), K)
    assert rem == 0 and bits in (2, 4, 8), (qweight.shape, K)
    return bits


def gptq_zeros(qzeros, bits: int, checkpoint_format: str = "gptq", v1_read: str = "word") -> np.ndarray:
    """Zero points [G, N] (int64). gptq_v2 stores them as they are. GPTQ v1 stores zero - 1:
    v1_read="word": add gptq_v1_word_offset(bits) to each int32 word (mod 2^32), then unpack; this is the exact
      inverse of a writer that subtracted the constant from the whole word (gptqmodel: a zero point of 0 borrows
      from the next code), and equals "code + 1" whenever no code is 0 after the -1.
    v1_read="code": unpack, then add 1 to each code (no wrap-around), as per-code readers do."""
    if checkpoint_format == "gptq_v2":
        return gptq_unpack(qzeros, bits, axis=1)
    assert checkpoint_format == "gptq", checkpoint_format
    if v1_read == "word":
        w = np.ascontiguousarray(qzeros).view(np.uint32).astype(np.uint64)
        w = ((w + gptq_v1_word_offset(bits)) & 0xFFFFFFFF).astype(np.uint32)
        return gptq_unpack(w.view(np.int32), bits, axis=1)
    assert v1_read == "code", v1_read
    return gptq_unpack(qzeros, bits, axis=1) + 1


def gptq_dequantize(qweight, qzeros, scales, g_idx, checkpoint_format="gptq", v1_read="word") -> np.ndarray:
    """float32 W [N, K]: W[n, k] = float32(scales[g_idx[k], n]) * (code[k, n] - zero[g_idx[k], n]).
    The product of an fp16 scale and an integer below 2^9 is exact in float32 (one rounding-free multiply)."""
    qweight, g_idx = np.asarray(qweight), np.asarray(g_idx).astype(np.int64)
    bits = gptq_module_bits(qweight, g_idx)
    K = g_idx.shape[0]
    codes = gptq_unpack(qweight, bits, axis=0)[:K]  # [K, N]
    zeros = gptq_zeros(qzeros, bits, checkpoint_format, v1_read)[:, : codes.shape[1]]  # [G, N]
    s = np.asarray(scales).astype(np.float32)  # [G, N]
    assert s.shape == zeros.shape and g_idx.min() >= 0 and g_idx.max() < s.shape[0], (s.shape, zeros.shape)
    wt = s[g_idx] * (codes - zeros[g_idx]).astype(np.float32)  # [K, N]
    return np.ascontiguousarray(wt.T)


def gptq_modules(tensors: dict) -> list:
    """Module prefixes that hold GPTQ tensors (have a `.qweight`)."""
    return sorted(k[: -len(".qweight")] for k in tensors if k.endswith(".qweight"))


def gptq_dynamic_rule(name: str, qcfg: dict):
    """The `dynamic` rule that applies to module `name`, as gptqmodel (`dynamic_get`) and vLLM apply them:
    rules in file order, `re.match` (anchored at the start only), first match wins; a "-:" key means "not
    quantized", a "+:" key or a key without prefix overrides settings. Returns (key or None, skip, overrides)."""
    import re

    for key, overrides in (qcfg.get("dynamic") or {}).items():
        if key.startswith("-:"):
            if re.match(key[2:], name):
                return key, True, {}
        else:
            pat = key[2:] if key.startswith("+:") else key
            if re.match(pat, name):
                return key, False, dict(overrides)
    return None, False, {}


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def dir_files(d: str):
    return sorted(f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))


# ----------------------------------------------------------------------------------------------
# Independent reference forward pass, straight from the files (a Python model of what the C++ loader
# and forward must do). Used only to cross-check transformers' goldens.
# ----------------------------------------------------------------------------------------------
def checkpoint_files(d: str) -> list:
    """The safetensors files of a checkpoint folder (its shards via the index, else model.safetensors)."""
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def load_checkpoint_tensors(d: str) -> dict:
    """All tensors of a checkpoint folder as fp32 (shards via the index; block-FP8 dequantized)."""
    raw = {}
    for fn in checkpoint_files(d):
        raw.update(load_file(os.path.join(d, fn)))
    out = {}
    qmods = gptq_modules(raw)
    if qmods:  # GPTQ checkpoint: dequantize every module with a qweight (numpy unpacker above)
        with open(os.path.join(d, "config.json")) as f:
            qcfg = json.load(f).get("quantization_config") or {}
        fmt = qcfg.get("checkpoint_format", "gptq")
        for m in qmods:
            out[m + ".weight"] = torch.from_numpy(gptq_dequantize(
                raw[m + ".qweight"].numpy(), raw[m + ".qzeros"].numpy(), raw[m + ".scales"].float().numpy(),
                raw[m + ".g_idx"].numpy(), checkpoint_format=fmt))
            if m + ".bias" in raw:
                out[m + ".bias"] = raw[m + ".bias"].float()
        skip = {m + "." + s for m in qmods for s in GPTQ_SUFFIXES}
        raw = {n: t for n, t in raw.items() if n not in skip}
    for n, t in raw.items():
        if n.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            out[n] = fp8_block_dequantize(t, raw[n + "_scale_inv"])
        else:
            out[n] = t.float()
    return out


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _swiglu(x, g, u, d):
    return F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)


@torch.no_grad()
def reference_logits(d: str, input_ids) -> torch.Tensor:
    """fp32 forward of a glm_moe_dsa / deepseek_v32 checkpoint folder written from scratch (no transformers
    modules). deepseek_v32: half-split indexer RoPE, every layer has its own indexer, YaRN frequencies and
    attention_factor on cos/sin, mscale^2 on the MLA softmax scale."""
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    W = load_checkpoint_tensors(d)
    ids = torch.as_tensor(input_ids).long()
    T, L = ids.shape[0], c["num_hidden_layers"]
    NH, Dn, Dr, Dv = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    R = c["kv_lora_rank"]
    eps = c.get("rms_norm_eps", 1e-5)
    rp = config_rope_parameters(c)
    theta = rp["rope_theta"]
    idx_interleaved = INDEXER_ROPE_INTERLEAVED[c["model_type"]]
    mlp_types = c.get("mlp_layer_types") or [
        "dense" if i < c.get("first_k_dense_replace", 3) else "sparse" for i in range(L)
    ]
    idx_types = config_indexer_types(c)
    E, I = c["n_routed_experts"], c["moe_intermediate_size"]
    inv_freq, att = rope_frequencies(rp, Dr, c["max_position_embeddings"])
    scale = mla_softmax_scale(rp, Dn + Dr)
    pos = torch.arange(T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    x = W["model.embed_tokens.weight"][ids]
    sel = None
    for li in range(L):
        p = f"model.layers.{li}."
        a = _rms(x, W[p + "input_layernorm.weight"], eps)
        # MLA
        q_lat = _rms(F.linear(a, W[p + "self_attn.q_a_proj.weight"]), W[p + "self_attn.q_a_layernorm.weight"], 1e-6)
        q = F.linear(q_lat, W[p + "self_attn.q_b_proj.weight"]).view(T, NH, Dn + Dr)
        q_nope, q_pe = q[..., :Dn], rope_interleaved_pairs(q[..., Dn:], pos, inv_freq, att)
        ckv = F.linear(a, W[p + "self_attn.kv_a_proj_with_mqa.weight"])
        lat = _rms(ckv[:, :R], W[p + "self_attn.kv_a_layernorm.weight"], 1e-6)
        k_pe = rope_interleaved_pairs(ckv[:, R:], pos, inv_freq, att)
        kv = F.linear(lat, W[p + "self_attn.kv_b_proj.weight"]).view(T, NH, Dn + Dv)
        k_nope, v = kv[..., :Dn], kv[..., Dn:]
        # DSA selection
        if idx_types[li] == "full":
            pi = p + "self_attn.indexer."
            sc = indexer_scores_w(W[pi + "wq_b.weight"], W[pi + "wk.weight"], W[pi + "k_norm.weight"],
                                  W[pi + "k_norm.bias"], W[pi + "weights_proj.weight"], c["index_n_heads"],
                                  a, q_lat, theta, Dr, inv_freq=inv_freq, scaling=att, interleaved=idx_interleaved)
            _, sel = topk_boundary_gaps(sc, c["index_topk"])
        mask = causal & sel
        s = (torch.einsum("thd,shd->hts", q_nope, k_nope) + torch.einsum("thd,sd->hts", q_pe, k_pe)) * scale
        s = s.masked_fill(~mask, float("-inf")).softmax(-1)
        o = torch.einsum("hts,shd->thd", s, v).reshape(T, NH * Dv)
        x = x + F.linear(o, W[p + "self_attn.o_proj.weight"])
        # MLP / MoE
        m = _rms(x, W[p + "post_attention_layernorm.weight"], eps)
        if mlp_types[li] == "dense":
            y = _swiglu(m, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
        else:
            idx, wts, _, _ = route(m, W[p + "mlp.gate.weight"], W[p + "mlp.gate.e_score_correction_bias"],
                                   c["n_group"], c["topk_group"], c["num_experts_per_tok"], c["norm_topk_prob"],
                                   c["routed_scaling_factor"])
            if p + "mlp.experts.gate_up_proj" in W:  # fused layout
                gu, dn = W[p + "mlp.experts.gate_up_proj"], W[p + "mlp.experts.down_proj"]
                experts = [(gu[e, :I], gu[e, I:], dn[e]) for e in range(E)]
            else:
                experts = [tuple(W[f"{p}mlp.experts.{e}.{n}_proj.weight"] for n in ("gate", "up", "down"))
                           for e in range(E)]
            y = torch.zeros_like(m)
            for t in range(T):
                for j in range(idx.shape[1]):
                    g, u, dw = experts[int(idx[t, j])]
                    y[t] += wts[t, j] * _swiglu(m[t], g, u, dw)
            ps = p + "mlp.shared_experts."
            y = y + _swiglu(m, W[ps + "gate_proj.weight"], W[ps + "up_proj.weight"], W[ps + "down_proj.weight"])
        x = x + y
    x = _rms(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight")
    if head is None:
        assert c.get("tie_word_embeddings"), "lm_head.weight missing but tie_word_embeddings is false"
        head = W["model.embed_tokens.weight"]
    return F.linear(x, head)
