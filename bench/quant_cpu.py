"""GGUF quantization types on CPU: wick vs llama.cpp, SmolLM2-135M-Instruct, perplexity and tok/s.

Usage: /root/refvenv/bin/python bench/quant_cpu.py [--models DIR] [--types T,...] [--ctx N]
    [--skip-build] [--skip-speed]

Per type, on one GGUF file that `llama-quantize --allow-requantize --pure` made from
models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf (made here when missing, under
--models, default /work/quant-out; outside the repo), and, perplexity only, the tiny fixture
models (fixtures/tiny_llama, tiny_qwen2) widened to 256 with random weights and SmolLM2's
tokenizer, converted by llama.cpp's convert_hf_to_gguf.py to F32 and quantized (--pure) to each
K-quant:
- perplexity of fixtures/perplexity/apache-2.0.txt (the Apache License 2.0 text) at --ctx
  (default 256): `wick perplexity --model F --file TEXT --ctx N` and
  `llama-perplexity -m F -f TEXT -c N -t 2` (llama.cpp's method, which wick's follows: chunks of N
  tokens, the second half of each scored). Both print `PPL = value +/- stderr`; the table shows
  wick's relative difference, and both programs' difference from exact math on the file's
  values (`wick perplexity --dtype f32`: the weights dequantized, no activation rounding).
- speed, 2 threads: llama.cpp `llama-bench -m F -t 2 -p 128 -n 32 -r 3` (pp128: a 128-token
  prompt from an empty cache; tg32: 32 tokens generated from an empty cache) and
  `wick generate --model F --temperature 0 --max-tokens 32 --logit-bias 2=-inf PROMPT` with a
  128-token prompt (its stats line: prefill = prompt tokens / prompt forward time, decode =
  31 steps / their time after the prompt), median of 3 runs after a warm-up. wick's rayon pool
  gets RAYON_NUM_THREADS=2.

SmolLM2's hidden size is 576, not a multiple of 256: llama-quantize stores the tensors with 576
columns (all but ffn_down) of a 256-block type in its fallback type (Q2_K, Q3_K -> Q4_0; Q4_K ->
Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0; IQ4_XS -> IQ4_NL). The type census of every file is in the JSON.

Writes bench/out/quant_cpu.json and prints a Markdown table last. Whatever else runs on the
machine meanwhile is recorded as the load average before and after each type.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "wick"
LLAMA_BIN = Path("/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")
GGUF_PY = LLAMA_BIN.parent.parent / "gguf-py"
SOURCE = REPO / "models" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = REPO / "fixtures" / "perplexity" / "apache-2.0.txt"
TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
         "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]  # fmt: skip
PPL_RE = re.compile(r"PPL = ([\d.]+) \+/- ([\d.]+)")
STATS_RE = re.compile(
    r"prompt: (\d+) tokens(?: \((\d+) truncated\))?, prefill ([\d.]+) tok/s \| generated: (\d+) "
    r"tokens, decode ([\d.]+) tok/s"
)
THREADS = 2
K_QUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# The tiny fixture models, widened to 256 so that every tensor fills whole K-quant super-blocks
# (at their committed width of 64 llama-quantize would store none of them in a K-quant).
TINY = {"tiny_llama": {"head_dim": 64}, "tiny_qwen2": {}}


def run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def quantized_file(models, t):
    path = models / f"smollm2-135m-{t}.gguf"
    if not path.exists():
        models.mkdir(parents=True, exist_ok=True)
        run([LLAMA_BIN / "llama-quantize", "--allow-requantize", "--pure", SOURCE, path, t, THREADS])
    return path


def tiny_model(models, name):
    """An F32 GGUF of fixtures/<name>'s config at width 256 (hidden 256, MLP 512, 4 heads of
    64), random weights (seed 0, std 0.2 so the logits are far from uniform) and SmolLM2's
    tokenizer (so it reads the same text), converted by llama.cpp's convert_hf_to_gguf.py."""
    out = models / f"{name}_256-F32.gguf"
    if out.exists():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = models / f"{name}_256"
    cfg = json.loads((REPO / "fixtures" / name / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(SOURCE.parent, gguf_file=SOURCE.name)
    cfg.update(hidden_size=256, intermediate_size=512, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512, vocab_size=len(tok),
               initializer_range=0.2, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, **TINY[name])  # fmt: skip
    torch.manual_seed(0)
    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "transformers_version"})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    # The converter hashes what AutoTokenizer gives; for model_type qwen2, transformers 5 gives
    # Qwen2Tokenizer, which swaps in Qwen's pre-tokenizer (a hash the converter rejects). The
    # converter picks the architecture from `architectures`, so only the tokenizer sees this.
    saved = json.loads((folder / "config.json").read_text())
    saved["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(saved, indent=1))
    env = dict(os.environ, PYTHONPATH=str(GGUF_PY))
    run([sys.executable, LLAMA_BIN.parent.parent / "convert_hf_to_gguf.py", folder, "--outtype",
         "f32", "--outfile", out], env=env)  # fmt: skip
    return out


def tiny_quantized(models, name, t):
    if t == "F32":
        return tiny_model(models, name)
    path = models / f"{name}_256-{t}.gguf"
    if not path.exists():
        run([LLAMA_BIN / "llama-quantize", "--pure", tiny_model(models, name), path, t, THREADS])
    return path


def type_census(path):
    """How many tensors of each stored type the file has (gguf-py's reader)."""
    sys.path.insert(0, str(GGUF_PY))
    import gguf

    return dict(Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors))


def wick_env():
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(THREADS)
    return env


def wick_ppl(path, ctx, *extra):
    cmd = [BINARY, "perplexity", "--model", path, "--file", TEXT, "--ctx", ctx, *extra]
    t0 = time.perf_counter()
    p = run(cmd, env=wick_env())
    m = PPL_RE.search(p.stdout)
    assert m, p.stdout + p.stderr
    return {"ppl": float(m[1]), "stderr": float(m[2]), "wall_s": time.perf_counter() - t0,
            "stderr_tail": p.stderr[-400:]}  # fmt: skip


def llama_ppl(path, ctx):
    """llama-perplexity's result, cached beside the file (it depends only on file, text, ctx)."""
    cache = path.with_name(f"{path.name}.llama-ppl-c{ctx}.json")
    if cache.exists():
        return json.loads(cache.read_text())
    cmd = [LLAMA_BIN / "llama-perplexity", "-m", path, "-f", TEXT, "-c", ctx, "-t", THREADS]
    t0 = time.perf_counter()
    p = run(cmd)
    m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", p.stdout + p.stderr)
    assert m, p.stderr[-2000:]
    r = {"ppl": float(m[1]), "stderr": float(m[2]), "wall_s": time.perf_counter() - t0,
         "command": " ".join(map(str, cmd))}  # fmt: skip
    cache.write_text(json.dumps(r))
    return r


def llama_bench(path):
    cmd = [LLAMA_BIN / "llama-bench", "-m", path, "-t", THREADS, "-p", 128, "-n", 32, "-r", 3,
           "-o", "json"]  # fmt: skip
    rows = json.loads(run(cmd).stdout)
    out = {}
    for r in rows:
        key = "prefill_tok_s" if r["n_prompt"] > 0 else "decode_tok_s"
        out[key] = r["avg_ts"]
        out[key + "_stddev"] = r["stddev_ts"]
    return out


def prompt_of(n):
    """A prompt of about n tokens: the text's first n tokens by the GGUF's tokenizer in
    transformers, decoded back (wick's stats line reports what it counted). Without PyTorch
    (transformers reads GGUF files through it), the longest whole-line prefix of the text that
    llama.cpp's llama-tokenize counts at most n tokens."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(SOURCE.parent, gguf_file=SOURCE.name)
    except (ImportError, ModuleNotFoundError):
        return prompt_by_llama_tokenize(n)
    ids = tok(TEXT.read_text(), add_special_tokens=False)["input_ids"][:n]
    return tok.decode(ids)


def prompt_by_llama_tokenize(n):
    def count(text):
        cmd = [LLAMA_BIN / "llama-tokenize", "-m", SOURCE, "-p", text, "--ids", "--log-disable",
               "--no-bos"]  # fmt: skip
        return len(json.loads(run(cmd).stdout.strip().splitlines()[-1]))

    lines = TEXT.read_text().splitlines(keepends=True)
    lo, hi = 1, len(lines)  # the longest prefix of lines with count <= n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count("".join(lines[:mid])) <= n else (lo, mid - 1)
    return "".join(lines[:lo])


def wick_speed(path, prompt, runs=3):
    cmd = [BINARY, "generate", "--model", path, "--temperature", "0", "--seed", "0",
           "--max-tokens", 32, "--logit-bias", "2=-inf", prompt]  # fmt: skip

    def once():
        p = run(cmd, env=wick_env())
        m = STATS_RE.search(p.stderr)
        assert m, p.stderr
        return {"prompt_tokens": int(m[1]), "prefill_tok_s": float(m[3]),
                "generated_tokens": int(m[4]), "decode_tok_s": float(m[5])}  # fmt: skip

    once()  # warm-up
    rs = [once() for _ in range(runs)]
    return {
        "prompt_tokens": rs[0]["prompt_tokens"],
        "prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in rs),
        "decode_tok_s": statistics.median(r["decode_tok_s"] for r in rs),
        "runs": rs,
    }


def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="/work/quant-out")
    ap.add_argument("--tiny", default=",".join(TINY), help="tiny models to run in K-quants "
                    "(comma-separated; empty for none)")  # fmt: skip
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if not args.skip_build:
        run(["nice", "cargo", "build", "--release", "-p", "wick-cli"], cwd=REPO)
    models = Path(args.models)
    prompt = None if args.skip_speed else prompt_of(128)
    results = {}
    cases = [(t, t, lambda t=t: quantized_file(models, t)) for t in args.types.split(",") if t]
    for name in filter(None, args.tiny.split(",")):
        for t in ["F32", *K_QUANTS]:
            cases.append((f"{name}_256 {t}", t, lambda n=name, t=t: tiny_quantized(models, n, t)))
    for key, t, make in cases:
        path = make()
        r = {"file": str(path), "size_bytes": path.stat().st_size, "types": type_census(path),
             "loadavg_before": os.getloadavg()}  # fmt: skip
        r["wick"] = wick_ppl(path, args.ctx)
        r["llama"] = llama_ppl(path, args.ctx)
        r["ppl_rel_diff"] = r["wick"]["ppl"] / r["llama"]["ppl"] - 1
        # Exact math on the file's values (dequantized, no activation rounding): how far each
        # program's quantized path is from it.
        r["wick_f32"] = wick_ppl(path, args.ctx, "--dtype", "f32")
        exact = r["wick_f32"]["ppl"]
        r["wick_vs_exact"] = r["wick"]["ppl"] / exact - 1
        r["llama_vs_exact"] = r["llama"]["ppl"] / exact - 1
        speed = not args.skip_speed and t == key  # tiny models: perplexity only
        if speed:
            r["wick_speed"] = wick_speed(path, prompt)
            r["llama_speed"] = llama_bench(path)
        r["loadavg_after"] = os.getloadavg()
        results[key] = r
        line = (f"{key}: wick PPL {r['wick']['ppl']:.4f} +/- {r['wick']['stderr']:.4f}, llama.cpp "
                f"{r['llama']['ppl']:.4f} +/- {r['llama']['stderr']:.4f} "
                f"({100 * r['ppl_rel_diff']:+.2f}%); exact (wick f32) {r['wick_f32']['ppl']:.4f}: "
                f"wick {100 * r['wick_vs_exact']:+.2f}%, llama.cpp "
                f"{100 * r['llama_vs_exact']:+.2f}%")  # fmt: skip
        if speed:
            line += (f"; prefill wick {r['wick_speed']['prefill_tok_s']:.1f} / llama.cpp "
                     f"{r['llama_speed']['prefill_tok_s']:.1f} tok/s, decode wick "
                     f"{r['wick_speed']['decode_tok_s']:.1f} / llama.cpp "
                     f"{r['llama_speed']['decode_tok_s']:.1f} tok/s")  # fmt: skip
        print(line + f"  [load {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f}]",
              flush=True)  # fmt: skip

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": cpu_model(),
        "threads": THREADS,
        "source_gguf": str(SOURCE.relative_to(REPO)),
        "text": str(TEXT.relative_to(REPO)),
        "ctx": args.ctx,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quant_cpu.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['cpu']}, {THREADS} threads, ctx {args.ctx}, {report['text']}, commit "
          f"{report['git_commit']}{' (dirty)' if report['git_dirty'] else ''}, {report['date']}\n")
    head = ("| type | stored types | wick PPL | llama.cpp PPL | wick vs llama.cpp | exact "
            "(wick f32) | wick vs exact | llama.cpp vs exact |")  # fmt: skip
    sep = "|---|---|---:|---:|---:|---:|---:|---:|"
    if not args.skip_speed:
        head += " prefill wick / llama.cpp tok/s | decode wick / llama.cpp tok/s |"
        sep += "---:|---:|"
    print(head + "\n" + sep)
    for t, r in results.items():
        census = ", ".join(f"{k} {v}" for k, v in sorted(r["types"].items(), key=lambda kv: -kv[1]))
        row = (f"| {t} | {census} | {r['wick']['ppl']:.4f} ± {r['wick']['stderr']:.4f} "
               f"| {r['llama']['ppl']:.4f} ± {r['llama']['stderr']:.4f} "
               f"| {100 * r['ppl_rel_diff']:+.2f}% | {r['wick_f32']['ppl']:.4f} "
               f"| {100 * r['wick_vs_exact']:+.2f}% | {100 * r['llama_vs_exact']:+.2f}% |")  # fmt: skip
        if "wick_speed" in r:
            w, ll = r["wick_speed"], r["llama_speed"]
            row += (f" {w['prefill_tok_s']:.0f} / {ll['prefill_tok_s']:.0f} "
                    f"| {w['decode_tok_s']:.1f} / {ll['decode_tok_s']:.1f} |")  # fmt: skip
        elif not args.skip_speed:
            row += " — | — |"
        print(row)


if __name__ == "__main__":
    main()
