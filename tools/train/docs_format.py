"""The two ways a file here holds documents, and the one way the model sees them.

- Corpus form (data/corpus/train/*.txt): every document, trailing newlines stripped, followed by
  SEP = "\\n<|endoftext|>\\n" -- one `<|endoftext|>` per line, readable.
- Stream form (models/tiny-glm5/eval/*.txt): every document, trailing newlines stripped, followed by
  `<|endoftext|>` and nothing else. Encoding this text (added tokens parsed) gives exactly the token
  stream train.py trains on: each document's ids, then the `<|endoftext|>` id. So `whittle eval --task
  ppl` on a held-out file scores what the model was trained to predict, separators included, and no
  newline around `<|endoftext|>` that training never showed it.
"""

from __future__ import annotations

EOT = "<|endoftext|>"
SEP = "\n" + EOT + "\n"


def join_docs(texts) -> str:
    """Corpus form."""
    return "".join(t.rstrip("\n") + SEP for t in texts)


def join_stream(texts) -> str:
    """Stream form."""
    return "".join(t.rstrip("\n") + EOT for t in texts)


def split_docs(text: str) -> list[str]:
    """The documents of a file in either form (a document never ends with a newline, so a file
    containing SEP is in corpus form)."""
    if SEP in text:
        docs = text.split(SEP)
        if docs and docs[-1].strip() == "":
            docs.pop()
        if docs and docs[-1].endswith("\n" + EOT):
            docs[-1] = docs[-1][: -len("\n" + EOT)]
        return docs
    docs = text.split(EOT)
    if docs and docs[-1] == "":
        docs.pop()
    return docs
