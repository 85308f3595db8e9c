#!/usr/bin/env python3
"""The official `openai` Python client (and curl) against `whittle serve`, end to end on loopback.

    python3 -m venv .venv && .venv/bin/pip install openai
    .venv/bin/python tools/oracle/openai_client_check.py [--model models/tiny-glm5] [--binary build/whittle]

Starts the server on a free port with an API key, then checks, with the client as agent harnesses
use it: /v1/models; a chat (non-streaming and streaming with include_usage: the same greedy answer,
the same usage); a completion whose greedy text equals `whittle generate`'s for the same prompt;
a thinking chat (reasoning_content); a tool-call round trip (tools rendered, an assistant turn with
tool_calls and the tool's result sent back as a `role: tool` message, answered); the errors the
client raises (400 BadRequestError naming the parameter, 401 AuthenticationError); and curl's raw
server-sent events. Prints each check and the package versions; exit status 1 on any failure.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import openai

KEY = "whittle-check-key"
failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    if not ok:
        failures.append(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/tiny-glm5")
    ap.add_argument("--binary", default="build/whittle")
    args = ap.parse_args()

    server = subprocess.Popen(
        [args.binary, "serve", args.model, "--port", "0", "--api-key", KEY, "--parallel", "4"],
        stderr=subprocess.PIPE, text=True)
    port = None
    for line in server.stderr:
        sys.stderr.write(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        sys.exit("the server did not start")
    base = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base, api_key=KEY)
    try:
        run_checks(client, base, args)
    finally:
        server.terminate()
        code = server.wait(timeout=60)
        check("SIGTERM ends the server cleanly (exit 0)", code == 0, f"exit {code}")
    print(f"openai {openai.__version__}, python {sys.version.split()[0]}, "
          f"curl {subprocess.run(['curl', '--version'], capture_output=True, text=True).stdout.split()[1]}")
    sys.exit(1 if failures else 0)


def run_checks(client, base, args):
    models = client.models.list()
    model = models.data[0].id
    check("models.list names the model", model == os.path.basename(os.path.normpath(args.model)), model)

    messages = [{"role": "user", "content": "Tell me about the weather."}]
    kw = dict(model=model, messages=messages, max_tokens=40, temperature=0,
              extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    whole = client.chat.completions.create(**kw)
    text = whole.choices[0].message.content or ""
    check("chat: an answer", whole.choices[0].finish_reason in ("stop", "length") and
          whole.usage.completion_tokens > 0, str(whole))
    check("chat: usage adds up", whole.usage.total_tokens ==
          whole.usage.prompt_tokens + whole.usage.completion_tokens)

    streamed, usage, finish = "", None, None
    for chunk in client.chat.completions.create(**kw, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            streamed += c.delta.content or ""
            finish = c.finish_reason or finish
    check("chat stream: the same greedy text", streamed == text, f"{streamed!r} vs {text!r}")
    check("chat stream: the same usage", usage is not None and
          usage.completion_tokens == whole.usage.completion_tokens, str(usage))
    check("chat stream: the same finish_reason", finish == whole.choices[0].finish_reason)

    prompt = "The history of the city"
    comp = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0)
    gen = subprocess.run([args.binary, "generate", args.model, "-p", prompt, "-n", "24", "-t", "0",
                          "-q"], capture_output=True, text=True, check=True).stdout
    check("completion: greedy text equals `whittle generate`", comp.choices[0].text == gen[:-1],
          f"{comp.choices[0].text!r} vs {gen[:-1]!r}")

    think = client.chat.completions.create(
        model=model, messages=messages, max_tokens=40, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    reasoning = getattr(think.choices[0].message, "reasoning_content", None)
    check("thinking chat: reasoning_content is returned", isinstance(reasoning, str), str(think))

    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    first = client.chat.completions.create(model=model, messages=messages, tools=tools,
                                           max_tokens=16, temperature=0)
    check("tools: a request with tools is answered", first.choices[0].message is not None)
    history = messages + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp_c": 21})},
    ]
    # tiny-glm5's context is 256 tokens; the tool definitions alone take most of it.
    second = client.chat.completions.create(model=model, messages=history, tools=tools,
                                            max_tokens=8, temperature=0)
    check("tools: the tool's result sent back as role tool is answered",
          second.choices[0].finish_reason in ("stop", "length", "tool_calls"), str(second))
    details = second.usage.prompt_tokens_details
    check("tools: the resent conversation reused cached tokens",
          details is not None and (details.cached_tokens or 0) > 0, str(second.usage))

    named = client.chat.completions.create(
        model=model, messages=messages, tools=tools, max_tokens=16, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    m = named.choices[0].message
    check("tools: a named tool_choice starts the answer with that call",
          (m.tool_calls and m.tool_calls[0].function.name == "get_weather") or
          (m.content or "").startswith("<tool_call>get_weather"), str(m))

    try:
        client.chat.completions.create(model=model, messages=messages, temperature=5)
        check("400 for temperature 5", False, "no error")
    except openai.BadRequestError as e:
        check("400 for temperature 5, naming the parameter", e.body.get("param") == "temperature",
              str(e.body))
    try:
        openai.OpenAI(base_url=base, api_key="wrong").models.list()
        check("401 for a wrong key", False, "no error")
    except openai.AuthenticationError:
        check("401 for a wrong key", True)

    raw = subprocess.run(
        ["curl", "-sN", f"{base}/completions", "-H", f"Authorization: Bearer {KEY}",
         "-H", "Content-Type: application/json",
         "-d", json.dumps({"prompt": prompt, "max_tokens": 8, "stream": True, "temperature": 0})],
        capture_output=True, text=True, check=True).stdout
    events = raw.split("\n\n")
    check("curl: every event is one data: line, the last [DONE]",
          events[-1] == "" and events[-2] == "data: [DONE]" and
          all(e.startswith("data: ") and "\n" not in e for e in events[:-1]), raw[:300])
    joined = "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-2])
    check("curl: the streamed text starts the greedy completion",
          joined != "" and gen[:-1].startswith(joined), f"{joined!r}")


if __name__ == "__main__":
    main()
