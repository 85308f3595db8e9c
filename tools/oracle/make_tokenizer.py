#!/usr/bin/env python3
"""Builds whittle's small test tokenizer in GLM-5's exact tokenizer.json form.

GLM-5 (spec section 5): byte-level BPE, no normalizer, pre-tokenizer = Sequence[Split(Qwen2-style
regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)], ByteLevel decoder, no
post-processor, then 36 added tokens placed right after the regular BPE ids. Only the number of BPE
ids differs (GLM-5: 154,820; here: VOCAB_TOTAL - 36) so that the tiny test models (vocab_size 2048)
can use it.

The training text is read from files every Debian machine with Python 3.11 has (the standard
library's own sources, sorted, a fixed byte budget) plus a small fixed multilingual sample, so a
rerun produces a byte-identical tokenizer.json.

Run from the repository root:
    .venv/bin/python tools/oracle/make_tokenizer.py
Writes tests/golden/tokenizer/{tokenizer.json, tokenizer_config.json, ORACLE.json}; reads the
chat template from tests/golden/tokenizer/chat_template.jinja.
"""

import json
import os
import platform
import sys
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "golden" / "tokenizer"
# Hand-written (see its header comment); read here and embedded into tokenizer_config.json.
TEMPLATE = OUT / "chat_template.jinja"

VOCAB_TOTAL = 2000  # BPE ids + 36 added tokens; must stay <= 2048 (tiny models' vocab_size)
CORPUS_DIR = Path("/usr/lib/python3.11")
CORPUS_BYTES = 3_000_000

# spec section 5, verbatim.
GLM5_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GLM-5's 36 added tokens, in id order (154820..154855 there). `special` follows the GLM-4.5/4.7
# tokenizer family: the role/mask/media markers are special (skipped by decode(skip_special)),
# while the reasoning and tool-call markers and /nothink are plain added tokens so that reasoning
# and tool-call parsers still see them in decoded text.
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("[MASK]", True), ("[gMASK]", True), ("[sMASK]", True),
    ("<sop>", True), ("<eop>", True),
    ("<|system|>", True), ("<|user|>", True), ("<|assistant|>", True), ("<|observation|>", True),
    ("<|begin_of_image|>", True), ("<|end_of_image|>", True),
    ("<|begin_of_video|>", True), ("<|end_of_video|>", True),
    ("<|begin_of_audio|>", True), ("<|end_of_audio|>", True),
    ("<|begin_of_transcription|>", True), ("<|end_of_transcription|>", True),
    ("<|code_prefix|>", True), ("<|code_middle|>", True), ("<|code_suffix|>", True),
    ("<think>", False), ("</think>", False),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<tool_response>", False), ("</tool_response>", False),
    ("<arg_key>", False), ("</arg_key>", False), ("<arg_value>", False), ("</arg_value>", False),
    ("/nothink", False),
    ("<|begin_of_box|>", True), ("<|end_of_box|>", True), ("<|image|>", True), ("<|video|>", True),
]
assert len(ADDED_TOKENS) == 36

# A little of every script the goldens use, so that the BPE also learns multi-byte merges.
MULTILINGUAL_SAMPLE = """
The quick brown fox jumps over the lazy dog. Don't stop; they're here, I'm sure we'll go.
我们今天去公园散步，天气很好。中文分词是自然语言处理的基础任务。人工智能正在改变世界。
日本語の文章を書きます。東京は日本の首都です。ひらがなとカタカナと漢字。
한국어 문장입니다. 서울은 대한민국의 수도입니다. 안녕하세요 여러분.
Русский текст для обучения. Привет, мир! Москва — столица России.
Ελληνικά κείμενα. Καλημέρα κόσμε. Ἀθῆναι.
العربية لغة جميلة. مرحبا بالعالم. עברית היא שפה עתיקה. שלום עולם.
हिन्दी भाषा भारत में बोली जाती है। नमस्ते दुनिया। ภาษาไทยเป็นภาษาที่สวยงาม สวัสดีครับ
Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨ 🚀 café naïve résumé Zürich São Paulo façade
"""


def training_text():
    files = sorted(p for p in CORPUS_DIR.glob("*.py") if p.is_file())
    chunks, used, read = [], 0, []
    for path in files:
        read.append(str(path))
        data = path.read_text(encoding="utf-8", errors="replace")
        if used + len(data) > CORPUS_BYTES:
            data = data[: CORPUS_BYTES - used]
        chunks.append(data)
        used += len(data)
        if used >= CORPUS_BYTES:
            break
    chunks.extend([MULTILINGUAL_SAMPLE] * 200)
    return chunks, read


def build():
    chunks, _ = training_text()
    return train_glm5_tokenizer(chunks, VOCAB_TOTAL)


def train_glm5_tokenizer(chunks, vocab_total, min_frequency=2):
    """A byte-level BPE in GLM-5's tokenizer.json form trained on `chunks` (an iterable of str):
    vocab_total - 36 BPE ids, then GLM-5's 36 added tokens. Shared with tools/train/train_tokenizer.py.
    Returns (tokenizer, bpe_size)."""
    chunks = list(chunks)
    bpe_size = vocab_total - len(ADDED_TOKENS)
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM5_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        min_frequency=min_frequency,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
    assert tok.get_vocab_size(with_added_tokens=False) == bpe_size, tok.get_vocab_size()
    for content, special in ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False,
                           single_word=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(content) == bpe_size + i, (content, tok.token_to_id(content))
    return tok, bpe_size


def tokenizer_config(template_text, bpe_size):
    added = {}
    for i, (content, special) in enumerate(ADDED_TOKENS):
        added[str(bpe_size + i)] = {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
    return {
        "added_tokens_decoder": added,
        "backend": "tokenizers",
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "<|endoftext|>",
        "extra_special_tokens": [content for content, _ in ADDED_TOKENS],
        "model_max_length": 202752,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "remove_space": False,
        "tokenizer_class": "TokenizersBackend",
        "chat_template": template_text,
    }


def tokenizer_json_text(tok):
    """tokenizers writes a pretty JSON; re-dump it with formatting of our own so the bytes depend
    only on content."""
    doc = json.loads(tok.to_str())
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def tokenizer_config_text(template_text, bpe_size):
    return json.dumps(tokenizer_config(template_text, bpe_size), ensure_ascii=False, indent=2) + "\n"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok, bpe_size = build()
    (OUT / "tokenizer.json").write_text(tokenizer_json_text(tok), encoding="utf-8")
    template_text = TEMPLATE.read_text(encoding="utf-8")
    (OUT / "tokenizer_config.json").write_text(tokenizer_config_text(template_text, bpe_size),
                                               encoding="utf-8")
    _, files = training_text()
    oracle = {
        "made_by": "tools/oracle/make_tokenizer.py",
        "command": ".venv/bin/python tools/oracle/make_tokenizer.py",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "bpe_vocab_size": bpe_size,
        "added_tokens": len(ADDED_TOKENS),
        "total_vocab_size": bpe_size + len(ADDED_TOKENS),
        "training_text": f"sorted {CORPUS_DIR}/*.py, first {CORPUS_BYTES} characters "
                         f"({len(files)} files, {files[0]} .. {files[-1]}) + fixed multilingual sample x200",
        "chat_template": "tests/golden/tokenizer/chat_template.jinja (see its header comment)",
    }
    oracle_path = OUT / "ORACLE.json"
    existing = json.loads(oracle_path.read_text()) if oracle_path.exists() else {}
    existing["tokenizer"] = oracle
    oracle_path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}: {bpe_size} BPE ids + {len(ADDED_TOKENS)} added tokens")


if __name__ == "__main__":
    sys.exit(main())
