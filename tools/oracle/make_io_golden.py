#!/usr/bin/env python3
"""Writes the golden files of the I/O and dtype tests (tests/golden/io/, tests/golden/dtype/).

The C++ tests compare whittle against what the official libraries produce, so every expected value
here comes from safetensors, huggingface_hub, numpy or torch, never from whittle.

    .venv/bin/python tools/oracle/make_io_golden.py

Files (all small; the whole set is a few hundred KB):
  io/python_dtypes.safetensors   one tensor per dtype, written by safetensors.torch.save_file
  io/python_sharded/             a sharded checkpoint written by huggingface_hub.save_torch_state_dict
  io/fp8_block.safetensors       an F8_E4M3 [130, 200] weight + F32 [2, 2] weight_scale_inv
  io/fp8_block_dequant.npy       its block dequantization computed by torch, float32 [130, 200]
  io/numpy_*.npy                 arrays written by numpy.save
  dtype/f16_to_f32.npy           float32 value of every float16 bit pattern, as torch converts it
  dtype/f8e4m3_to_f32.npy        float32 value of every float8_e4m3fn bit pattern, as torch converts it
  dtype/f32_rounding.npy         int32 [N, 3]: float32 bits, torch's bfloat16 bits, torch's float16 bits
The value formulas of python_dtypes and python_sharded are mirrored in src/io/safetensors_test.cc.
"""
import os
import shutil
import sys

import huggingface_hub
import numpy as np
import safetensors
import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
IO = os.path.join(ROOT, "tests", "golden", "io")
DTYPE = os.path.join(ROOT, "tests", "golden", "dtype")


def pattern(shape, dtype):
    """Element i (C order): ((7 i) mod 23 - 11) / 4 for floats, ((7 i) mod 23 - 11) for signed ints,
    (7 i) mod 23 for uint8, i mod 3 == 0 for bool. Exact in every dtype, including float8_e4m3fn."""
    n = int(np.prod(shape)) if len(shape) else 1
    k = (np.arange(n, dtype=np.int64) * 7) % 23
    if dtype == torch.bool:
        v = torch.from_numpy(np.arange(n) % 3 == 0)
    elif dtype == torch.uint8:
        v = torch.from_numpy(k.astype(np.uint8))
    elif dtype.is_floating_point:
        v = torch.from_numpy((k - 11).astype(np.float64) / 4).to(dtype)
    else:
        v = torch.from_numpy(k - 11).to(dtype)
    return v.reshape(shape)


# Name, dtype, shape. The order is deliberately not the one safetensors lays out.
DTYPE_TENSORS = [
    ("model.norm.weight", torch.bfloat16, (3, 5)),
    ("half", torch.float16, (2, 2, 3)),
    ("float", torch.float32, (7,)),
    ("double", torch.float64, (2, 3)),
    ("long", torch.int64, (4,)),
    ("int", torch.int32, (3, 2)),
    ("char", torch.int8, (5,)),
    ("byte", torch.uint8, (6,)),
    ("mask", torch.bool, (4,)),
    ("fp8.weight", torch.float8_e4m3fn, (3, 3)),
    ("scalar", torch.float32, ()),
    ("empty", torch.float32, (0, 3)),
]

# Added in this order with max_shard_size=600 bytes: "model.layers.1.big" (2048 bytes) exceeds it and
# gets its own shard.
SHARDED_TENSORS = [
    ("model.embed_tokens.weight", torch.bfloat16, (16, 8)),
    ("model.layers.0.mlp.weight", torch.float32, (8, 8)),
    ("model.layers.0.norm.weight", torch.bfloat16, (8,)),
    ("model.layers.1.big", torch.float32, (32, 16)),
    ("model.layers.1.ids", torch.int64, (10,)),
    ("model.layers.1.norm.weight", torch.float16, (8,)),
    ("lm_head.weight", torch.bfloat16, (16, 8)),
]
SHARD_BYTES = 600


def write_safetensors_goldens():
    save_file({n: pattern(s, d) for n, d, s in DTYPE_TENSORS}, os.path.join(IO, "python_dtypes.safetensors"),
              metadata={"format": "pt"})
    sharded = os.path.join(IO, "python_sharded")
    shutil.rmtree(sharded, ignore_errors=True)
    os.makedirs(sharded)
    save_torch_state_dict({n: pattern(s, d) for n, d, s in SHARDED_TENSORS}, sharded, max_shard_size=SHARD_BYTES)

    # Block FP8 as DeepSeek/GLM store it: 128x128 tiles, weight = fp8 * scale_inv[tile].
    g = torch.Generator().manual_seed(5)
    weight = (torch.randn(130, 200, generator=g) * 40).clamp(-448, 448).to(torch.float8_e4m3fn)
    scale_inv = torch.tensor([[0.5, 0.0013], [3.25, 0.0625]], dtype=torch.float32)
    save_file({"layer.weight": weight, "layer.weight_scale_inv": scale_inv},
              os.path.join(IO, "fp8_block.safetensors"), metadata={"format": "pt"})
    tiles = scale_inv.repeat_interleave(128, 0).repeat_interleave(128, 1)[:130, :200]
    np.save(os.path.join(IO, "fp8_block_dequant.npy"), (weight.to(torch.float32) * tiles).numpy())


# Values mirrored in src/io/npy_test.cc.
NPY_F32 = np.array([[0.0, -0.0, 1.5, -2.25], [np.inf, -np.inf, 1e-45, 3.4028235e38], [65504.0, 1e-8, -7.0, 0.1]],
                   dtype=np.float32)
NPY_I64 = np.array([0, -1, 2**63 - 1, -2**63, 151329], dtype=np.int64)
NPY_I32 = np.arange(8, dtype=np.int32).reshape(2, 2, 2) * -3 + 7


def write_npy_goldens():
    np.save(os.path.join(IO, "numpy_f32.npy"), NPY_F32)
    np.save(os.path.join(IO, "numpy_i64.npy"), NPY_I64)
    np.save(os.path.join(IO, "numpy_i32.npy"), NPY_I32)
    np.save(os.path.join(IO, "numpy_scalar_f32.npy"), np.float32(2.5).reshape(()))
    np.save(os.path.join(IO, "numpy_empty_f32.npy"), np.zeros((0, 3), np.float32))


def f32_rounding_inputs():
    rng = np.random.default_rng(7)
    edge = [0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff,
            0x00000001, 0x80000001, 0x007fffff, 0x00800000, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff,
            0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001,  # bf16 ties to even and neighbours
            0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000,  # f16 max 65504 and overflow
            0x38800000, 0x387fffff, 0x33800000, 0x33000000, 0x33000001, 0x33c00000, 0x34000000,  # f16 subnormals
            0x3f801000, 0x3f803000, 0x3f800fff, 0x3f801001]  # f16 ties
    u = [np.uint32(e) for e in edge]
    u += list(rng.integers(0, 2**32, 1500, dtype=np.uint64).astype(np.uint32))  # any bits: NaN, inf, subnormal
    normal = rng.integers(0, 2**32, 1500, dtype=np.uint64).astype(np.uint32)
    u += list((normal & np.uint32(0xffff0000)) | np.uint32(0x8000))  # bf16 ties
    # f16 range (exponents 2^-25 .. 2^15) with the 13 dropped bits an exact tie or a neighbour.
    exp = rng.integers(102, 143, 1000, dtype=np.uint32)
    mant = rng.integers(0, 2**23, 1000, dtype=np.uint32) & np.uint32(~0x1fff & 0x7fffff)
    low = rng.choice(np.array([0x1000, 0x0fff, 0x1001, 0], np.uint32), 1000)
    sign = rng.integers(0, 2, 1000, dtype=np.uint32) << np.uint32(31)
    u += list(sign | (exp << np.uint32(23)) | mant | low)
    return np.array(u, dtype=np.uint32)


def write_dtype_goldens():
    f16_bits = torch.from_numpy(np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16))
    np.save(os.path.join(DTYPE, "f16_to_f32.npy"), f16_bits.view(torch.float16).to(torch.float32).numpy())
    f8_bits = torch.from_numpy(np.arange(256, dtype=np.uint32).astype(np.uint8))
    np.save(os.path.join(DTYPE, "f8e4m3_to_f32.npy"), f8_bits.view(torch.float8_e4m3fn).to(torch.float32).numpy())

    bits = f32_rounding_inputs()
    x = torch.from_numpy(bits.view(np.float32).copy())
    bf16 = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).astype(np.int32)
    f16 = x.to(torch.float16).view(torch.int16).numpy().view(np.uint16).astype(np.int32)
    np.save(os.path.join(DTYPE, "f32_rounding.npy"), np.stack([bits.view(np.int32), bf16, f16], axis=1))


def write_provenance(folder):
    with open(os.path.join(folder, "PROVENANCE.txt"), "w") as f:
        f.write("Written by: .venv/bin/python tools/oracle/make_io_golden.py\n")
        f.write(f"python {sys.version.split()[0]}, torch {torch.__version__}, safetensors {safetensors.__version__}, "
                f"huggingface_hub {huggingface_hub.__version__}, numpy {np.__version__}\n")


def main():
    os.makedirs(IO, exist_ok=True)
    os.makedirs(DTYPE, exist_ok=True)
    write_safetensors_goldens()
    write_npy_goldens()
    write_dtype_goldens()
    write_provenance(IO)
    write_provenance(DTYPE)


if __name__ == "__main__":
    main()
