#!/usr/bin/env python3
"""Run llama.cpp's own convert_hf_to_gguf.py on a whittle synthetic checkpoint.

The synthetic checkpoints carry the bundled model's tokenizer, whose hash llama.cpp's converter does
not know ("BPE pre-tokenizer was not recognized"). For a speed comparison the tokenizer does not
matter, so this wrapper tells the converter it is GLM-4/5's ("glm4") and runs the converter
unchanged otherwise. Usage (from bench/llamacpp_vs_whittle.sh):

    python bench/llamacpp_convert.py LLAMA_CPP_DIR MODEL --outtype q8_0 --outfile OUT.gguf
"""
import runpy
import sys
from pathlib import Path

llama = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(llama / "gguf-py"))
sys.path.insert(0, str(llama))
import conversion.base as base  # noqa: E402  (llama.cpp's converter package)

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "glm4"
sys.argv = [str(llama / "convert_hf_to_gguf.py")] + sys.argv[2:]
runpy.run_path(str(llama / "convert_hf_to_gguf.py"), run_name="__main__")
