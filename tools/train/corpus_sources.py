"""Readers for the Debian-packaged text that whittle's training corpus is built from.

Every reader returns a list of Doc(source, name, text) in a deterministic order (sorted paths); the
caller shuffles with its own seeded RNG. Nothing here depends on time, hostname or locale
(groff runs with LC_ALL=C.UTF-8 and a fixed line length).

Sources (installed by tools/train/setup_corpus.sh):
  man     /usr/share/man/man[1-8]/* of MAN_PACKAGES (manpages, manpages-dev, coreutils, ...),
          rendered with groff -Tutf8 -mandoc, no adjustment/hyphenation, overstrikes off;
          only NAME and DESCRIPTION are kept.
  pydoc   /usr/share/doc/python3.11/html  (python3.11-doc), main text of the tutorial, library
          reference, language reference, HOWTOs and FAQ pages.
  wordnet /usr/share/wordnet/data.{noun,verb,adj,adv}  (wordnet-base): one entry per synset.
  gcide   /usr/share/dictd/gcide.dict.dz  (dict-gcide): reader kept for experiments, not used by
          build_corpus.py (the 1913 Webster markup needs more cleaning than WordNet).
  cheader /usr/include/**/*.h of HEADER_PACKAGES (libc6-dev, linux-libc-dev, libpython3.11-dev),
          leading license comment dropped.
  pystd   /usr/lib/python3.11/**/*.py of PYSTD_PACKAGES (libpython3.11-stdlib, ...), leading
          license comment dropped.
"""

import gzip
import hashlib
import html
import html.parser
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
PYDOC_ROOT = Path("/usr/share/doc/python3.11/html")
WORDNET_ROOT = Path("/usr/share/wordnet")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_INDEX = Path("/usr/share/dictd/gcide.index")
INCLUDE_ROOT = Path("/usr/include")
PYSTD_ROOT = Path("/usr/lib/python3.11")

PACKAGES = ["groff-base", "python3.11-doc", "wordnet-base"]


@dataclass
class Doc:
    source: str
    name: str
    text: str
    meta: dict = field(default_factory=dict)


def package_versions():
    out = {}
    for p in sorted(set(PACKAGES + MAN_PACKAGES + HEADER_PACKAGES + PYSTD_PACKAGES)):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True, text=True)
        out[p] = r.stdout.strip() if r.returncode == 0 else None
    return out


def sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# man pages

_ENV = dict(os.environ, LC_ALL="C.UTF-8", GROFF_NO_SGR="1", MANWIDTH="78")
_SECTION_RE = re.compile(r"^[A-Z][A-Z0-9 ,/&()-]*$")


# Man pages come from these Debian packages only (installed by setup_corpus.sh), so that the corpus
# does not depend on whatever else a machine has installed (a third-party CLI can ship 16,000 pages).
MAN_PACKAGES = ["manpages", "manpages-dev", "coreutils", "util-linux", "findutils", "grep", "sed",
                "tar", "gzip", "bash", "procps", "dpkg", "apt", "man-db", "diffutils", "git-man",
                "iproute2", "openssl", "e2fsprogs", "passwd", "systemd", "bsdutils", "login", "mount",
                "make", "less", "xz-utils", "bzip2", "openssh-client", "libpcre2-dev"]


def _dpkg_files(pkg):
    info = Path("/var/lib/dpkg/info")
    for name in (f"{pkg}.list", f"{pkg}:amd64.list", f"{pkg}:arm64.list"):
        if (info / name).exists():
            return (info / name).read_text(encoding="utf-8", errors="replace").splitlines()
    return []


def man_files():
    """English man pages (sections 1-8) of MAN_PACKAGES, as (path, package), sorted by path."""
    files = {}
    for pkg in MAN_PACKAGES:
        for ln in _dpkg_files(pkg):
            if re.match(r"^/usr/share/man/man[1-8]/[^/]+$", ln):
                p = Path(ln)
                if p.is_file() and not p.is_symlink():
                    files[p] = pkg
    return sorted(files.items())


def _read_man_source(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def render_man(path, cache_dir=None):
    """groff-rendered plain text of one man page, or None (a .so redirect or a failure)."""
    src = _read_man_source(path)
    body = [ln for ln in src.splitlines() if ln.strip() and not ln.startswith(('.\\"', "'\\\""))]
    if not body or (len(body) <= 2 and body[0].startswith(".so ")):
        return None
    if cache_dir is not None:
        key = hashlib.sha256(path.name.encode() + b"\0" + src.encode("utf-8", "replace")).hexdigest()
        cached = Path(cache_dir) / key[:2] / key
        if cached.exists():
            t = cached.read_text(encoding="utf-8")
            return t or None
    # .na after .TH: no adjustment (no justification double spaces); HY=0: no hyphenation.
    src2 = re.sub(r"^(\.TH[^\n]*)$", r"\1\n.na", src, count=1, flags=re.M)
    try:
        r = subprocess.run(
            ["groff", "-Tutf8", "-mandoc", "-rLL=78n", "-rHY=0", "-P-c", "-P-b", "-P-u"],
            input=src2.encode("utf-8"), capture_output=True, env=_ENV, timeout=30)
        out = r.stdout.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        out = ""
    out = re.sub(r".\x08", "", out)  # any remaining overstrikes
    out = out.replace("\u2010", "-").replace("\u2212", "-")
    if cache_dir is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(out, encoding="utf-8")
    return out or None


def man_sections(rendered):
    """{SECTION NAME: dedented text} of a rendered page (page header/footer lines dropped)."""
    lines = rendered.splitlines()
    if lines:
        lines = lines[1:]  # LS(1)   User Commands   LS(1)
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        lines = lines[:-1]  # footer: package version, date, LS(1)
    sections, cur, buf = {}, None, []
    for ln in lines:
        if ln and not ln[0].isspace() and _SECTION_RE.match(ln.strip()):
            if cur is not None:
                sections.setdefault(cur, "\n".join(buf))
            cur, buf = ln.strip(), []
        elif cur is not None:
            buf.append(ln.rstrip())
    if cur is not None:
        sections.setdefault(cur, "\n".join(buf))
    out = {}
    for k, v in sections.items():
        v = "\n".join(re.sub(r"^ {1,7}", "", ln) for ln in v.split("\n")).strip("\n")
        v = re.sub(r"\n{3,}", "\n\n", v)
        out[k] = v
    return out


def man_doc(path, cache_dir=None, max_chars=8000, package=None):
    rendered = render_man(path, cache_dir)
    if not rendered:
        return None
    secs = man_sections(rendered)
    name = secs.get("NAME", "").strip()
    desc = secs.get("DESCRIPTION", "").strip()
    if not name or len(desc) < 200:
        return None
    # A page is English when its text is mostly ASCII letters (the man[1-8] dirs are English, but
    # a few packages misfile translations).
    letters = sum(c.isalpha() for c in desc)
    if letters == 0 or sum(c.isascii() and c.isalpha() for c in desc) / letters < 0.97:
        return None
    name_line = " ".join(name.split())
    if len(desc) > max_chars:
        cut = desc.rfind("\n\n", 0, max_chars)
        desc = desc[: cut if cut > max_chars // 2 else max_chars].rstrip()
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    title, _, sec = stem.rpartition(".")
    text = f"NAME\n{name_line}\n\nDESCRIPTION\n{desc}"
    return Doc("man", f"{title}({sec})", text, {"name_line": name_line, "title": title,
                                               "section": sec, "package": package})


# ---------------------------------------------------------------------------------------------
# Python documentation (HTML -> text)

_BLOCK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "dl", "ul",
          "ol", "pre", "table", "tr", "blockquote", "br", "hr", "figure", "caption"}
_SKIP = {"script", "style", "head", "nav"}


class _HTMLText(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth_main = 0  # >0 inside <div role="main">
        self.skip = 0
        self.pre = 0
        self.parts = []
        self.stack = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag in ("br", "hr", "img", "meta", "link", "input"):
            if self.depth_main and not self.skip and tag in ("br", "hr"):
                self.parts.append("\n")
            return
        skip_here = tag in _SKIP or "headerlink" in cls or "sphinxsidebar" in cls
        self.stack.append((tag, a.get("role") == "main", skip_here))
        if a.get("role") == "main":
            self.depth_main += 1
        if skip_here:
            self.skip += 1
        if not self.depth_main or self.skip:
            return
        if tag == "pre":
            self.pre += 1
            self.parts.append("\n\n")
        elif tag in _BLOCK:
            self.parts.append("\n\n" if tag in ("p", "h1", "h2", "h3", "h4", "dt", "section") else "\n")
            if tag == "li":
                self.parts.append("- ")

    def handle_endtag(self, tag):
        if tag in ("br", "hr", "img", "meta", "link", "input"):
            return
        # pop to the matching tag (tolerates sloppy HTML)
        while self.stack:
            t, main, skip = self.stack.pop()
            if main:
                self.depth_main -= 1
            if skip:
                self.skip -= 1
            elif t == "pre" and self.depth_main >= 0:
                self.pre = max(0, self.pre - 1)
                self.parts.append("\n\n")
            elif t in _BLOCK:
                self.parts.append("\n")
            if t == tag:
                break

    def handle_data(self, data):
        if not self.depth_main or self.skip:
            return
        if self.pre:
            self.parts.append(data)
        else:
            self.parts.append(re.sub(r"\s+", " ", data))

    def text(self):
        t = "".join(self.parts)
        t = t.replace("\u00b6", "")
        lines = [ln.rstrip() for ln in t.split("\n")]
        out, in_blank = [], 0
        for ln in lines:
            if not ln.strip():
                in_blank += 1
                continue
            if out and in_blank:
                out.append("")
            in_blank = 0
            # non-pre lines get their stray leading single space removed
            out.append(ln[1:] if ln.startswith(" ") and not ln.startswith("  ") else ln)
        return "\n".join(out).strip() + "\n"


PYDOC_DIRS = ["tutorial", "library", "reference", "howto", "faq"]


def pydoc_docs():
    docs = []
    for sub in PYDOC_DIRS:
        for p in sorted((PYDOC_ROOT / sub).glob("*.html")):
            if p.name in ("index.html",):
                continue
            parser = _HTMLText()
            parser.feed(p.read_text(encoding="utf-8", errors="replace"))
            parser.close()
            text = parser.text()
            if len(text) < 500:
                continue
            docs.append(Doc("pydoc", f"{sub}/{p.stem}", text))
    return docs


# ---------------------------------------------------------------------------------------------
# WordNet

_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def wordnet_synsets():
    """One Doc per synset: name = 'pos:offset'; meta: words, pos, gloss."""
    out = []
    for f in ("data.noun", "data.verb", "data.adj", "data.adv"):
        for line in (WORDNET_ROOT / f).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  "):
                continue  # license header
            head, _, gloss = line.partition(" | ")
            parts = head.split()
            offset, pos, wcnt = parts[0], parts[2], int(parts[3], 16)
            words = []
            for i in range(wcnt):
                w = parts[4 + 2 * i]
                w = re.sub(r"\([a-z]+\)$", "", w).replace("_", " ")
                if w not in words:
                    words.append(w)
            gloss = gloss.strip()
            if not gloss:
                continue
            defn, _, examples = gloss.partition('; "')
            exs = re.findall(r'"([^"]+)"', '"' + examples) if examples else []
            out.append(Doc("wordnet", f"{pos}:{offset}", "", {
                "words": words, "pos": _POS[pos], "definition": defn.strip().rstrip(";").strip(),
                "examples": exs}))
    return out


def wordnet_entry(d):
    m = d.meta
    s = f"{', '.join(m['words'])} ({m['pos']}): {m['definition']}"
    if m["examples"]:
        s += "; " + "; ".join(f'"{e}"' for e in m["examples"])
    return s


# ---------------------------------------------------------------------------------------------
# GCIDE

def _b64(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


_GCIDE_POS = {"n.": "noun", "v. t.": "verb", "v. i.": "verb", "v.": "verb", "a.": "adjective",
              "adv.": "adverb", "prep.": "preposition", "conj.": "conjunction",
              "interj.": "interjection", "pron.": "pronoun"}


def _gcide_clean(s):
    s = re.sub(r"\[[^\[\]]*\]", "", s)  # etymology, citations, [1913 Webster]
    s = re.sub(r"\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[^\\]*\\", "", s)
    s = s.replace('"', "").replace("`", "")
    return " ".join(s.split())


def gcide_entries():
    """Docs (one per headword) with meta: word, pos, senses (cleaned definitions)."""
    raw = gzip.open(GCIDE_DICT).read().decode("utf-8", errors="replace")
    rawb = raw.encode("utf-8")
    out = []
    seen = set()
    for line in GCIDE_INDEX.read_text(encoding="utf-8", errors="replace").splitlines():
        word, off, ln = line.split("\t")
        if word.startswith("00") or not re.fullmatch(r"[a-z][a-z-]{2,}", word) or word in seen:
            continue
        seen.add(word)
        entry = rawb[_b64(off):_b64(off) + _b64(ln)].decode("utf-8", errors="replace")
        first, _, rest = entry.partition("\n")
        m = re.search(r"\),?\s*(n\.|v\. t\.|v\. i\.|v\.|a\.|adv\.|prep\.|conj\.|interj\.|pron\.)",
                      entry[:400])
        if not m:
            continue
        pos = _GCIDE_POS[m.group(1)]
        senses = []
        for para in re.split(r"\n\s*\n", entry):
            p = para.strip()
            mm = re.match(r"^(\d+)\.\s+(.*)$", p, re.S)
            if mm:
                d = _gcide_clean(mm.group(2))
            elif p is entry.strip() or para is entry:
                continue
            else:
                continue
            d = re.sub(r"^\((?:[A-Z][a-z]*\.\s*)+\)\s*", "", d)
            if 15 <= len(d) <= 400 and not d.startswith(("See", "Syn.", "Note")):
                senses.append(d.rstrip(";"))
        if not senses:
            # unnumbered single sense: the text after the head paragraph
            body = entry.split("\n", 1)[1] if "\n" in entry else ""
            body = re.split(r"\n\s*\n", body)
            cand = [b for b in body if b.strip() and not b.strip().startswith(("Note", "{", "Syn", "["))]
            if len(cand) >= 1:
                d = _gcide_clean(cand[0])
                if 15 <= len(d) <= 400:
                    senses.append(d)
        if senses:
            out.append(Doc("gcide", word, "", {"word": word, "pos": pos, "senses": senses[:4]}))
    return out


def gcide_entry(d):
    m = d.meta
    if len(m["senses"]) == 1:
        return f"{m['word']} ({m['pos']}): {m['senses'][0]}"
    return f"{m['word']} ({m['pos']}): " + " ".join(f"{i + 1}. {s}" for i, s in enumerate(m["senses"]))


# ---------------------------------------------------------------------------------------------
# code

_LICENSE_WORDS = re.compile(r"copyright|license|licence|free software|warranty|SPDX", re.I)


def strip_c_license(text):
    t = text.lstrip()
    m = re.match(r"/\*.*?\*/\s*", t, re.S)
    if m and _LICENSE_WORDS.search(m.group(0)):
        t = t[m.end():]
    m = re.match(r"(//[^\n]*\n)+\s*", t)
    if m and _LICENSE_WORDS.search(m.group(0)):
        t = t[m.end():]
    return t


def strip_py_license(text):
    lines = text.split("\n")
    i = 0
    if lines and lines[0].startswith("#!"):
        i = 1
    j = i
    while j < len(lines) and lines[j].startswith("#"):
        j += 1
    if j > i + 3 and _LICENSE_WORDS.search("\n".join(lines[i:j])):
        lines = lines[:i] + lines[j:]
    return "\n".join(lines).lstrip("\n")


# Code comes from these packages' files only (installed by setup_corpus.sh), not from whatever
# else a machine has under /usr/include or /usr/lib/python3.11.
HEADER_PACKAGES = ["libc6-dev", "linux-libc-dev", "libpython3.11-dev"]
PYSTD_PACKAGES = ["libpython3.11-minimal", "libpython3.11-stdlib", "python3-lib2to3", "python3-distutils"]


def _package_paths(packages, pattern):
    out = set()
    for pkg in packages:
        for ln in _dpkg_files(pkg):
            if re.match(pattern, ln):
                out.add(Path(ln))
    return sorted(out)


def cheader_docs(max_bytes=60_000):
    docs = []
    for p in _package_paths(HEADER_PACKAGES, r"^/usr/include/.*\.h$"):
        if not p.is_file() or p.is_symlink() or p.stat().st_size > max_bytes:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        if "\ufffd" in text:
            continue
        text = strip_c_license(text).rstrip() + "\n"
        if len(text) < 300:
            continue
        docs.append(Doc("cheader", str(p.relative_to(INCLUDE_ROOT)), text))
    return docs


def pystd_docs(max_bytes=60_000):
    docs = []
    for p in _package_paths(PYSTD_PACKAGES, r"^/usr/lib/python3\.11/.*\.py$"):
        rel = p.relative_to(PYSTD_ROOT)
        if rel.parts[0] in ("site-packages", "dist-packages") or "__pycache__" in rel.parts:
            continue
        if not p.is_file() or p.is_symlink() or p.stat().st_size > max_bytes:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        if "\ufffd" in text:
            continue
        text = strip_py_license(text).rstrip() + "\n"
        if len(text) < 300:
            continue
        docs.append(Doc("pystd", str(rel), text))
    return docs
