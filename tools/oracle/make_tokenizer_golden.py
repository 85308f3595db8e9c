#!/usr/bin/env python3
"""Golden token ids for whittle's tokenizer tests, from Hugging Face `tokenizers`.

For >= 1000 deterministic strings (prose, CJK, emoji with ZWJ and skin tones, combining marks, RTL
scripts, whitespace runs, code, digits, contractions, special-token text, random code points, every
Unicode White_Space code point and U+180E) it
records what `Tokenizer.encode(text, add_special_tokens=False)` gives (the call GLM-5's stack makes:
no post-processor, `[gMASK]<sop>` come from the chat template as text), the ids with special-token
parsing off (`encode_special_tokens = True`), the ids under `ignore_merges: false` where they
differ, and `decode` of the ids with and without skip_special_tokens. A second section decodes
random id sequences (including ones that cut UTF-8 characters) to pin the lossy decode.

Run from the repository root (after make_tokenizer.py):
    .venv/bin/python tools/oracle/make_tokenizer_golden.py
Writes tests/golden/tokenizer/encode_golden.jsonl (first line: the oracle header).
"""

import json
import platform
import random
import sys
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]
DIR = REPO / "tests" / "golden" / "tokenizer"
SEED = 20260521

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Call me Ishmael. Some years ago - never mind how long precisely - having little money...",
    "In the beginning the Universe was created. This has made a lot of people very angry.",
    "Whittle prunes experts with REAP and quantizes weights to int4 (W4A16, group 128).",
    "Hello, world! How are you doing today? I'm fine; thanks for asking.",
    "E-mail me at someone@example.com or visit https://example.org/path?q=1&r=two#frag.",
    "Mr. O'Neil's dog—a 3-year-old beagle—ate 2.5 kg of food (approx.) in 1 week!",
    "\"Quoted\" text, 'single quotes', `backticks`, and «guillemets» „Anführungszeichen“.",
    "A sentence with trailing spaces   ",
    "   Leading spaces and a tab\tin the middle.",
]
CJK = [
    "我们今天去公园散步，天气很好。", "中文分词是自然语言处理的基础任务。", "人工智能", "你好，世界！",
    "日本語の文章を書きます。", "東京は日本の首都です。", "ひらがなとカタカナ", "ｶﾀｶﾅ（半角）",
    "한국어 문장입니다.", "안녕하세요 여러분", "서울은 대한민국의 수도입니다.",
    "混合 mixed 文本 text 123 テスト", "「引用」『二重』【括弧】〈山括弧〉",
]
EMOJI = [
    "😀", "😀😃😄", "👍🏽", "👍🏻👍🏼👍🏽👍🏾👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇫🇷🇯🇵🇺🇸",
    "❤️", "✨🚀 launch!", "I ❤️ NY", "🧑‍🤝‍🧑 together", "1️⃣2️⃣3️⃣", "emoji at end 🎉",
    "🎉 emoji at start", "text😀text", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland",
]
COMBINING = [
    "e\u0301", "cafe\u0301", "caf\u00e9", "n\u0303o", "a\u0300\u0301\u0302\u0303", "Z\u0351\u0352\u0353",
    "नमस्ते दुनिया", "हिन्दी भाषा", "क्षत्रिय", "مرحبا بالعالم", "العربية لغة جميلة",
    "שלום עולם", "עִבְרִית", "สวัสดีครับ", "ภาษาไทย", "Ελληνικά", "Привет, мир!", "Ἀθῆναι",
    "\u200bzero\u200bwidth\u200b", "a\u200db", "\ufeffBOM", "soft\u00adhyphen", "x\u0308\u0308",
    "각 (conjoining jamo)", "\u0915\u094d\u200d\u0937",
]
WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n ",
    "a  b", "a   b", "a\tb", "a\nb", "a\n\nb", "a \n b", "line1\r\nline2\r\n", "trailing   ",
    "trailing\n", "   leading", "\u00a0", "a\u00a0b", "non\u00a0breaking\u00a0space", "\u3000",
    "全角\u3000空白", "\u2003em\u2002en\u2009thin", "mixed \t\n\r\n  whitespace \n\n\t ",
    "\x0b\x0c", "a\x0bb\x0cc", "\u2028line\u2029para", "\u0085next", " !", "  !!", "\n!", "!\n\n",
]
CODE = [
    "int main(int argc, char** argv) {\n  return 0;\n}\n",
    "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n",
    "class Foo:\n    def __init__(self):\n        self.items = [1, 2, 3]\n\n\n",
    "for (size_t i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "x = {'a': 1, \"b\": [2, 3.5e-7], 'c': None}",
    "    indented = True\n        more_indented = False\n",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"x\"><p>Hello &amp; welcome</p></div>",
    "$ cmake -S . -B build -G Ninja && cmake --build build -j2",
    "a->b; c::d; e...f; g?.h ?? i; j <<= 2; k >>>= 3; l != m; n === o;",
    "// comment\n/* block\n   comment */\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "{\"json\": true, \"nested\": {\"list\": [1, 2, {\"k\": \"v\"}]}}",
]
DIGITS = [
    "0", "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
    "3.14159265358979", "0.000001", "-42", "+7", "1,234,567.89", "1e10", "2^64 = 18446744073709551616",
    "Version 2.0.1-rc3", "IPv4 192.168.0.1", "Phone: +1 (555) 123-4567", "٣٤٥ Arabic-Indic digits",
    "१२३ Devanagari digits", "①②③ circled", "Ⅻ roman", "½ ¾ fractions", "１２３ fullwidth",
    "year2024and2025", "abc123def456", "99bottles",
]
CONTRACTIONS = [
    "don't", "DON'T", "I'M", "I'm", "i'm", "they'Ve", "They've", "we'LL", "she'd", "He'S", "it's",
    "won't can't shouldn't", "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "rock'n'roll",
    "O'Reilly", "the '90s", "quote 'inside' quotes", "can’t (curly)", "''", "'", "x'", "'x",
]
SPECIAL = [
    "hello<|user|>world", "[gMASK]<sop>", "[gMASK]<sop><|system|>You are helpful.<|user|>Hi<|assistant|>",
    "<|us", "<|user", "<|user|", "|user|>", "<<|user|>>", "<|user|><|user|>", "<think>reasoning</think>answer",
    "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>",
    "<|observation|><tool_response>{\"t\": 20}</tool_response>", "/nothink", "please /nothink now",
    "a<|endoftext|>b", " <|endoftext|> ", "\n<|assistant|>\n", "[MASK][sMASK][gMASK]", "<eop><sop>",
    "<|begin_of_image|><|image|><|end_of_image|>", "<|begin_of_video|><|video|><|end_of_video|>",
    "<|begin_of_box|>boxed<|end_of_box|>", "<|code_prefix|>def<|code_suffix|>x<|code_middle|>",
    "<|begin_of_audio|><|end_of_audio|><|begin_of_transcription|><|end_of_transcription|>",
    "<think></think>", "</think>", "<think>", "text</think>more", "<think >not a token</think >",
    "<|USER|> is not special", "[gmask] lower", "<|endoftext|><|endoftext|><|endoftext|>",
]
EDGE = ["", "a", "A", ".", "..", "...", "'", "\"", "\\", "\x00", "\x01\x02\x03", "\x7f", "\u00ff",
        "\U0010ffff", "\U0001f600" * 10, "a" * 300, "ab" * 200, " " * 100, "\n" * 50, "😀" * 40]

# Every Unicode White_Space code point and a few look-alikes that are not White_Space, beside spaces
# and letters. PCRE2's \s also matches U+180E MONGOLIAN VOWEL SEPARATOR (a format character since
# Unicode 6.3); `tokenizers`' Oniguruma does not, and whittle rewrites \s to \p{White_Space}.
# Kept out of the pools `generated` draws from, so adding them left every other record as it was.
WHITE_SPACE = ["\t", "\n", "\x0b", "\x0c", "\r", " ", "\x85", "\xa0", "\u1680"] + \
    [chr(c) for c in range(0x2000, 0x200B)] + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
NOT_WHITE_SPACE = ["\u180e", "\u200b", "\u2060", "\ufeff", "\x1c", "\x1d", "\x1e", "\x1f", "\u00ad"]
UNICODE_SPACE = [
    "  \u180e", "\u180e", "a\u180eb", " \u180e ", "\u180e\u180e  ", "x \u180e\n", "\t\u180e\t", "a \u180e b",
    "\u180e!", "  \u180e\u180e", "word\u180e\nnext", "\u1820\u180e\u1821 Mongolian", "12\u180e34",
] + [s for c in WHITE_SPACE + NOT_WHITE_SPACE for s in ("  " + c, " " + c + "x")]

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or "
         "one had by word but not what all were we when your can said there use an each which she do "
         "how their if will up other about out many then them these so some her would make like him "
         "into time has look two more write go see number no way could people my than first water "
         "been call who oil its now find long down day did get come made may part").split()


def random_codepoint(rng):
    while True:
        block = rng.random()
        if block < 0.25:
            cp = rng.randint(0x20, 0x7E)
        elif block < 0.4:
            cp = rng.randint(0x00, 0x2FF)
        elif block < 0.6:
            cp = rng.randint(0x300, 0x2FFF)
        elif block < 0.75:
            cp = rng.randint(0x3000, 0x9FFF)
        elif block < 0.85:
            cp = rng.randint(0xA000, 0xFFFF)
        else:
            cp = rng.randint(0x10000, 0x10FFFF)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def generated(rng):
    out = []
    for _ in range(300):
        out.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 24))))
    for _ in range(200):
        n = rng.randint(1, 20)
        parts = []
        for _ in range(n):
            w = rng.choice(WORDS)
            r = rng.random()
            if r < 0.1:
                w = w.upper()
            elif r < 0.2:
                w = w.capitalize()
            parts.append(w)
            parts.append(rng.choice([" ", " ", " ", "  ", ", ", ". ", "\n", "\t", "'s ", "'T ", " - "]))
        out.append("".join(parts))
    pools = [PROSE, CJK, EMOJI, COMBINING, WHITESPACE, CODE, DIGITS, CONTRACTIONS, SPECIAL]
    for _ in range(250):
        k = rng.randint(2, 5)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(k)))
    for _ in range(60):
        out.append(str(rng.randint(0, 10 ** rng.randint(1, 30))) + rng.choice(["", ".", ".5", " ", "x"]))
    return out


def strings():
    rng = random.Random(SEED)
    fixed = PROSE + CJK + EMOJI + COMBINING + WHITESPACE + CODE + DIGITS + CONTRACTIONS + SPECIAL + EDGE
    return fixed + generated(rng) + UNICODE_SPACE


def record_oracle(key, info):
    """Adds this golden's provenance to tests/golden/tokenizer/ORACLE.json (one entry per file)."""
    path = DIR / "ORACLE.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[key] = info
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main():
    tok_path = DIR / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_path))
    tok_raw = Tokenizer.from_file(str(tok_path))
    tok_raw.encode_special_tokens = True
    doc = json.loads(tok_path.read_text(encoding="utf-8"))
    doc["model"]["ignore_merges"] = False
    tok_merges = Tokenizer.from_str(json.dumps(doc))

    texts = strings()
    header = {
        "oracle": "tools/oracle/make_tokenizer_golden.py",
        "command": ".venv/bin/python tools/oracle/make_tokenizer_golden.py",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "tokenizer": "tests/golden/tokenizer/tokenizer.json",
        "call": "Tokenizer.encode(text, add_special_tokens=False); decode(ids, skip_special_tokens=...)",
        "fields": {
            "ids": "encode with added-token parsing (the default)",
            "ids_no_special": "present when different: encode_special_tokens=True (special tokens as text)",
            "ids_merges": "present when different: the same tokenizer with model.ignore_merges=false",
            "decoded": "decode(ids, skip_special_tokens=False)",
            "decoded_skip": "decode(ids, skip_special_tokens=True)",
            "decode_ids": "random id sequences, decoded (lossy UTF-8)",
        },
        "strings": len(texts),
        "seed": SEED,
    }
    lines = [json.dumps(header, ensure_ascii=False)]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        rec = {"text": text, "ids": ids}
        raw = tok_raw.encode(text, add_special_tokens=False).ids
        if raw != ids:
            rec["ids_no_special"] = raw
        merged = tok_merges.encode(text, add_special_tokens=False).ids
        if merged != ids:
            rec["ids_merges"] = merged
        rec["decoded"] = tok.decode(ids, skip_special_tokens=False)
        rec["decoded_skip"] = tok.decode(ids, skip_special_tokens=True)
        lines.append(json.dumps(rec, ensure_ascii=False))
    rng = random.Random(SEED + 1)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    for _ in range(80):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(0, 12))]
        rec = {"decode_ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
               "decoded_skip": tok.decode(ids, skip_special_tokens=True)}
        lines.append(json.dumps(rec, ensure_ascii=False))
    out = DIR / "encode_golden.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_raw = sum('"ids_no_special"' in l for l in lines)
    n_merges = sum('"ids_merges"' in l for l in lines)
    record_oracle("encode_golden", header)
    print(f"wrote {out}: {len(texts)} strings ({n_raw} differ without special parsing, "
          f"{n_merges} differ with ignore_merges=false), {out.stat().st_size} bytes")


if __name__ == "__main__":
    sys.exit(main())
