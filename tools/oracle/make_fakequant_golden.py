#!/usr/bin/env python3
"""Golden gradients of auto-round's own fake-quantization op (`auto_round.data_type.int.quant_tensor_sym`, the
`int_sym` data type of W4A16) with respect to its tuned parameters: the rounding offsets V, and the clip factors
min_scale (beta) and max_scale (alpha), through the straight-through rounding, as auto-round's SignRound computes them.

Usage (from the repository root; needs auto-round in .venv, see tools/oracle/README.md):
    .venv/bin/python tools/oracle/make_fakequant_golden.py [--out tests/golden/fake_quant]

Writes (float32 unless said): w.npy [N, K] (bf16 values), v.npy [N, K], alpha.npy / beta.npy [N * K/G],
r.npy [N, K] (bf16 values; the loss is L = sum(W~ * R), so dL/dW~ = R), wq.npy [N, K] (W~ as auto-round returns
it, bf16 values), scale.npy [N * K/G] (fp16 values), dv.npy, dalpha.npy, dbeta.npy (autograd), ORACLE.json.
The weight is bf16 as in a bf16 model; min/max come from the original weight (tensor_min / tensor_max, as
auto-round's WrapperLinear caches them, clamped to <= 0 and >= 0). Some groups are made to hit the special cases: an all-zero group (the
1e-5 threshold), a group whose clipped extremes tie (|min| * beta == max * alpha), codes clamped at both ends.
"""

import argparse
import hashlib
import json
import os
import platform
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "fake_quant"))
    args = ap.parse_args()
    import auto_round
    from auto_round.data_type.int import quant_tensor_sym

    torch.manual_seed(0)
    N, K, G, bits = 8, 128, 32, 4
    g = torch.Generator().manual_seed(1234)
    w = (torch.randn(N, K, generator=g) * 0.05).to(torch.bfloat16)
    w[0, 0:G] = 0  # all-zero group: scale threshold, no clip-factor gradient
    # row 1 group 0: |min| == max exactly, so alpha == beta == 1 ties (torch.max splits the gradient)
    w[1, 0:G] = w[1, 0:G].abs()
    w[1, 5] = -w[1, 0:G].max()
    groups = N * K // G
    v = (torch.rand(N, K, generator=g) - 0.5) * 0.6  # beyond +-0.5: some codes clamp at both ends
    alpha = 0.5 + 0.5 * torch.rand(groups, generator=g)
    beta = 0.5 + 0.5 * torch.rand(groups, generator=g)
    alpha[(1 * K) // G] = 1.0
    beta[(1 * K) // G] = 1.0
    r = torch.randn(N, K, generator=g).to(torch.bfloat16).float()
    v.requires_grad_(True)
    alpha.requires_grad_(True)
    beta.requires_grad_(True)
    wg = w.reshape(-1, G)
    wq, scale, _ = quant_tensor_sym(w, bits=bits, group_size=G, v=v.reshape(-1, G), min_scale=beta,
                                    max_scale=alpha, scale_dtype=torch.float16,
                                    tensor_min=torch.clamp(wg.min(-1)[0], max=0),
                                    tensor_max=torch.clamp(wg.max(-1)[0], min=0))
    loss = (wq.float() * r).sum()
    loss.backward()
    out = args.out
    os.makedirs(out, exist_ok=True)
    arrays = dict(w=w.float(), v=v.detach(), alpha=alpha.detach(), beta=beta.detach(), r=r, wq=wq.float().detach(),
                  scale=scale.float().reshape(-1).detach(), dv=v.grad, dalpha=alpha.grad, dbeta=beta.grad)
    files = {}
    for k, t in arrays.items():
        p = os.path.join(out, f"{k}.npy")
        np.save(p, t.numpy().astype(np.float32))
        files[f"{k}.npy"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    tie = (1 * K) // G
    oracle = dict(
        command=".venv/bin/python tools/oracle/make_fakequant_golden.py",
        versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                      auto_round=auto_round.__version__),
        function="auto_round.data_type.int.quant_tensor_sym (the int_sym data type), v / min_scale / max_scale "
                 "tensors, scale_dtype float16, tensor_min / tensor_max of the original weight",
        shapes=dict(N=N, K=K, group_size=G, bits=bits),
        loss="sum(W~.float() * R)",
        checks=dict(
            zero_group_scale=float(scale.reshape(-1)[0]),
            zero_group_dalpha=float(alpha.grad[0]), zero_group_dbeta=float(beta.grad[0]),
            tie_group_dalpha=float(alpha.grad[tie]), tie_group_dbeta=float(beta.grad[tie]),
            clamped_codes=int(((w.float().reshape(-1, G) / scale.float() + v.detach().reshape(-1, G)).round()
                               .abs() > 7.5).sum()),
        ),
        files_sha256=files,
    )
    with open(os.path.join(out, "ORACLE.json"), "w") as f:
        json.dump(oracle, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(oracle["checks"], indent=1))


if __name__ == "__main__":
    main()
