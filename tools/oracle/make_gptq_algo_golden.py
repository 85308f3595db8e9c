"""Golden results of the GPTQ algorithm (Frantar et al. 2022) for src/quant/gptq_test.cc.

The reference is IST-DASLab/gptq's `GPTQ.fasterquant` (blocksize 128, percdamp 0.01, no act-order,
static_groups False), re-written here from its description (spec autoround_gptq.md §6) in float32 as
the original runs it, with one deliberate change: the quantizer is whittle's full-range symmetric
grid (int_quant.h; auto-round's `int_sym`) instead of GPTQ's `2·max(|lo|, hi)/15, zero 8`, so that
the grid is the only difference from the original. The grid, as int_quant.h states it, per group of
one row: lo = min(min w, 0), hi = max(max w, 0), s = fp16((-lo > hi ? -lo : -hi) / 8), s = s < 0 ?
min(s, -fp16(1e-5)) : max(s, fp16(1e-5)), q = clamp(round_half_even(w / s), -8, 7).

What the original does that a reader might not expect, kept here: the scale of a group is computed
when its first column comes up, from `W[:, k:k+G]`, the full matrix, which holds the values as they
stood when the current block began (later updates inside the block go to the block's copy `W1`).

Cases (H is always given, never collected by a hook):
    correlated   N=96,  K=256, G=128, block 128: inputs X = Z + Y·B (a strong rank-8 part over weak
                 full-rank noise) with per-column scales 2^-e, so H is ill-conditioned
    awkward      N=64,  K=320, G=32,  block 128: K is not a multiple of the block, groups smaller than
                 the block, inputs 5 and 201 always 0 (dead)
    real_q_b     the bundled model's model.layers.1.self_attn.q_b_proj.weight [512, 128] (bf16),
                 G=32, block 128, generated inputs as in `correlated`
    stored       N=16,  K=48,  G=16, block 32: float32 W and H from torch.randn, stored as they are

W and H of the first three are generated from integers (a counter-based splitmix64 that the C++
test re-implements): every value of X is an integer, H = (2/n)·XᵀX·2^-(e_k+e_l) is then exact in
float64 and rounds to the same float32 in any summation order, so both sides hold bit-identical H
without storing it (256² floats alone would pass the 300 KB budget). Their fingerprints (H's
diagonal, float64 sums of W and H) are stored for the C++ test to check its copy.

Writes tests/golden/gptq_algo/:
    <case>.codes.npy   int32 [N, K/8]: the reference codes, 8 per word, code+8 in bits 4j..4j+3
    <case>.scales.npy  float32 [N, groups]: the reference fp16 scales, widened
    <case>.h_diag.npy  float32 [K]: diag(H), the generated cases' fingerprint
    stored.w.npy, stored.h.npy   float32 W [16, 48] and H [48, 48]
    ORACLE.json        command, versions, per case: settings, losses, fingerprints, checks

Run: .venv/bin/python tools/oracle/make_gptq_algo_golden.py [--out tests/golden/gptq_algo]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK = (1 << 64) - 1


# ----------------------------------------------------------------------------------------------
# Integer generator shared with gptq_test.cc
# ----------------------------------------------------------------------------------------------
def splitmix_ints(seed: int, n: int, lo: int, hi: int) -> np.ndarray:
    """n integers in [lo, hi]: lo + splitmix64(seed + (i+1)·golden) mod (hi-lo+1), i = 0..n-1."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return lo + (z % np.uint64(hi - lo + 1)).astype(np.int64)


def generated_inputs(seed: int, n: int, k: int, rank: int, dead: list[int]) -> np.ndarray:
    """H float32 [k, k] = (2/n)·XᵀX·2^-(e_k+e_l), X = Z + Y·B integers, dead columns of X zeroed."""
    z = splitmix_ints(seed * 8 + 1, n * k, -2, 2).reshape(n, k)
    y = splitmix_ints(seed * 8 + 2, n * rank, -8, 8).reshape(n, rank)
    b = splitmix_ints(seed * 8 + 3, rank * k, -3, 3).reshape(rank, k)
    e = splitmix_ints(seed * 8 + 4, k, 0, 3)
    x = z + y @ b
    x[:, dead] = 0
    g = x.T @ x  # exact in int64
    assert np.abs(g).max() < 2**53
    h = g.astype(np.float64) * (2.0 / n) * np.ldexp(1.0, -(e[:, None] + e[None, :]))
    return h.astype(np.float32)


def generated_weight(seed: int, rows: int, cols: int) -> np.ndarray:
    return (splitmix_ints(seed * 8 + 5, rows * cols, -2047, 2047).astype(np.float64) / 2048).astype(np.float32).reshape(rows, cols)


# ----------------------------------------------------------------------------------------------
# The quantizer (whittle's full-range symmetric grid) and GPTQ
# ----------------------------------------------------------------------------------------------
def group_scale(wg: torch.Tensor, bits: int) -> torch.Tensor:
    """fp16 scale (as a float32 tensor) per row of wg [N, g]."""
    lo = torch.clamp(wg.min(dim=1).values, max=0).float()
    hi = torch.clamp(wg.max(dim=1).values, min=0).float()
    a, b = -lo, hi
    s = (torch.where(a > b, a, -b) / float(1 << (bits - 1))).half().float()
    thr = torch.tensor(1e-5, dtype=torch.float32).half().float()
    return torch.where(s < 0, torch.minimum(s, -thr), torch.maximum(s, thr))


def quantize_codes(w: torch.Tensor, s: torch.Tensor, bits: int) -> torch.Tensor:
    """clamp(round_half_even(w / s), qmin, qmax); torch.round rounds half to even."""
    return torch.clamp(torch.round(w / s.to(w.dtype)), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def gptq_reference(W: torch.Tensor, H: torch.Tensor, bits: int, group: int, blocksize: int,
                   percdamp: float, dtype=torch.float32, scales_from_block_copy: bool = False):
    """fasterquant: returns (codes int64 [N, K], scales float32 [N, groups], Σ err² = 2·Losses.sum()).

    scales_from_block_copy: not the original; takes a group's scale from the block's working copy
    (fully error-updated values) when the group lies inside the block, to measure what the original's
    choice is worth."""
    W = W.clone().to(dtype)
    H = H.clone().to(dtype)
    N, K = W.shape
    G = K if group < 0 or group > K else group
    ngroups = (K + G - 1) // G
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(K)
    H[diag, diag] += damp
    # U = upper Cholesky factor of H⁻¹, by the original's three steps.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    codes = torch.zeros(N, K, dtype=torch.int64)
    scales = torch.zeros(N, ngroups, dtype=torch.float32)
    losses = torch.zeros(N, dtype=dtype)
    s = None
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            k = i1 + i
            w = W1[:, i]
            d = U1[i, i]
            if k % G == 0:
                # From W, not W1: the block-start values (see the docstring).
                if scales_from_block_copy and k + G <= i2:
                    s = group_scale(W1[:, i:i + G], bits)
                else:
                    s = group_scale(W[:, k:k + G], bits)
                scales[:, k // G] = s
            q = quantize_codes(w, s, bits)
            codes[:, k] = q.to(torch.int64)
            wq = s.to(dtype) * q
            Losses1[:, i] = (w - wq) ** 2 / d ** 2
            err = (w - wq) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        losses += Losses1.sum(dim=1) / 2
        W[:, i2:] -= Err1.matmul(U[i1:i2, i2:])
    return codes, scales, float(2.0 * losses.double().sum())


def rtn(W: torch.Tensor, bits: int, group: int):
    N, K = W.shape
    G = K if group < 0 or group > K else group
    codes = torch.zeros(N, K, dtype=torch.int64)
    scales = torch.zeros(N, (K + G - 1) // G, dtype=torch.float32)
    for g0 in range(0, K, G):
        s = group_scale(W[:, g0:g0 + G], bits)
        scales[:, g0 // G] = s
        codes[:, g0:g0 + G] = quantize_codes(W[:, g0:g0 + G], s.unsqueeze(1), bits).to(torch.int64)
    return codes, scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor, group: int) -> torch.Tensor:
    K = codes.shape[1]
    G = K if group < 0 or group > K else group
    return scales.double().repeat_interleave(G, dim=1)[:, :K] * codes.double()


def proxy_loss(W: torch.Tensor, Wq: torch.Tensor, H: torch.Tensor) -> float:
    """tr((W − W~) H (W − W~)ᵀ) in float64."""
    D = W.double() - Wq.double()
    return float(((D @ H.double()) * D).sum())


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """int32 [N, K/8]: code + 2^(bits-1) in bits 4j..4j+3 of word k // 8 (4-bit codes only)."""
    assert bits == 4 and codes.shape[1] % 8 == 0
    u = (codes + 8).astype(np.uint32).reshape(codes.shape[0], -1, 8)
    words = np.zeros(u.shape[:2], dtype=np.uint32)
    for j in range(8):
        words |= u[:, :, j] << np.uint32(4 * j)
    return words.view(np.int32)


# ----------------------------------------------------------------------------------------------
def load_bf16_weight(name: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(os.path.join(ROOT, "models/tiny-glm5/model.safetensors"), "pt") as f:
        return f.get_tensor(name).float().numpy()


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/golden/gptq_algo"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # one summation order, whatever the machine

    bits, damp = 4, 0.01
    cases = []
    # name, seed, N, K, group, block, n (calibration rows), rank, dead inputs, weight source
    cases.append(dict(name="correlated", seed=1, N=96, K=256, group=128, block=128, n=512, rank=8, dead=[]))
    cases.append(dict(name="awkward", seed=2, N=64, K=320, group=32, block=128, n=512, rank=8, dead=[5, 201]))
    cases.append(dict(name="real_q_b", seed=3, N=512, K=128, group=32, block=128, n=512, rank=8, dead=[],
                      tensor="model.layers.1.self_attn.q_b_proj.weight"))
    cases.append(dict(name="stored", seed=4, N=16, K=48, group=16, block=32))

    report = {}
    for c in cases:
        name, N, K = c["name"], c["N"], c["K"]
        if name == "stored":
            g = torch.Generator().manual_seed(c["seed"])
            W = torch.randn(N, K, generator=g, dtype=torch.float32)
            A = torch.randn(K, K, generator=g, dtype=torch.float32) * torch.logspace(0, -3, K)
            X = torch.randn(256, K, generator=g, dtype=torch.float32) @ A
            H = (2.0 / 256) * (X.T @ X)
            H = (0.5 * (H + H.T)).contiguous()  # exactly symmetric
            np.save(os.path.join(args.out, "stored.w.npy"), W.numpy())
            np.save(os.path.join(args.out, "stored.h.npy"), H.numpy())
            Wn, Hn = W.numpy(), H.numpy()
        else:
            Hn = generated_inputs(c["seed"], c["n"], K, c["rank"], c["dead"])
            Wn = load_bf16_weight(c["tensor"]) if "tensor" in c else generated_weight(c["seed"], N, K)
            assert Wn.shape == (N, K), Wn.shape
            np.save(os.path.join(args.out, f"{name}.h_diag.npy"), np.ascontiguousarray(np.diag(Hn)))
        W, H = torch.from_numpy(Wn), torch.from_numpy(Hn)

        codes, scales, damped = gptq_reference(W, H, bits, c["group"], c["block"], damp)
        loss = proxy_loss(W, dequantize(codes, scales, c["group"]), H)
        rcodes, rscales = rtn(W, bits, c["group"])
        rloss = proxy_loss(W, dequantize(rcodes, rscales, c["group"]), H)
        # The same algorithm in float64: how much float order alone moves codes and loss.
        codes64, scales64, damped64 = gptq_reference(W, H, bits, c["group"], c["block"], damp, torch.float64)
        loss64 = proxy_loss(W, dequantize(codes64, scales64, c["group"]), H)
        # The damping mutation the C++ test must catch, measured here too.
        codes_d, scales_d, _ = gptq_reference(W, H, bits, c["group"], c["block"], 0.1)
        loss_d = proxy_loss(W, dequantize(codes_d, scales_d, c["group"]), H)
        codes_w1, scales_w1, _ = gptq_reference(W, H, bits, c["group"], c["block"], damp,
                                                scales_from_block_copy=True)
        loss_w1 = proxy_loss(W, dequantize(codes_w1, scales_w1, c["group"]), H)

        np.save(os.path.join(args.out, f"{name}.codes.npy"), pack_codes(codes.numpy(), bits))
        np.save(os.path.join(args.out, f"{name}.scales.npy"), scales.numpy())
        eig = torch.linalg.eigvalsh(H.double())
        report[name] = dict(
            settings={k: v for k, v in c.items() if k != "name"},
            bits=bits, percdamp=damp,
            loss=loss, rtn_loss=rloss, damped_loss=damped,
            w_sum=float(Wn.astype(np.float64).sum()), h_sum=float(Hn.astype(np.float64).sum()),
            checks=dict(
                gptq_over_rtn=loss / rloss,
                h_eigenvalue_range=[float(eig.min()), float(eig.max())],
                float64_run_codes_equal=float((codes == codes64).double().mean()),
                float64_run_scales_equal=float((scales == scales64).double().mean()),
                float64_run_loss=loss64,
                float64_run_damped_loss=damped64,
                damp_0p1_loss=loss_d,
                scales_from_block_copy_loss=loss_w1,
                scales_negative=float((scales < 0).double().mean()),
            ),
        )
        print(f"{name}: loss {loss:.6g} rtn {rloss:.6g} (x{loss / rloss:.3f}) damped {damped:.6g}; "
              f"float64 run: codes equal {report[name]['checks']['float64_run_codes_equal']:.6f}, "
              f"scales equal {report[name]['checks']['float64_run_scales_equal']:.6f}, loss {loss64:.6g}; "
              f"damp 0.1: {loss_d:.6g}; scales from the block copy: {loss_w1:.6g}", file=sys.stderr)

    files = {f: sha256_file(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out)) if f != "ORACLE.json"}
    info = dict(
        command="tools/oracle/make_gptq_algo_golden.py " + " ".join(sys.argv[1:]),
        versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__),
        reference="IST-DASLab/gptq GPTQ.fasterquant (blocksize, percdamp 0.01, groupsize, actorder False, "
        "static_groups False) re-written from spec autoround_gptq.md §6, float32 on CPU with one torch thread; "
        "quantizer: whittle's full-range symmetric grid (int_quant.h) in place of GPTQ's (2·max(|lo|,hi)/15, zero 8)",
        generator="splitmix64 counter stream: z = seed + (i+1)·0x9E3779B97F4A7C15, z = (z ^ z>>30)·0xBF58476D1CE4E5B9, "
        "z = (z ^ z>>27)·0x94D049BB133111EB, z ^= z>>31; value = lo + z mod (hi-lo+1). Seeds seed·8+1: Z [n,K] in "
        "[-2,2]; +2: Y [n,rank] in [-8,8]; +3: B [rank,K] in [-3,3]; +4: e [K] in [0,3]; +5: W [N,K] in "
        "[-2047,2047]/2048. X = Z + Y·B with dead columns zeroed; H = fp32((2/n)·XᵀX·2^-(e_k+e_l)), exact in float64",
        inputs_sha256={"models/tiny-glm5/model.safetensors": sha256_file(os.path.join(ROOT, "models/tiny-glm5/model.safetensors"))},
        cases=report,
        files_sha256=files,
    )
    with open(os.path.join(args.out, "ORACLE.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"{total / 1024:.1f} KiB in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
