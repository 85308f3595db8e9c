#!/usr/bin/env python3
"""Golden chat-template renderings for whittle's native GLM-5 chat template, from transformers.

Each case runs `AutoTokenizer.from_pretrained("tests/golden/tokenizer").apply_chat_template(
messages, tools=..., tokenize=False, add_generation_prompt=..., **kwargs)` with the GLM-5.1
template (tokenizer_config.json / chat_template.jinja) and, for a subset, with the verbatim GLM-4.7
template (chat_template_glm47.jinja, passed as chat_template=...), and records the rendered text and
its token ids (`encode(text, add_special_tokens=False)`).

Run from the repository root (after make_tokenizer.py):
    .venv/bin/python tools/oracle/make_chat_golden.py
Writes tests/golden/tokenizer/chat_golden.json.
"""

import json
import platform
import sys
from pathlib import Path

import jinja2
import tokenizers
import transformers
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
DIR = REPO / "tests" / "golden" / "tokenizer"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
        "strict": True,
    },
}
SEARCH_TOOL = {
    "name": "search",
    "description": "Search the web.\nReturns \"snippets\".",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                    "max_results": {"type": "integer", "default": 5}}},
}
DEFERRED_TOOL = {"type": "function", "function": {"name": "lazy_tool", "description": "Loaded later.",
                                                  "parameters": {}, "defer_loading": True}}

SIMPLE = [{"role": "user", "content": "Hello!"}]
WITH_SYSTEM = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 2+2?"},
]
MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?", "reasoning_content": "Greet back."},
    {"role": "user", "content": "Tell me a joke."},
    {"role": "assistant", "content": "  Why did the chicken cross the road?  ",
     "reasoning_content": "\nA classic joke.\n"},
    {"role": "user", "content": "Another one"},
]
TOOL_LOOP = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {"role": "assistant", "content": "", "reasoning_content": "Need two calls.",
     "tool_calls": [
         {"id": "c1", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
         {"id": "c2", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "東京", "days": 3, "detail": True,
                                                             "opts": {"a": [1, 2.5, None]}}}},
     ]},
    {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
    {"role": "tool", "tool_call_id": "c2", "content": "cloudy, 18°C"},
    {"role": "assistant", "content": "Paris: 21°C, clear. Tokyo: 18°C, cloudy."},
]
TOOL_LOOP_OPEN = TOOL_LOOP[:-1]
FOLLOW_UP = TOOL_LOOP + [{"role": "user", "content": "Thanks! And Berlin?"}]
THINK_IN_CONTENT = [
    {"role": "user", "content": "Solve x+1=3"},
    {"role": "assistant", "content": "<think>\nSubtract 1.\n</think>\n\nx = 2"},
    {"role": "user", "content": "And x+2=3?"},
    {"role": "assistant", "content": "<think>Subtract 2.</think>x = 1"},
]
PARTS = [
    {"role": "system", "content": [{"type": "text", "text": "System "}, {"type": "text", "text": "parts."}]},
    {"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image", "url": "x.png"},
                                 "plain string part"]},
]
TOOL_LIST_CONTENT = [
    {"role": "user", "content": "Run both."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"function": {"name": "search", "arguments": {"query": "whittle"}}}]},
    {"role": "tool", "content": [{"output": "result one"}, "result two"]},
]
UNICODE = [
    {"role": "system", "content": "Réponds en français. 日本語も OK 👍🏽"},
    {"role": "user", "content": "Ça va ? <|user|> is text here\n\n  with spaces  "},
    {"role": "assistant", "content": "Oui ! 😀", "reasoning_content": "   "},
    {"role": "user", "content": "e\u0301 \u00a0 \u3000 tab\there"},
]
EMPTY_REASONING = [
    {"role": "user", "content": "Q"},
    {"role": "assistant", "content": "A", "reasoning_content": ""},
]
ASSISTANT_LAST_NO_REASONING = [
    {"role": "user", "content": "Continue the story."},
    {"role": "assistant", "content": "Once upon a time"},
]

CASES = [
    ("simple_gen", SIMPLE, None, True, {}),
    ("simple_no_gen", SIMPLE, None, False, {}),
    ("simple_no_thinking", SIMPLE, None, True, {"enable_thinking": False}),
    ("system_thinking_on", WITH_SYSTEM, None, True, {"enable_thinking": True}),
    ("multi_turn_default", MULTI_TURN, None, True, {}),
    ("multi_turn_preserved", MULTI_TURN, None, True, {"clear_thinking": False}),
    ("multi_turn_clear_true", MULTI_TURN, None, True, {"clear_thinking": True}),
    ("tools_simple", SIMPLE, [WEATHER_TOOL, SEARCH_TOOL], True, {}),
    ("tools_deferred", SIMPLE, [WEATHER_TOOL, DEFERRED_TOOL, SEARCH_TOOL], True, {}),
    ("tool_loop_closed", TOOL_LOOP, [WEATHER_TOOL], False, {}),
    ("tool_loop_open", TOOL_LOOP_OPEN, [WEATHER_TOOL], True, {}),
    ("tool_loop_open_no_thinking", TOOL_LOOP_OPEN, [WEATHER_TOOL], True, {"enable_thinking": False}),
    ("follow_up_default", FOLLOW_UP, [WEATHER_TOOL], True, {}),
    ("follow_up_preserved", FOLLOW_UP, [WEATHER_TOOL], True, {"clear_thinking": False}),
    ("think_in_content", THINK_IN_CONTENT, None, False, {}),
    ("think_in_content_preserved", THINK_IN_CONTENT, None, True, {"clear_thinking": False}),
    ("content_parts", PARTS, None, True, {}),
    ("tool_list_content", TOOL_LIST_CONTENT, [SEARCH_TOOL], True, {}),
    ("unicode", UNICODE, None, True, {"clear_thinking": False}),
    ("empty_reasoning", EMPTY_REASONING, None, False, {}),
    ("assistant_last_no_reasoning", ASSISTANT_LAST_NO_REASONING, None, False, {}),
    ("assistant_last_no_reasoning_no_thinking", ASSISTANT_LAST_NO_REASONING, None, False,
     {"enable_thinking": False}),
    ("empty_tools_list", SIMPLE, [], True, {}),
]
GLM47_CASES = ["simple_gen", "multi_turn_default", "multi_turn_preserved", "tools_simple",
               "tool_loop_open", "follow_up_default", "think_in_content", "tool_list_content",
               "assistant_last_no_reasoning", "simple_no_thinking"]


def record_oracle(key, info):
    """Adds this golden's provenance to tests/golden/tokenizer/ORACLE.json (one entry per file)."""
    path = DIR / "ORACLE.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[key] = info
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main():
    tok = AutoTokenizer.from_pretrained(str(DIR))
    glm47 = (DIR / "chat_template_glm47.jinja").read_text(encoding="utf-8")
    cases = []
    for template_name, template in (("glm51", None), ("glm47", glm47)):
        for name, messages, tools, add_gen, kwargs in CASES:
            if template_name == "glm47" and name not in GLM47_CASES:
                continue
            text = tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                           add_generation_prompt=add_gen, chat_template=template,
                                           **kwargs)
            ids = tok.encode(text, add_special_tokens=False)
            case = {"name": f"{template_name}/{name}", "template": template_name,
                    "messages": messages, "tools": tools, "add_generation_prompt": add_gen}
            case.update(kwargs)
            case["expected"] = text
            case["expected_ids"] = ids
            cases.append(case)
    doc = {
        "oracle": {
            "made_by": "tools/oracle/make_chat_golden.py",
            "command": ".venv/bin/python tools/oracle/make_chat_golden.py",
            "call": "AutoTokenizer.from_pretrained('tests/golden/tokenizer').apply_chat_template("
                    "messages, tools=tools, tokenize=False, add_generation_prompt=..., "
                    "chat_template=None|glm47, **kwargs); ids = encode(text, add_special_tokens=False)",
            "python": platform.python_version(),
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "jinja2": jinja2.__version__,
            "templates": {"glm51": "tests/golden/tokenizer/chat_template.jinja",
                          "glm47": "tests/golden/tokenizer/chat_template_glm47.jinja"},
        },
        "cases": cases,
    }
    out = DIR / "chat_golden.json"
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    record_oracle("chat_golden", doc["oracle"])
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    sys.exit(main())
