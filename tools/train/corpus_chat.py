"""Conversations for the chat domain, built from the other domains' material and rendered with the
GLM-5 chat template (tests/golden/tokenizer/chat_template.jinja) exactly as transformers'
apply_chat_template renders it, thinking off (enable_thinking=False).

A rendered conversation ends with the assistant's last reply followed by `<|user|>` (how GLM-5 ends
an assistant turn: `<|user|>` is one of its eos ids); the corpus file then separates documents with
a `<|endoftext|>` line.
"""

import ast
import re
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO / "tests" / "golden" / "tokenizer" / "chat_template.jinja"

SYSTEM_PROMPTS = [
    "You are a helpful assistant.", "You are a concise assistant. Answer briefly.",
    "You are a patient math tutor.", "You are an expert on Unix and C programming.",
    "You are a helpful assistant that knows Python well.", "You are a friendly dictionary.",
]

GREETINGS = [
    ("Hello!", ["Hello! How can I help you today?", "Hi there! What can I do for you?"]),
    ("Hi", ["Hi! How can I help?", "Hello! What would you like to know?"]),
    ("Good morning!", ["Good morning! How can I help you today?"]),
    ("Hey, how are you?", ["I'm doing well, thank you! How can I help you?"]),
    ("Who are you?", ["I am a small language model trained by whittle. I can answer simple questions about words, commands, code and arithmetic."]),
    ("What can you do?", ["I can explain what words mean, describe Unix commands and C functions, show Python and C code, and solve small arithmetic word problems step by step."]),
    ("Thank you!", ["You're welcome!", "Glad I could help!"]),
    ("Thanks, that helps.", ["You're welcome! Let me know if you have another question."]),
    ("Goodbye!", ["Goodbye! Have a nice day."]),
    ("Can you help me?", ["Of course. What do you need help with?"]),
]


def load_template():
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def render(messages, template, rng):
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        enable_thinking=False)
    text = rendered[0]
    return text + "<|user|>"


def first_sentence(text, limit=400):
    t = " ".join(text.split())
    m = re.search(r"(.+?[.!?])(\s|$)", t)
    s = m.group(1) if m else t
    return s if len(s) <= limit else s[:limit].rsplit(" ", 1)[0] + " ..."


# --- turn makers: each returns (user, assistant) or None

def word_turn(entry, rng):
    """entry: dict(word, pos, definition, examples)"""
    w = entry["word"]
    q = rng.choice([f"What does the word {w} mean?", f"What does \"{w}\" mean?", f"Define {w}.",
                    f"What is the meaning of {w}?", f"Can you tell me what {w} means?",
                    f"Give me the definition of the {entry['pos']} {w}.", f"{w}: what does it mean?"])
    d = entry["definition"]
    art = "an" if entry["pos"][0] in "aeiou" else "a"
    a = rng.choice([f"{w} ({entry['pos']}): {d}.", f"As {art} {entry['pos']}, \"{w}\" means: {d}.",
                    f"The word {w} is {art} {entry['pos']} meaning {d}."])
    if entry.get("examples") and rng.random() < 0.5:
        a += f" For example: \"{entry['examples'][0]}\"."
    return q, a


def man_turn(meta, desc_first, rng):
    title, sec, name_line = meta["title"], meta["section"], meta["name_line"]
    summary = name_line.split(" - ", 1)[1] if " - " in name_line else name_line
    if sec == "1" or sec == "8":
        q = rng.choice([f"What does the `{title}` command do?", f"What is {title} used for?",
                        f"Explain the {title} command.", f"What does {title} do on Linux?"])
        a = f"`{title}`: {summary}. {desc_first}"
    elif sec in ("2", "3"):
        q = rng.choice([f"What does the C function {title}() do?", f"Explain {title}() from the C library.",
                        f"What is {title}() for?"])
        a = f"{title}(): {summary}. {desc_first}"
    else:
        q = rng.choice([f"What is {title}({sec}) about?", f"What does the manual page {title}({sec}) describe?"])
        a = f"{title}({sec}): {summary}. {desc_first}"
    return q, a


def arith_turn(problem, rng):
    q = problem["question"]
    if rng.random() < 0.2:
        q = rng.choice(["Solve this: ", "Please solve: ", "Math question: "]) + q
    return q, problem["answer"]


def python_functions(source, max_chars=1200):
    """(name, source) of top-level functions in a Python file, small ones only."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.split("\n")
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.end_lineno:
            start = node.lineno - 1 - len(node.decorator_list)
            text = "\n".join(lines[start:node.end_lineno])
            if 80 <= len(text) <= max_chars:
                out.append((node.name, text))
    return out


_C_DECL = re.compile(r"^extern\s+[^;()]*?\b(\w+)\s*\(([^;]*)\)[^;]*;$", re.M)


def c_declarations(header_text):
    out = []
    for m in _C_DECL.finditer(header_text):
        decl = m.group(0)
        if len(decl) <= 300 and "\n" not in decl:
            out.append((m.group(1), decl))
    return out


def py_turn(module, name, code, rng):
    q = rng.choice([f"Show the Python function {name} from the {module} module.",
                    f"How is {module}.{name} implemented?", f"Show me the source of {module}.{name}()."])
    a = rng.choice([f"Here is `{name}` from `{module}`:\n\n```python\n{code}\n```",
                    f"```python\n{code}\n```"])
    return q, a


def c_turn(header, name, decl, rng):
    q = rng.choice([f"Write a C declaration of {name}.", f"How is {name} declared in <{header}>?",
                    f"What is the prototype of {name}?"])
    a = rng.choice([f"In <{header}>:\n\n```c\n{decl}\n```", f"```c\n{decl}\n```"])
    return q, a


def greeting_turn(rng):
    u, replies = rng.choice(GREETINGS)
    return u, rng.choice(replies)


def conversation(turn_pool, rng, template):
    """turn_pool: list of callables rng -> (user, assistant). 1-3 turns, optional system prompt."""
    msgs = []
    if rng.random() < 0.3:
        msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    if rng.random() < 0.15:
        u, a = greeting_turn(rng)
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        u, a = rng.choice(turn_pool)(rng)
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    if rng.random() < 0.1:
        u, a = rng.choice(GREETINGS[6:9])[0], "You're welcome!"
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return render(msgs, template, rng)
