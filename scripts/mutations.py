#!/usr/bin/env python3
"""Mutation check: each deliberate bug below must turn some test red.

Copies the working tree (tracked and untracked, not ignored files) to a scratch folder, builds it
once, then for every mutation: applies it (an exact text replacement that must match), rebuilds,
runs the test binary and records which tests failed; the mutation is reverted before the next.
A mutation that leaves every test green is a hole in the tests, and the script exits 1.

    python3 scripts/mutations.py                  # all mutations, ~1 min each on 2 cores
    python3 scripts/mutations.py --only bias      # names containing "bias"

The results of the last full run are recorded in docs/MUTATIONS.md. The slow end-to-end test of the
bundled model (BundledModel.*) is left out: each mutation must be caught by a fast test.
"""
import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

# name, file, text to replace, replacement, what the bug is
MUTATIONS = [
    ("latent-norm-eps", "src/io/model_config.h",
     "double latent_norm_eps = 1e-6;", "double latent_norm_eps = 1e-4;",
     "q_a_layernorm / kv_a_layernorm eps 1e-6 -> 1e-4"),
    ("indexer-k-norm-eps", "src/io/model_config.h",
     "double index_k_norm_eps = 1e-6;", "double index_k_norm_eps = 1e-4;",
     "the indexer's k_norm LayerNorm eps 1e-6 -> 1e-4"),
    ("decoder-norm-eps", "src/model/glm_moe_dsa.cc",
     "const float eps = static_cast<float>(config_.rms_norm_eps);\n  if (observer) observer->layer_input",
     "const float eps = 1e-6f;\n  if (observer) observer->layer_input",
     "decoder RMSNorms ignore rms_norm_eps (1e-5 in GLM-5) and use 1e-6"),
    ("indexer-rope-pairing", "src/model/glm_moe_dsa.cc",
     "rope_.rotate(&q[((r0 + t) * IH + hd) * ID], past + t, c.indexer_rope_interleave);",
     "rope_.rotate(&q[((r0 + t) * IH + hd) * ID], past + t, !c.indexer_rope_interleave);",
     "the indexer's query RoPE pairing flipped (interleaved <-> half-split)"),
    ("mla-rope-pairing", "src/model/glm_moe_dsa.cc",
     "rope_.rotate(kpe, P + t, c.rope_interleave);",
     "rope_.rotate(kpe, P + t, !c.rope_interleave);",
     "the MLA shared key's RoPE pairing flipped"),
    ("correction-bias-dropped", "src/model/router.cc",
     "choice[e] = score[e] + correction_bias[e];", "choice[e] = score[e];",
     "e_score_correction_bias ignored in expert selection"),
    ("group-limit-off", "src/model/router.cc",
     "if (c.n_group > 1) {", "if (false) {",
     "the DeepSeek group limit (n_group / topk_group) off"),
    ("routed-scaling-ignored", "src/model/router.cc",
     "r.weights.push_back(weight * static_cast<float>(c.routed_scaling_factor));",
     "r.weights.push_back(weight);",
     "routed_scaling_factor ignored"),
    ("renormalisation-off", "src/model/router.cc",
     "if (c.norm_topk_prob) weight", "if (false) weight",
     "the chosen experts' weights not renormalised (norm_topk_prob)"),
    ("shared-expert-dropped", "src/model/glm_moe_dsa.cc",
     "if (w.shared) mlp(", "if (false) mlp(",
     "the shared expert left out"),
    ("absorbed-rope-score-dropped", "src/model/glm_moe_dsa.cc",
     "return (dot(q_abs.data(), &lc.latent[k * Rkv], Rkv) +\n                          dot(qh + Dn, &lc.k_pe[k * Dr], Dr)) *",
     "return (dot(q_abs.data(), &lc.latent[k * Rkv], Rkv) +\n                          0.0f * dot(qh + Dn, &lc.k_pe[k * Dr], Dr)) *",
     "the absorbed (decode) form drops the RoPE part of the score"),
    ("dsa-keeps-everything", "src/model/glm_moe_dsa.cc",
     "std::clamp<int64_t>(c.index_topk - past, 0, T);", "T;",
     "DSA attends to every visible key (no top-k)"),
    ("gptq-v1-zero-offset", "src/tensor/weight.cc",
     "const uint32_t v1_add = gptq_.v2_zeros ? 0u : (bits == 4 ? 0x11111111u : 0x01010101u);",
     "const uint32_t v1_add = 0u;",
     "GPTQ v1 zero points read as v2 (stored zero - 1 taken as the zero)"),
    ("gptq-v1-per-field", "src/tensor/weight.cc",
     "zero[g] = static_cast<float>((packed >> (bits * (n % pack))) & mask);",
     "zero[g] = static_cast<float>(((packed - v1_add) >> (bits * (n % pack)) & mask) + (v1_add ? 1 : 0));",
     "GPTQ v1 zeros read field by field (+1 each, no carry), as vLLM does"),
    ("gptq-sym-reads-qzeros", "src/tensor/weight.cc",
     "if (gptq_.sym) {", "if (false) {",
     "symmetric GPTQ reads qzeros instead of fixing the zero at 2^(bits-1)"),
    ("fp8-scale-ignored", "src/tensor/weight.cc",
     "row[c] *= scale_at(scales_, scale_dtype_, block_row * bc + c / kFp8Block);",
     "row[c] *= 1.0f;",
     "block-FP8 weight_scale_inv ignored"),
    ("reap-gate-unweighted", "src/prune/reap_observer.cc",
     "s.sum_gate_norm += gate * norm;", "s.sum_gate_norm += norm;",
     "REAP's numerator without the gate (REAP becomes EAN)"),
    ("reap-norm-squared", "src/prune/reap_observer.cc",
     "const double norm = std::sqrt(sq);", "const double norm = sq;",
     "the expert output's squared norm taken for its L2 norm"),
    ("sequential-not-pruned", "src/prune/reap_observer.cc",
     "model.forward_layer(L, pruned, b);", "model.forward_layer(L, w, b);",
     "--sequential feeds the next layer from the unpruned layer"),
    ("kept-view-bias-unsliced", "src/prune/reap_observer.cc",
     "out.correction_bias.push_back(w.correction_bias[static_cast<size_t>(e)]);",
     "out.correction_bias.push_back(w.correction_bias[i]);",
     "the kept-experts view keeps the first K correction biases instead of the survivors'"),
    ("rtn-round-half-away", "src/quant/int_quant.cc",
     "const float r = std::nearbyint(w / scale + v);", "const float r = std::round(w / scale + v);",
     "quantization rounds half away from zero instead of half to even (torch.round)"),
    ("scale-ties-positive", "src/quant/int_quant.cc",
     "(a > b ? a : -b) / levels", "(a >= b ? a : -b) / levels",
     "a group whose clipped extremes tie gets a positive scale (auto-round: negative)"),
    ("gptq-v2-zeros", "src/quant/gptq_pack.cc",
     "zeros |= static_cast<uint32_t>(offset - 1)", "zeros |= static_cast<uint32_t>(offset)",
     "qzeros written as GPTQ v2 (the zero) while the config says v1 (zero - 1)"),
    ("ste-clamp-ends-pass", "src/quant/fake_quant.cc",
     "in_range_[i] = r > spec_.qmin() && r < spec_.qmax();",
     "in_range_[i] = r >= spec_.qmin() && r <= spec_.qmax();",
     "the rounding gradient passes at the grid's ends (torch.clamp's does not)"),
    ("autoround-no-lr-decay", "src/quant/autoround.h",
     "lr * (1.0 - static_cast<double>(it) / static_cast<double>(iters))", "lr",
     "AutoRound's learning rate does not decay linearly to 0"),
]

TEST_FILTER = "-BundledModel.*"


def run(cmd, cwd, log):
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode


def failed_tests(output):
    return sorted(set(re.findall(r"^\[  FAILED  \] (\S+?)(?:,| \(|$)", output, re.M)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="",
                    help="run the mutations whose name contains this (a comma list: any of them)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    repo = pathlib.Path(__file__).resolve().parent.parent
    chosen = [m for m in MUTATIONS if any(part in m[0] for part in args.only.split(","))]
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="whittle-mutations-"))
    log = scratch / "log.txt"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    tree = scratch / "tree"
    for f in filter(None, files):
        if (repo / f).is_file():
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, tree / f)
    build = tree / "build"
    print(f"scratch tree {tree}; log {log}", flush=True)
    if run(["cmake", "-S", ".", "-B", "build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"],
           tree, log) or run(["cmake", "--build", "build", "-j2"], tree, log):
        sys.exit(f"the unmutated tree does not build; see {log}")
    base = subprocess.run([str(build / "whittle_tests"), f"--gtest_filter={TEST_FILTER}"],
                          cwd=build, capture_output=True, text=True)
    if base.returncode != 0:
        sys.exit(f"the unmutated tree fails: {failed_tests(base.stdout)}")
    holes = 0
    print("| mutation | what it breaks | tests that fail |\n|---|---|---|", flush=True)
    for name, path, old, new, what in chosen:
        target = tree / path
        text = target.read_text()
        if text.count(old) != 1:
            sys.exit(f"{name}: the text to mutate occurs {text.count(old)} times in {path}")
        target.write_text(text.replace(old, new))
        start = time.time()
        try:
            if run(["cmake", "--build", "build", "-j2"], tree, log):
                result = "(does not compile)"
            else:
                r = subprocess.run([str(build / "whittle_tests"), f"--gtest_filter={TEST_FILTER}"],
                                   cwd=build, capture_output=True, text=True)
                failed = failed_tests(r.stdout)
                if r.returncode == 0:
                    holes += 1
                    result = "**none: a hole in the tests**"
                else:
                    shown = ", ".join(f"`{t}`" for t in failed[:4])
                    result = f"{len(failed)}: {shown}{', ...' if len(failed) > 4 else ''}"
        finally:
            target.write_text(text)
        print(f"| `{name}` | {what} | {result} |", flush=True)
        with open(log, "a") as f:
            f.write(f"{name}: {time.time() - start:.0f} s\n")
    if not args.keep:
        shutil.rmtree(scratch)
    sys.exit(1 if holes else 0)


if __name__ == "__main__":
    main()
