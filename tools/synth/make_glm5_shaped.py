#!/usr/bin/env python3
"""Write a synthetic GLM-5-shaped bf16 checkpoint (GlmMoeDsaForCausalLM), e.g. one larger than RAM.

Real GLM-5 dimensions (from the config.json GLM-5 publishes, zai-org/GLM-5), fewer layers, random weights.
Python 3.11 standard library only (no numpy, no torch, no safetensors package).

Speed: a Gaussian pool of ~1 M values is drawn once per distinct standard deviation (a few MB each)
and rounded to bf16; every tensor is then written as slices of its pool starting at pseudo-random
offsets seeded by (seed, tensor name). Writing is I/O-bound (see tools/synth/README.md).

    python3 tools/synth/make_glm5_shaped.py /tmp/glm5-shaped            # ~44 GB, 3 layers
    python3 tools/synth/make_glm5_shaped.py /tmp/glm5-s8 --scale 8 --shard-size 50MB   # ~160 MB
    python3 tools/synth/make_glm5_shaped.py OUT --dry-run                       # sizes only
"""
from __future__ import annotations

import argparse
import array
import json
import math
import os
import random
import re
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TOKENIZER_FROM = REPO / "models" / "tiny-glm5"
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                "generation_config.json")

# GLM-5 / GLM-5.1, from the config.json GLM-5 / GLM-5.1 publish (zai-org/GLM-5).
GLM5 = dict(
    hidden_size=6144,
    num_attention_heads=64,
    q_lora_rank=2048,
    kv_lora_rank=512,
    qk_nope_head_dim=192,
    qk_rope_head_dim=64,
    v_head_dim=256,
    index_n_heads=32,
    index_head_dim=128,
    index_topk=2048,
    n_routed_experts=256,
    moe_intermediate_size=2048,
    intermediate_size=12288,
    vocab_size=154880,
)
GLM5_FIXED = dict(  # not divided by --scale
    num_experts_per_tok=8, n_shared_experts=1, n_group=1, topk_group=1,
    routed_scaling_factor=2.5, rms_norm_eps=1e-05, rope_theta=1000000.0,
)
ALLOWED_SCALES = (1, 2, 4, 8, 16, 32)  # keeps qk_rope_head_dim (64) even and heads >= 1

POOL_VALUES = 1_000_003  # values per pool (2 MB of bf16); prime, so slices do not line up with rows


# ----------------------------------------------------------------------------------------------
# Shapes


@dataclass
class Dims:
    hidden: int
    heads: int
    q_lora: int
    kv_lora: int
    nope: int
    rope: int
    v: int
    index_heads: int
    index_dim: int
    index_topk: int
    experts: int
    moe_inter: int
    inter: int
    vocab: int
    top_k: int
    shared: int


def make_dims(scale: int, min_vocab: int, experts: int | None = None) -> Dims:
    """GLM-5's dimensions divided by `scale`; `experts`, when given, is n_routed_experts as is
    (not divided by `scale`): a deliberate difference from GLM-5 to fit a size."""
    g = GLM5
    d = Dims(
        hidden=g["hidden_size"] // scale,
        heads=g["num_attention_heads"] // scale,
        q_lora=g["q_lora_rank"] // scale,
        kv_lora=g["kv_lora_rank"] // scale,
        nope=g["qk_nope_head_dim"] // scale,
        rope=g["qk_rope_head_dim"] // scale,
        v=g["v_head_dim"] // scale,
        index_heads=g["index_n_heads"] // scale,
        index_dim=g["index_head_dim"] // scale,
        index_topk=g["index_topk"] // scale,
        experts=g["n_routed_experts"] // scale if experts is None else experts,
        moe_inter=g["moe_intermediate_size"] // scale,
        inter=g["intermediate_size"] // scale,
        # The embedding may have more rows than the tokenizer has ids, never fewer.
        vocab=max(g["vocab_size"] // scale, min_vocab),
        top_k=GLM5_FIXED["num_experts_per_tok"],
        shared=GLM5_FIXED["n_shared_experts"],
    )
    d.top_k = min(d.top_k, d.experts)
    assert d.rope % 2 == 0 and d.index_dim > d.rope and d.heads >= 1 and d.index_heads >= 1
    return d


DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4}
# safetensors writes tensors sorted by dtype, larger enum value first (F32 > I32 > BF16 > F16).
DTYPE_ORDER = {"F32": 0, "I32": 1, "BF16": 2, "F16": 3}

GPTQ_GROUP = 128
GPTQ_CODE_RMS = math.sqrt((16 * 16 - 1) / 12 + 0.25)  # rms of u - 8 for codes u uniform in 0..15


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "BF16", "F32"; with --gptq also "I32" and "F16"
    # How values are drawn: "normal" (std) / "norm" / "bias" / "f32bias"; GPTQ: "codes" (random
    # words), "zeros" (0x77777777: symmetric zero 8, v1), "scales" (f16, std = the scale), "g_idx"
    kind: str
    std: float = 0.0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def tensor_list(d: Dims, layers: int, dense: int, gptq: bool = False) -> list[Tensor]:
    """Every tensor, in the order transformers' state_dict() lists GlmMoeDsaForCausalLM's. With
    `gptq`, the Linears the recipe quantizes (attention, indexer wq_b / wk, routed and shared
    experts) are GPTQ int4 g128 symmetric tensors instead of bf16 weights."""
    H = d.hidden
    out: list[Tensor] = []

    def lin(name: str, rows: int, cols: int, std: float | None = None, quant: bool = False) -> None:
        # Linear weights ~ N(0, 1/fan_in) (tools/oracle/README.md: the goldens' convention).
        std = std or 1.0 / math.sqrt(cols)
        if not (gptq and quant):
            out.append(Tensor(name, (rows, cols), "BF16", "normal", std))
            return
        # GPTQ v1 as auto-round writes it: qweight [K/8, N], qzeros [K/128, N/8], scales [K/128, N],
        # g_idx [K]; codes uniform in 0..15, so W = s·(u - 8) has the bf16 weights' std.
        m = name.removesuffix(".weight")
        groups = -(-cols // GPTQ_GROUP)  # a short last group below --scale 4 (kv_lora_rank 64)
        out.append(Tensor(m + ".g_idx", (cols,), "I32", "g_idx"))
        out.append(Tensor(m + ".qweight", (cols // 8, rows), "I32", "codes"))
        out.append(Tensor(m + ".qzeros", (groups, rows // 8), "I32", "zeros"))
        out.append(Tensor(m + ".scales", (groups, rows), "F16", "scales", std / GPTQ_CODE_RMS))

    def norm(name: str, n: int) -> None:
        out.append(Tensor(name, (n,), "BF16", "norm"))

    out.append(Tensor("model.embed_tokens.weight", (d.vocab, H), "BF16", "normal", 1.0))
    for L in range(layers):
        p = f"model.layers.{L}."
        a = p + "self_attn."
        lin(a + "q_a_proj.weight", d.q_lora, H, quant=True)
        norm(a + "q_a_layernorm.weight", d.q_lora)
        lin(a + "q_b_proj.weight", d.heads * (d.nope + d.rope), d.q_lora, quant=True)
        lin(a + "kv_a_proj_with_mqa.weight", d.kv_lora + d.rope, H, quant=True)
        norm(a + "kv_a_layernorm.weight", d.kv_lora)
        lin(a + "kv_b_proj.weight", d.heads * (d.nope + d.v), d.kv_lora, quant=True)
        lin(a + "o_proj.weight", H, d.heads * d.v, quant=True)
        i = a + "indexer."
        lin(i + "wq_b.weight", d.index_heads * d.index_dim, d.q_lora, quant=True)
        lin(i + "wk.weight", d.index_dim, H, quant=True)
        norm(i + "k_norm.weight", d.index_dim)
        out.append(Tensor(i + "k_norm.bias", (d.index_dim,), "BF16", "bias"))
        lin(i + "weights_proj.weight", d.index_heads, H)
        m = p + "mlp."
        if L < dense:
            lin(m + "gate_proj.weight", d.inter, H)
            lin(m + "up_proj.weight", d.inter, H)
            lin(m + "down_proj.weight", H, d.inter)
        else:
            for e in range(d.experts):
                x = f"{m}experts.{e}."
                lin(x + "gate_proj.weight", d.moe_inter, H, quant=True)
                lin(x + "up_proj.weight", d.moe_inter, H, quant=True)
                lin(x + "down_proj.weight", H, d.moe_inter, quant=True)
            lin(m + "gate.weight", d.experts, H)
            out.append(Tensor(m + "gate.e_score_correction_bias", (d.experts,), "F32", "f32bias"))
            w = d.moe_inter * d.shared
            lin(m + "shared_experts.gate_proj.weight", w, H, quant=True)
            lin(m + "shared_experts.up_proj.weight", w, H, quant=True)
            lin(m + "shared_experts.down_proj.weight", H, w, quant=True)
        norm(p + "input_layernorm.weight", H)
        norm(p + "post_attention_layernorm.weight", H)
    norm("model.norm.weight", H)
    # lm_head ~ N(0, 4/hidden): as the oracle's goldens, so the logits are not near-uniform.
    lin("lm_head.weight", d.vocab, H, std=2.0 / math.sqrt(H))
    return out


def quantization_config(dense: int) -> dict:
    """GPTQ int4 g128 symmetric (v1 zero points), with `dynamic` rules that keep the recipe's
    16-bit modules out for transformers and vLLM (re.match on module names, as they read it)."""
    dyn = {"-:.*\\.indexer\\.weights_proj": {}, "-:.*\\.mlp\\.gate$": {}}
    if dense:
        layers = "|".join(str(L) for L in range(dense))
        dyn[f"-:.*model\\.layers\\.({layers})\\.mlp\\."] = {}
    return {"bits": 4, "group_size": GPTQ_GROUP, "sym": True, "desc_act": False,
            "quant_method": "gptq", "lm_head": False, "dynamic": dyn,
            "provider": "whittle tools/synth/make_glm5_shaped.py --gptq (random codes)"}


def make_config(d: Dims, layers: int, dense: int, max_pos: int, eos: list[int], pad: int) -> dict:
    """config.json: the key set transformers 5.23 writes (models/tiny-glm5/config.json) plus the
    GLM-5 keys of the spec's §1 table; GLM-5 values except num_hidden_layers,
    first_k_dense_replace, num_nextn_predict_layers, max_position_embeddings, eos/pad ids."""
    return {
        "architectures": ["GlmMoeDsaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "dtype": "bfloat16",
        "eos_token_id": eos,
        "first_k_dense_replace": dense,
        "head_dim": d.rope,
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "index_head_dim": d.index_dim,
        "index_n_heads": d.index_heads,
        "index_topk": d.index_topk,
        "indexer_rope_interleave": True,
        "indexer_types": ["full"] * layers,
        "initializer_range": 0.02,
        "intermediate_size": d.inter,
        "kv_lora_rank": d.kv_lora,
        "layer_types": ["indexed_attention"] * layers,
        "max_position_embeddings": max_pos,
        "mlp_bias": False,
        "mlp_layer_types": ["dense" if L < dense else "sparse" for L in range(layers)],
        "model_type": "glm_moe_dsa",
        "moe_intermediate_size": d.moe_inter,
        "moe_layer_freq": 1,
        "n_group": GLM5_FIXED["n_group"],
        "n_routed_experts": d.experts,
        "n_shared_experts": d.shared,
        "norm_topk_prob": True,
        "num_attention_heads": d.heads,
        "num_experts_per_tok": d.top_k,
        "num_hidden_layers": layers,
        "num_key_value_heads": d.heads,
        "num_nextn_predict_layers": 0,
        "output_router_logits": False,
        "pad_token_id": pad,
        "q_lora_rank": d.q_lora,
        "qk_head_dim": d.nope + d.rope,
        "qk_nope_head_dim": d.nope,
        "qk_rope_head_dim": d.rope,
        "rms_norm_eps": GLM5_FIXED["rms_norm_eps"],
        "rope_interleave": True,
        "rope_parameters": {"rope_theta": GLM5_FIXED["rope_theta"], "rope_type": "default"},
        "routed_scaling_factor": GLM5_FIXED["routed_scaling_factor"],
        "scoring_func": "sigmoid",
        "tie_word_embeddings": False,
        "topk_group": GLM5_FIXED["topk_group"],
        "topk_method": "noaux_tc",
        "use_cache": True,
        "v_head_dim": d.v,
        "vocab_size": d.vocab,
    }


# ----------------------------------------------------------------------------------------------
# Values


def to_bf16_bytes(values) -> bytes:
    """Round-to-nearest-even float32 -> bf16, little-endian (values are finite)."""
    bits = array.array("I")
    bits.frombytes(array.array("f", values).tobytes())
    out = array.array("H", ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 for u in bits))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


class Pools:
    """One base Gaussian sample; per distinct value law a bf16 pool, stored twice in a row so that
    any slice of up to one pool length can start at any offset."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(f"whittle-synth-pool/{seed}")
        self.base = array.array("d", (rng.gauss(0.0, 1.0) for _ in range(POOL_VALUES)))
        self.cache: dict[tuple, memoryview] = {}

    def prepare(self, tensors: list[Tensor]) -> None:
        for t in tensors:
            if t.kind in ("normal", "norm", "bias", "codes", "scales"):
                self.get(t)

    def get(self, t: Tensor) -> memoryview:
        key = (t.kind, t.std) if t.kind in ("normal", "scales") else (t.kind,)
        if key not in self.cache:
            if t.kind == "codes":      # random bytes: GPTQ codes uniform in 0..15
                rng = random.Random(f"whittle-synth-codes/{self.seed}")
                b = rng.randbytes(2 * POOL_VALUES)
                self.cache[key] = memoryview(b + b)
                return self.cache[key]
            if t.kind == "scales":     # f16 scales: s·(1 + 0.1·N), positive
                b = struct.pack(f"<{len(self.base)}e", *(t.std * (1.0 + 0.1 * g) for g in self.base))
                self.cache[key] = memoryview(b * 2)
                return self.cache[key]
            if t.kind == "normal":
                vals = (g * t.std for g in self.base)
            elif t.kind == "norm":     # RMSNorm / LayerNorm gamma: 1 + 0.1·N (oracle convention)
                vals = (1.0 + 0.1 * g for g in self.base)
            elif t.kind == "bias":     # LayerNorm beta: 0.1·N
                vals = (0.1 * g for g in self.base)
            else:
                raise ValueError(t.kind)
            b = to_bf16_bytes(vals)
            self.cache[key] = memoryview(b + b)
        return self.cache[key]


def write_tensor(f, t: Tensor, pools: Pools, seed: int) -> None:
    rng = random.Random(f"{seed}/{t.name}")
    if t.dtype == "F32":  # e_score_correction_bias: small, drawn directly (0.1·N, fp32)
        f.write(array_le("f", [0.1 * rng.gauss(0.0, 1.0) for _ in range(math.prod(t.shape))]))
        return
    if t.kind == "g_idx":
        f.write(array_le("i", [k // GPTQ_GROUP for k in range(t.shape[0])]))
        return
    if t.kind == "zeros":
        f.write(b"\x77" * t.nbytes)
        return
    pool = pools.get(t)
    pool_bytes = len(pool) // 2
    left = t.nbytes
    while left:
        off = 2 * rng.randrange(POOL_VALUES)
        take = min(left, pool_bytes)
        f.write(pool[off:off + take])
        left -= take


def array_le(code: str, values: list) -> bytes:
    a = array.array(code, values)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


# ----------------------------------------------------------------------------------------------
# Files


def parse_size(s: str) -> int:
    """huggingface_hub.utils.parse_size_to_int: '5GB' = 5·10^9, '50MB', '2GiB', or bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*", s, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 5GB, 500MB, 2GiB, 1000000)")
    unit = (m.group(2) or "").upper()
    mult = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return n


def split_shards(tensors: list[Tensor], max_shard: int) -> list[list[Tensor]]:
    """huggingface_hub.split_state_dict_into_shards_factory's greedy split, in state-dict order:
    a tensor above max_shard gets a shard of its own at once; otherwise a new shard starts when the
    tensor would tip the current one over."""
    shards: list[list[Tensor]] = []
    cur: list[Tensor] = []
    cur_size = 0
    for t in tensors:
        if t.nbytes > max_shard:
            shards.append([t])
            continue
        if cur_size + t.nbytes > max_shard:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append(t)
        cur_size += t.nbytes
    if cur:
        shards.append(cur)
    return shards


def safetensors_header(tensors: list[Tensor]) -> tuple[bytes, list[Tensor]]:
    """As the safetensors library serializes: tensors sorted by dtype (larger enum first, F32
    before BF16) then name, packed with no gaps; compact JSON with __metadata__ first; header
    padded with spaces to a multiple of 8; 8-byte little-endian length prefix."""
    order = sorted(tensors, key=lambda t: (DTYPE_ORDER[t.dtype], t.name))
    header: dict = {"__metadata__": {"format": "pt"}}
    pos = 0
    for t in order:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [pos, pos + t.nbytes]}
        pos += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return len(text).to_bytes(8, "little") + text, order


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Progress:
    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        self.last = self.t0

    def add(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if force or now - self.last >= 10:
            self.last = now
            el = now - self.t0
            rate = self.done / max(el, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"  {self.done / 1e9:8.2f} / {self.total / 1e9:.2f} GB  {el:7.1f} s  "
                  f"{rate / 1e6:7.1f} MB/s  eta {eta:6.0f} s", flush=True)


def human(n: int) -> str:
    return f"{n / 1e9:.2f} GB ({n / 2**30:.2f} GiB)" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def mem_total() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def special_ids(tokenizer_json: Path) -> tuple[list[int], int] | None:
    """GLM-5's stop tokens (<|endoftext|>, <|user|>, <|observation|>) and pad (<|endoftext|>), as
    the copied tokenizer numbers them."""
    try:
        added = {a["content"]: a["id"] for a in json.loads(tokenizer_json.read_text())["added_tokens"]}
        eos = [added[k] for k in ("<|endoftext|>", "<|user|>", "<|observation|>")]
        return eos, added["<|endoftext|>"]
    except (OSError, KeyError, ValueError):
        return None


def tokenizer_vocab(tokenizer_json: Path) -> int:
    t = json.loads(tokenizer_json.read_text())
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (created; must be empty unless --force)")
    ap.add_argument("--layers", type=int, default=3,
                    help="decoder layers (default 3: 1 dense + 2 MoE = 44 GB at --scale 1)")
    ap.add_argument("--dense-layers", type=int, default=1,
                    help="first_k_dense_replace: leading dense layers (GLM-5 has 3; default 1)")
    ap.add_argument("--scale", type=int, default=1, choices=ALLOWED_SCALES,
                    help="divide every GLM-5 dimension (widths, heads, experts, index_topk, vocab) "
                         "by this; 8 gives ~160 MB")
    ap.add_argument("--experts", type=int, default=None,
                    help="n_routed_experts per MoE layer, not divided by --scale (default: GLM-5's "
                         "256 / scale); a deliberate difference from GLM-5 to fit a size: at "
                         "--scale 1 each expert is 75.5 MB")
    ap.add_argument("--gptq", action="store_true",
                    help="GPTQ int4 g128 symmetric for the Linears the recipe quantizes (attention, "
                         "indexer wq_b/wk, routed and shared experts): random codes, f16 scales; "
                         "dense MLPs, weights_proj, routers, embeddings and lm_head stay bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", type=parse_size, default=parse_size("5GB"),
                    help="max shard size as transformers' max_shard_size (default 5GB = 5e9 bytes); "
                         "one shard -> model.safetensors without an index")
    ap.add_argument("--max-position-embeddings", type=int, default=4096)
    ap.add_argument("--tokenizer-from", type=Path, default=DEFAULT_TOKENIZER_FROM,
                    help=f"folder to copy {', '.join(COPIED_FILES)} from (default models/tiny-glm5)")
    ap.add_argument("--force", action="store_true",
                    help="write into a non-empty folder (replaces model*.safetensors* there)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and sizes, write nothing")
    ap.add_argument("--null-sink", action="store_true",
                    help="generate every byte but write to /dev/null (measures the generator's "
                         "speed without the disk); writes no folder")
    args = ap.parse_args()

    if args.layers < 1 or not 0 <= args.dense_layers <= args.layers:
        ap.error("need --layers >= 1 and 0 <= --dense-layers <= --layers")
    if args.experts is not None and args.experts < 1:
        ap.error("--experts must be at least 1")
    if args.max_position_embeddings < 1:
        ap.error("--max-position-embeddings must be positive")
    src = args.tokenizer_from
    tok_json = src / "tokenizer.json"
    if not tok_json.is_file():
        ap.error(f"{tok_json}: missing (--tokenizer-from)")

    d = make_dims(args.scale, tokenizer_vocab(tok_json), args.experts)
    ids = special_ids(tok_json)
    eos, pad = ids if ids else ([154820, 154827, 154829], 154820)
    tensors = tensor_list(d, args.layers, args.dense_layers, args.gptq)
    total = sum(t.nbytes for t in tensors)
    shards = split_shards(tensors, args.shard_size)
    n = len(shards)
    names = (["model.safetensors"] if n == 1 else
             [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])

    # Plan.
    moe = args.layers - args.dense_layers
    params = sum(math.prod(t.shape) for t in tensors)
    ram = mem_total()
    print(f"GLM-5-shaped synthetic checkpoint -> {args.out}")
    print(f"  scale 1/{args.scale}: hidden {d.hidden}, heads {d.heads}, q_lora {d.q_lora}, "
          f"kv_lora {d.kv_lora}, qk {d.nope}+{d.rope}, v {d.v}, indexer {d.index_heads}x{d.index_dim} "
          f"top-{d.index_topk}, experts {d.experts} (top-{d.top_k}) x {d.moe_inter} + {d.shared} shared, "
          f"dense {d.inter}, vocab {d.vocab}")
    print(f"  layers {args.layers} ({args.dense_layers} dense, {moe} MoE), {len(tensors)} tensors, "
          f"{params / 1e9:.3f} B params")
    groups = {"embed_tokens + lm_head": lambda s: "embed_tokens" in s or "lm_head" in s,
              "routed experts": lambda s: ".experts." in s,
              "attention + indexer": lambda s: ".self_attn." in s,
              "dense MLPs": lambda s: re.search(r"\.mlp\.(gate|up|down)_proj", s) is not None,
              "shared experts + router": lambda s: ".shared_experts." in s or ".mlp.gate." in s}
    for g, pred in groups.items():
        print(f"    {g:<26} {human(sum(t.nbytes for t in tensors if pred(t.name)))}")
    print(f"  total tensor bytes {human(total)} in {n} file(s) (max shard {human(args.shard_size)})"
          + (f"; RAM {human(ram)}: {'larger' if total > ram else 'NOT larger'} than RAM" if ram else ""))
    if args.dry_run:
        return 0

    t0 = time.monotonic()
    pools = Pools(args.seed)
    pools.prepare(tensors)
    print(f"  {len(pools.cache)} bf16 pools of {POOL_VALUES} values ({human(2 * POOL_VALUES)} each) "
          f"drawn in {time.monotonic() - t0:.1f} s", flush=True)
    if args.null_sink:
        t0 = time.monotonic()
        prog = Progress(total)
        with open(os.devnull, "wb", buffering=0) as f:
            for shard in shards:
                head, order = safetensors_header(shard)
                f.write(head)
                for t in order:
                    write_tensor(f, t, pools, args.seed)
                    prog.add(t.nbytes)
        el = time.monotonic() - t0
        prog.add(0, force=True)
        print(f"null sink: {human(total)} in {el:.1f} s = {total / el / 1e6:.0f} MB/s")
        return 0

    out = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"error: {out} exists and is not empty (use --force)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < total + (1 << 30):
        print(f"error: {out}: {human(free)} free, need {human(total)} + 1 GiB", file=sys.stderr)
        return 1
    for p in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        p.unlink()

    # Small files first; the index last, so a folder with an index is complete.
    for name in COPIED_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    cfg = make_config(d, args.layers, args.dense_layers, args.max_position_embeddings, eos, pad)
    if args.gptq:
        cfg["quantization_config"] = quantization_config(args.dense_layers)
    atomic_write_bytes(out / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())
    cmd = " ".join(["python3", "tools/synth/make_glm5_shaped.py"] + sys.argv[1:])
    atomic_write_bytes(out / "README.md", (
        "# Synthetic GLM-5-shaped checkpoint (random weights)\n\n"
        f"Written by whittle's `tools/synth/make_glm5_shaped.py` (`{cmd}`).\n"
        "GLM-5 dimensions at scale 1/{scale}, {layers} layers ({dense} dense, {moe} MoE), "
        "{experts} routed experts per MoE layer, seed {seed}; "
        "weights are slices of pre-drawn Gaussian pools: meaningless text, for load / memory "
        "benchmarks only. Tokenizer and generation_config copied from {src}.\n"
    ).format(scale=args.scale, layers=args.layers, dense=args.dense_layers, moe=moe, experts=d.experts,
             seed=args.seed, src=src.name).encode())

    t0 = time.monotonic()
    prog = Progress(total)
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards):
        head, order = safetensors_header(shard)
        size = len(head) + sum(t.nbytes for t in order)
        tmp = out / f".{name}.partial"
        with open(tmp, "wb", buffering=0) as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)  # fail early on a full disk
            except OSError:
                pass
            f.write(head)
            for t in order:
                write_tensor(f, t, pools, args.seed)
                prog.add(t.nbytes)
            if f.tell() != size:
                raise RuntimeError(f"{tmp}: wrote {f.tell()} bytes, expected {size}")
            os.fsync(f.fileno())
        os.replace(tmp, out / name)
        for t in shard:
            weight_map[t.name] = name
        print(f"  wrote {name} ({human(size)}, {len(shard)} tensors)", flush=True)
    if n > 1:  # transformers' save_pretrained: json.dumps(index, indent=2, sort_keys=True) + "\n"
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        atomic_write_bytes(out / "model.safetensors.index.json",
                           (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    el = time.monotonic() - t0
    prog.add(0, force=True)
    print(f"done: {human(total)} in {n} file(s), {el:.1f} s, {total / el / 1e6:.0f} MB/s "
          f"(writing, fallocate and fsync; pools not included)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
