#!/usr/bin/env python3
"""Converts the chatterbot corpus (models/chatterbot-corpus/<language>/*.yml, fetched by
scripts/fetch-models.sh) into `wick train` data: one {"messages": [...]} object per
conversation, the conversation's lines alternating user / assistant (the first line is the
prompt, the next its answer, ...; a trailing unanswered line is dropped).

Usage:
  scripts/chatterbot-to-jsonl.py [--corpus DIR] [--out-dir DIR] [--valid-percent N]
  scripts/chatterbot-to-jsonl.py --self-check   # fallback parser vs PyYAML on every file

Writes OUT/train.jsonl and OUT/valid.jsonl (default OUT: data/chatterbot). The corpus repeats
many conversations (and asks many questions more than once, with different answers): repeated
conversations are kept once, and the split goes by question, so validation measures questions
the model was not trained on. The split is deterministic: a conversation goes to validation when
sha256 of its first line (lower-cased, whitespace collapsed) mod 100 is below --valid-percent
(default 10), independent of file order and Python's hash seed.

Needs only the standard library: PyYAML is used when installed, otherwise a small parser for
the subset of YAML the corpus uses (block sequences, plain / quoted / block scalars).
"""

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

try:
    import yaml  # type: ignore
except ImportError:  # a fresh machine: the fallback below
    yaml = None


# ---- fallback YAML subset -------------------------------------------------------------------

def _fold(lines):
    """YAML line folding of a multi-line flow scalar: breaks become spaces, blank lines '\n'."""
    out, pending_blank = "", 0
    for i, line in enumerate(lines):
        text = line.strip() if i else line.rstrip()
        if i and i < len(lines) - 1 and not text:
            pending_blank += 1
            continue
        if i:
            out += "\n" * pending_blank if pending_blank else " "
        pending_blank = 0
        out += text if i else text
    return out


def _quoted(first, rest, quote):
    """Parses a quoted scalar starting on `first` (after the quote char); returns (value, n
    continuation lines used)."""
    lines, used = [first], 0
    while True:
        joined = "\n".join(lines)
        end = _closing(joined, quote)
        if end is not None:
            break
        if used >= len(rest):
            raise ValueError("unterminated quoted scalar")
        lines.append(rest[used])
        used += 1
    raw_lines = joined[:end].split("\n")
    if quote == "'":
        value = _fold(raw_lines).replace("''", "'")
    else:
        # A backslash at a line end escapes the break (no space is inserted).
        parts = []
        for i, line in enumerate(raw_lines):
            line = line if i == 0 else line.lstrip()
            parts.append(line)
        value = _fold_double(parts)
    return value, used


def _fold_double(parts):
    out = ""
    for i, line in enumerate(parts):
        if i:
            if out.endswith("\\") and not out.endswith("\\\\"):
                out = out[:-1]
            elif line == "":
                out += "\n"
                continue
            else:
                out = out.rstrip(" ") + " "
        out += line
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "0": "\0", " ": " "}

    def unescape(m):
        s = m.group(1)
        if s[0] in "xuU":
            return chr(int(s[1:], 16))
        return escapes.get(s, "\\" + s)

    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", unescape, out)


def _closing(text, quote):
    i = 0
    while i < len(text):
        c = text[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            if quote == "'" and i + 1 < len(text) and text[i + 1] == "'":
                i += 2
                continue
            return i
        i += 1
    return None


def _block(header, rest, parent_indent):
    """A `|` / `>` block scalar; returns (value, lines used)."""
    body, used = [], 0
    for line in rest:
        if line.strip() and len(line) - len(line.lstrip(" ")) <= parent_indent:
            break
        body.append(line)
        used += 1
    while body and not body[-1].strip():
        body.pop()
    nonblank = [l for l in body if l.strip()]
    indent = min(len(l) - len(l.lstrip(" ")) for l in nonblank) if nonblank else 0
    body = [l[indent:] if l.strip() else "" for l in body]
    if header[0] == ">":
        value = re.sub(r"(?<=[^\n])\n(?=[^\n ])", " ", "\n".join(body))
    else:
        value = "\n".join(body)
    if not header.endswith("-") and body:
        value += "\n"
    return value, used


def _plain(first, rest, parent_indent):
    lines, used = [first], 0
    for line in rest:
        s = line.strip()
        if not s or len(line) - len(line.lstrip(" ")) <= parent_indent:
            break
        lines.append(s)
        used += 1
    value = " ".join(l.strip() for l in lines)
    return re.sub(r"\s+#.*$", "", value), used


def parse_corpus_yaml(text):
    """{"conversations": [[str, ...], ...]} from the corpus' YAML subset."""
    lines = text.splitlines()
    conversations, section, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "-")):
            section = line.split(":", 1)[0].strip()
            continue
        if section != "conversations":
            continue
        if line.startswith("- ") and not re.match(r"^- +- ", line):
            # A conversation that is a bare string, not a list (a typo in the corpus): parsed
            # like PyYAML does, then dropped by to_messages.
            item = line[2:]
            rest = lines[i:]
            if item.startswith(("'", '"')):
                value, used = _quoted(item[1:], rest, item[0])
            else:
                value, used = _plain(item, rest, 0)
            i += used
            conversations.append(value)
            continue
        m = re.match(r"^(- )?(\s*)- (.*)$", line)
        if not m:
            raise ValueError(f"line {i}: unexpected {line!r}")
        if m.group(1):
            conversations.append([])
        item = m.group(3)
        indent = len(line) - len(item) - 2
        rest = lines[i:]
        if item.startswith(("|", ">")):
            value, used = _block(item.strip(), rest, indent)
        elif item.startswith(("'", '"')):
            value, used = _quoted(item[1:], rest, item[0])
        else:
            value, used = _plain(item, rest, indent)
        i += used
        conversations[-1].append(value)
    return {"conversations": conversations}


def load(path):
    text = path.read_text(encoding="utf-8")
    if yaml is not None:
        return yaml.safe_load(text)
    return parse_corpus_yaml(text)


# ---- conversion ------------------------------------------------------------------------------

def to_messages(conversation):
    if not isinstance(conversation, list):
        return []
    lines = [str(x).strip() for x in conversation if isinstance(x, (str, int, float))]
    lines = lines[: len(lines) - len(lines) % 2]
    roles = ["user", "assistant"]
    return [{"role": roles[k % 2], "content": t} for k, t in enumerate(lines)]


def is_valid(question, percent):
    key = " ".join(question.lower().split())
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def convert(corpus, out_dir, percent):
    files = sorted(corpus.glob("*.yml"))
    if not files:
        sys.exit(f"no .yml files in {corpus}: run scripts/fetch-models.sh first")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "valid": 0, "repeated": 0}
    seen = set()
    with open(out_dir / "train.jsonl", "w", encoding="utf-8") as train, open(
        out_dir / "valid.jsonl", "w", encoding="utf-8"
    ) as valid:
        for path in files:
            for conv in (load(path) or {}).get("conversations") or []:
                messages = to_messages(conv)
                if not messages or any(not m["content"] for m in messages):
                    continue
                line = json.dumps({"messages": messages}, ensure_ascii=False)
                if line in seen:
                    counts["repeated"] += 1
                    continue
                seen.add(line)
                split = "valid" if is_valid(messages[0]["content"], percent) else "train"
                f = valid if split == "valid" else train
                f.write(line + "\n")
                counts[split] += 1
    print(f"{out_dir}: {counts['train']} train, {counts['valid']} valid conversations from "
          f"{len(files)} files ({counts['repeated']} repeated conversations left out)")


def self_check(corpus):
    if yaml is None:
        sys.exit("--self-check needs PyYAML")
    bad = 0
    for path in sorted(corpus.glob("*.yml")):
        text = path.read_text(encoding="utf-8")
        want = [to_messages(c) for c in yaml.safe_load(text).get("conversations") or []]
        got = [to_messages(c) for c in parse_corpus_yaml(text)["conversations"]]
        if want != got:
            bad += 1
            diff = next(((k, w, g) for k, (w, g) in enumerate(zip(want, got)) if w != g), None)
            print(f"{path.name}: fallback differs from PyYAML ({len(got)} vs {len(want)}): {diff}")
    print("self-check:", "ok" if not bad else f"{bad} files differ")
    return bad == 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=ROOT / "models/chatterbot-corpus/english")
    p.add_argument("--out-dir", type=Path, default=ROOT / "data/chatterbot")
    p.add_argument("--valid-percent", type=int, default=10)
    p.add_argument("--self-check", action="store_true")
    args = p.parse_args()
    if args.self_check:
        sys.exit(0 if self_check(args.corpus) else 1)
    if not 0 <= args.valid_percent < 100:
        sys.exit("--valid-percent must be in [0, 100)")
    convert(args.corpus, args.out_dir, args.valid_percent)


if __name__ == "__main__":
    main()
