#!/usr/bin/env python3
"""Builds the fuzz seed corpora from the real files (standard library only).

Usage: fuzz/make_seeds.py [--out DIR]   (default DIR: fuzz/corpus)

Writes DIR/<target>/<name> for every target. Needs scripts/fetch-models.sh's models/ for the real
seeds (missing models are skipped with a note; the committed seeds in fuzz/seeds/ still apply):

- safetensors_header: MiniLM's header (8-byte length + JSON) with the first tensor's bytes only,
  its offsets rewritten to fit; the tiny fixtures' real files (tiny_llama, tiny_qwen2, ...).
- gguf_file / gguf_tokenizer: SmolLM2's GGUF cut down: every metadata key kept with the
  vocabulary trimmed to its first tokens (merges among them), and either the full tensor index
  with a little data, or a one-layer model with small tensors of the file's own types and bytes.
- tokenizer_json: MiniLM's tokenizer.json with the vocabulary trimmed, and a byte-level BPE
  tokenizer.json made from SmolLM2's GGUF vocabulary.
- chat_template: SmolLM2's GGUF template and fixtures/chat_templates' templates, each with the
  fixture's messages, in the target's input format (see fuzz_targets/chat_template.rs).
- train_jsonl: lines of data/chatterbot/train.jsonl (scripts/chatterbot-to-jsonl.py makes it).
"""

import argparse
import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = ROOT / "models/all-MiniLM-L6-v2"
CHATTERBOT = ROOT / "data/chatterbot/train.jsonl"
TEMPLATES = ROOT / "fixtures/chat_templates/cases.json"

VOCAB = 512  # tokens kept when trimming a vocabulary


def write(out, target, name, data):
    path = out / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    print(f"  {target}/{name}: {path.stat().st_size} bytes")


# ---- GGUF (version 3, little-endian) ---------------------------------------------------------

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
# ggml type id -> (block size, bytes per block)
GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
        10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", "replace")

    def value(self, ty):
        if ty in SCALAR:
            return self.take(SCALAR[ty])
        if ty == STRING:
            return self.string()
        if ty == ARRAY:
            inner, n = self.take("<I"), self.take("<Q")
            return (inner, [self.value(inner) for _ in range(n)])
        raise ValueError(f"unknown GGUF value type {ty}")


def read_gguf(path):
    """(metadata {key: (type, value)}, tensors [(name, dims, type, offset)], data start, bytes)."""
    data = path.read_bytes()
    r = Reader(data)
    assert data[:4] == b"GGUF" and struct.unpack_from("<I", data, 4)[0] == 3, "GGUF v3 expected"
    r.pos = 8
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        ty = r.take("<I")
        meta[key] = (ty, r.value(ty))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.take("<Q") for _ in range(r.take("<I"))]
        tensors.append((name, dims, r.take("<I"), r.take("<Q")))
    align = meta.get("general.alignment", (4, 32))[1]
    start = (r.pos + align - 1) // align * align
    return meta, tensors, start, data


def pack_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def pack_value(ty, v):
    if ty in SCALAR:
        return struct.pack(SCALAR[ty], v)
    if ty == STRING:
        return pack_string(v)
    inner, items = v
    return struct.pack("<IQ", inner, len(items)) + b"".join(pack_value(inner, x) for x in items)


def write_gguf(meta, tensors, blobs, offsets=None, data=None):
    """A GGUF v3 file; `tensors` are (name, dims, type) and `blobs` their data, in order. With
    `offsets` and `data`, the index keeps those offsets and `data` follows it instead."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for key, (ty, v) in meta.items():
        out += pack_string(key) + struct.pack("<I", ty) + pack_value(ty, v)
    if offsets is None:
        offset, offsets = 0, []
        for blob in blobs:
            offsets.append(offset)
            offset += (len(blob) + 31) // 32 * 32
        data = b"".join(blob + bytes(-len(blob) % 32) for blob in blobs)
    for (name, dims, ty), off in zip(tensors, offsets):
        out += pack_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ty, off)
    out += bytes(-len(out) % 32)
    return bytes(out) + data


def trimmed_vocab(meta):
    """The metadata with the tokenizer arrays cut to the first VOCAB tokens."""
    meta = dict(meta)
    tokens = meta["tokenizer.ggml.tokens"][1][1][:VOCAB]
    meta["tokenizer.ggml.tokens"] = (ARRAY, (STRING, tokens))
    if "tokenizer.ggml.token_type" in meta:
        inner, types = meta["tokenizer.ggml.token_type"][1]
        meta["tokenizer.ggml.token_type"] = (ARRAY, (inner, types[:VOCAB]))
    known = set(tokens)
    merges = [m for m in meta["tokenizer.ggml.merges"][1][1]
              if m.replace(" ", "", 1) in known and all(p in known for p in m.split(" ", 1))]
    meta["tokenizer.ggml.merges"] = (ARRAY, (STRING, merges))
    return meta


def tensor_bytes(dims, ty):
    n = 1
    for d in dims:
        n *= d
    block, size = GGML[ty]
    return n // block * size


def gguf_seeds(out):
    if not GGUF.exists():
        print(f"  skipped GGUF seeds: {GGUF} not found (scripts/fetch-models.sh)")
        return
    meta, tensors, start, data = read_gguf(GGUF)
    small = trimmed_vocab(meta)
    by_name = {t[0]: t for t in tensors}

    # The real tensor index (every tensor, real offsets) and the first 4 KiB of data: opening
    # fails as truncated, which is the answer the index must give.
    real = write_gguf(small, [t[:3] for t in tensors], [], offsets=[t[3] for t in tensors],
                      data=data[start:start + 4096])
    write(out, "gguf_file", "smollm2-index-and-4k.gguf", real)

    # A one-layer model: real names, types and bytes, small shapes (hidden 64, 2 heads, 1 kv head).
    hidden, ffn, vocab = 64, 64, VOCAB
    shapes = {
        "token_embd.weight": [hidden, vocab],
        "output_norm.weight": [hidden],
        "blk.0.attn_norm.weight": [hidden],
        "blk.0.ffn_norm.weight": [hidden],
        "blk.0.attn_q.weight": [hidden, hidden],
        "blk.0.attn_k.weight": [hidden, hidden // 2],
        "blk.0.attn_v.weight": [hidden, hidden // 2],
        "blk.0.attn_output.weight": [hidden, hidden],
        "blk.0.ffn_gate.weight": [hidden, ffn],
        "blk.0.ffn_up.weight": [hidden, ffn],
        "blk.0.ffn_down.weight": [ffn, hidden],
    }
    tiny, blobs = [], []
    for name, dims in shapes.items():
        _, _, ty, off = by_name[name]
        n = tensor_bytes(dims, ty)
        tiny.append((name, dims, ty))
        blobs.append(data[start + off:start + off + n])
    meta1 = dict(small)
    for key, v in [("llama.block_count", 1), ("llama.embedding_length", hidden),
                   ("llama.feed_forward_length", ffn), ("llama.attention.head_count", 2),
                   ("llama.attention.head_count_kv", 1), ("llama.context_length", 64)]:
        meta1[key] = (meta[key][0], v)
    meta1["llama.vocab_size"] = (4, vocab)
    model = write_gguf(meta1, tiny, blobs)
    write(out, "gguf_file", "smollm2-one-layer.gguf", model)
    # The tokenizer target reads the same files; metadata matters there, not tensors.
    write(out, "gguf_tokenizer", "smollm2-vocab.gguf", write_gguf(small, [], []))
    write(out, "gguf_tokenizer", "smollm2-one-layer.gguf", model)

    # A byte-level BPE tokenizer.json from the same trimmed vocabulary.
    tokens = small["tokenizer.ggml.tokens"][1][1]
    merges = small["tokenizer.ggml.merges"][1][1]
    types = small["tokenizer.ggml.token_type"][1][1]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, (t, k) in enumerate(zip(tokens, types))
             if k == 3]
    bpe = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    write(out, "tokenizer_json", "smollm2-bpe.json", json.dumps(bpe, ensure_ascii=False))
    if "tokenizer.chat_template" in meta:
        tpl = meta["tokenizer.chat_template"][1]
        write(out, "chat_template", "smollm2-gguf.txt", template_input(tpl, "<|im_start|>",
                                                                      "<|im_end|>", SAMPLE, True))


def safetensors_seeds(out):
    for case in ["tiny_llama", "tiny_qwen2", "lora_peft/llama_step0/adapter"]:
        for path in sorted((ROOT / "fixtures" / case).glob("*.safetensors")):
            if path.stat().st_size <= 128 * 1024:  # larger seeds slow every run down
                write(out, "safetensors_header", f"{case.replace('/', '-')}-{path.name}",
                      path.read_bytes())
    path = MINILM / "model.safetensors"
    if not path.exists():
        print(f"  skipped MiniLM seeds: {path} not found")
        return
    with path.open("rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    # Keep every tensor's entry, but with the first tensor's dtype and a shape/offsets that fit in
    # 4 KiB of the real data: the header stays real, the file small.
    first = min((v for k, v in header.items() if k != "__metadata__"),
                key=lambda v: v["data_offsets"][0])
    with path.open("rb") as f:
        f.seek(8 + n + first["data_offsets"][0])
        data = f.read(4096)
    small = {"__metadata__": header.get("__metadata__", {})} if "__metadata__" in header else {}
    offset = 0
    for name, info in sorted(header.items()):
        if name == "__metadata__":
            continue
        elems = 16
        small[name] = {"dtype": "F32", "shape": [4, 4], "data_offsets": [offset, offset + 64]}
        offset = (offset + elems * 4) % (len(data) - 64)
    blob = json.dumps(small).encode()
    blob += b" " * (-len(blob) % 8)
    write(out, "safetensors_header", "minilm-header-4k.safetensors",
          struct.pack("<Q", len(blob)) + blob + data)
    # The untouched real header with only the first tensor's bytes: fails as truncated.
    real = json.dumps(header).encode()
    write(out, "safetensors_header", "minilm-real-header-truncated.safetensors",
          struct.pack("<Q", len(real)) + real + data)


def tokenizer_json_seeds(out):
    path = MINILM / "tokenizer.json"
    if not path.exists():
        print(f"  skipped MiniLM tokenizer seed: {path} not found")
        return
    tok = json.loads(path.read_text())
    vocab = tok["model"]["vocab"]
    keep = {t: i for t, i in vocab.items() if i < VOCAB or t.startswith("[")}
    # WordPiece needs contiguous ids only per its own map; renumbering is not needed.
    tok["model"]["vocab"] = keep
    write(out, "tokenizer_json", "minilm-wordpiece.json", json.dumps(tok, ensure_ascii=False))


SAMPLE = [("system", "You are terse."), ("user", "What is the capital of France?"),
          ("assistant", "Paris."), ("user", "And of Italy? 123 🙂")]


def template_input(template, bos, eos, messages, add_generation_prompt):
    """chat_template's input: template NUL flags NUL bos NUL eos (NUL role NUL content)*."""
    parts = [template, "g" if add_generation_prompt else "", bos or "", eos or ""]
    for role, content in messages:
        parts += [role, content]
    return "\0".join(parts)


def chat_template_seeds(out):
    cases = json.loads(TEMPLATES.read_text())
    templates = cases["templates"]
    for i, case in enumerate(cases["cases"]):
        t = templates[case["template"]]
        messages = [(m["role"], m["content"]) for m in case["messages"]]
        write(out, "chat_template", f"{case['template']}-{i}.txt",
              template_input(t["template"], t.get("bos_token"), t.get("eos_token"), messages,
                             case.get("add_generation_prompt", False)))


def train_jsonl_seeds(out):
    if not CHATTERBOT.exists():
        print(f"  skipped chatterbot seeds: {CHATTERBOT} not found "
              "(scripts/chatterbot-to-jsonl.py makes it)")
        return
    lines = CHATTERBOT.read_text().splitlines()
    for i in range(0, min(len(lines), 40), 4):
        write(out, "train_jsonl", f"chatterbot-{i}.jsonl", "\n".join(lines[i:i + 4]) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz/corpus")
    args = ap.parse_args()
    print(f"seeds from the real files into {args.out}")
    safetensors_seeds(args.out)
    gguf_seeds(args.out)
    tokenizer_json_seeds(args.out)
    chat_template_seeds(args.out)
    train_jsonl_seeds(args.out)


if __name__ == "__main__":
    sys.exit(main())
