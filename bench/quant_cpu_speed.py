"""CPU generation speed per GGUF file, wick vs llama.cpp's llama-bench, alternating, with the
memory-bandwidth floor of each decode figure and a greedy-text check against llama-completion.

Usage: CARGO_TARGET_DIR=... python bench/quant_cpu_speed.py [--types Q4_0,Q4_1,Q8_0,Q4_K_M]
       [--runs 5] [--prompt-tokens 168] [--max-tokens 128] [--pure]

Files: SmolLM2-135M-Instruct requantized by `llama-quantize --allow-requantize` from the Q4_1
GGUF the project fetches (Q4_1 is that file itself), with llama-quantize's default tensor mix
(`--pure`: every tensor the named type, as bench/quant_cpu.py's perplexity table uses).

Speed, 2 threads on both sides, per file: a warm-up of each, then `--runs` rounds, each one
`llama-bench -m F -t 2 -p P -n N -r 1` (pp: P prompt tokens from an empty cache; tg: N tokens
from an empty cache) and one `wick generate` of the same P-token text (wick's own stats line:
prefill tok/s of the prompt, decode tok/s of the N - 1 steps after it, greedy, EOS banned), the
order of the two swapped every round; the table gives medians. wick's decode attends over the
prompt too (P..P+N positions), llama-bench's tg over 0..N: if anything that favours llama.cpp.

Floor: bytes of weights read per token (every 2-D tensor of the file, the tied embedding once
as the LM head) over the read bandwidth bench/tools/membw.c measures with 2 threads (best of
8 passes over 1 GiB, before and after the runs, the larger kept).

Greedy check: 16 greedy tokens of 3 prompts, wick generate vs `llama-completion --temp 0`, the
texts compared; where they differ, wick's f32 path on the dequantized weights (no activation
rounding) as a third opinion. Writes bench/out/quant_cpu_speed.json and prints a Markdown table last.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quant_cpu as q  # noqa: E402

GREEDY_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Photosynthesis is the process by which",
]
GREEDY_TOKENS = 16


def model_file(models, t, pure):
    if t == "Q4_1" and not pure:
        return q.SOURCE
    path = models / f"smollm2-135m-{t}{'' if pure else '.mix'}.gguf"
    if not path.exists():
        models.mkdir(parents=True, exist_ok=True)
        extra = ["--pure"] if pure else []
        q.run([q.LLAMA_BIN / "llama-quantize", "--allow-requantize", *extra, q.SOURCE, path, t,
               q.THREADS])  # fmt: skip
    return path


def weight_bytes_per_token(path):
    """Bytes of the 2-D tensors a decode step reads in full: every matmul weight, and the token
    embedding only where it is also the LM head (no output.weight)."""
    sys.path.insert(0, str(q.GGUF_PY))
    import gguf

    tensors = [t for t in gguf.GGUFReader(path).tensors if len(t.shape) == 2]
    tied = not any(t.name == "output.weight" for t in tensors)
    return sum(int(t.n_bytes) for t in tensors if tied or t.name != "token_embd.weight")


def read_bandwidth_gbs():
    exe = q.OUT / "membw"
    q.OUT.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).resolve().parent / "tools" / "membw.c"
    q.run(["gcc", "-O3", "-march=native", "-fopenmp", src, "-o", exe])
    env = dict(os.environ, OMP_NUM_THREADS=str(q.THREADS))
    return float(q.run([exe], env=env).stdout.strip())


def llama_once(path, prompt_tokens, max_tokens):
    cmd = [q.LLAMA_BIN / "llama-bench", "-m", path, "-t", q.THREADS, "-p", prompt_tokens,
           "-n", max_tokens, "-r", 1, "-o", "json"]  # fmt: skip
    out = {}
    for r in json.loads(q.run(cmd).stdout):
        out["prefill_tok_s" if r["n_prompt"] > 0 else "decode_tok_s"] = r["avg_ts"]
    return out


def wick_once(path, prompt, max_tokens):
    cmd = [q.BINARY, "generate", "--model", path, "--temperature", "0", "--seed", "0",
           "--max-tokens", max_tokens, "--logit-bias", "2=-inf", prompt]  # fmt: skip
    p = q.run(cmd, env=q.wick_env())
    m = q.STATS_RE.search(p.stderr)
    assert m, p.stderr
    assert int(m[4]) == max_tokens, p.stderr
    return {"prompt_tokens": int(m[1]), "prefill_tok_s": float(m[3]),
            "decode_tok_s": float(m[5])}  # fmt: skip


def greedy_texts(path):
    def wick_text(prompt, *extra):
        return q.run([q.BINARY, "generate", "--model", path, "--temperature", "0",
                      "--max-tokens", GREEDY_TOKENS, "--logit-bias", "2=-inf", *extra, prompt],
                     env=q.wick_env()).stdout.rstrip("\n")  # fmt: skip

    rows = []
    for prompt in GREEDY_PROMPTS:
        wick = wick_text(prompt)
        llama = q.run([q.LLAMA_BIN / "llama-completion", "-m", path, "-p", prompt,
                       "-n", GREEDY_TOKENS, "--temp", 0, "-no-cnv", "--no-display-prompt",
                       "--ignore-eos", "--simple-io", "--no-warmup", "-t", q.THREADS],
                      stdin=subprocess.DEVNULL).stdout  # fmt: skip
        llama = llama.rstrip("\n")
        same = next((i for i, (a, b) in enumerate(zip(wick, llama)) if a != b),
                    min(len(wick), len(llama)))  # fmt: skip
        row = {"prompt": prompt, "wick": wick, "llama": llama, "equal": wick == llama,
               "common_prefix_chars": same}  # fmt: skip
        if wick != llama:
            # Which side exact f32 math on the same (dequantized) weights takes: where the two
            # quantized paths part, the top two tokens are within their rounding of each other.
            row["wick_f32"] = wick_text(prompt, "--dtype", "f32")
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="/work/quant-out")
    ap.add_argument("--types", default="Q4_0,Q4_1,Q8_0,Q4_K_M")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=168)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--pure", action="store_true")
    ap.add_argument("--skip-greedy", action="store_true")
    args = ap.parse_args()
    models = Path(args.models)
    prompt = q.prompt_of(args.prompt_tokens)
    bandwidth = [read_bandwidth_gbs()]
    results = {}
    for t in args.types.split(","):
        path = model_file(models, t, args.pure)
        r = {"file": str(path), "types": q.type_census(path),
             "bytes_per_token": weight_bytes_per_token(path), "loadavg_before": os.getloadavg()}
        w0 = wick_once(path, prompt, args.max_tokens)  # warm-up, and wick's prompt length
        llama_once(path, w0["prompt_tokens"], args.max_tokens)
        wick, llama = [], []
        for i in range(args.runs):
            for side in (["llama", "wick"] if i % 2 == 0 else ["wick", "llama"]):
                if side == "wick":
                    wick.append(wick_once(path, prompt, args.max_tokens))
                else:
                    llama.append(llama_once(path, w0["prompt_tokens"], args.max_tokens))
        r["prompt_tokens"] = w0["prompt_tokens"]
        r["wick_runs"], r["llama_runs"] = wick, llama
        for side, runs in [("wick", wick), ("llama", llama)]:
            for key in ["prefill_tok_s", "decode_tok_s"]:
                r[f"{side}_{key}"] = statistics.median(x[key] for x in runs)
        r["loadavg_after"] = os.getloadavg()
        if not args.skip_greedy:
            r["greedy"] = greedy_texts(path)
        results[t] = r
        print(f"{t}: prefill wick {r['wick_prefill_tok_s']:.0f} / llama.cpp "
              f"{r['llama_prefill_tok_s']:.0f}, decode wick {r['wick_decode_tok_s']:.1f} / "
              f"llama.cpp {r['llama_decode_tok_s']:.1f} tok/s; greedy equal "
              f"{sum(g['equal'] for g in r.get('greedy', []))}/{len(r.get('greedy', []))} "
              f"[load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}]", flush=True)
    bandwidth.append(read_bandwidth_gbs())
    gbs = max(bandwidth)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": q.git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(q.git("status", "--porcelain", "--untracked-files=no")),
        "cpu": q.cpu_model(),
        "threads": q.THREADS,
        "read_bandwidth_gbs": bandwidth,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "prompt": prompt,
        "results": results,
    }
    q.OUT.mkdir(parents=True, exist_ok=True)
    (q.OUT / "quant_cpu_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{report['cpu']}, {q.THREADS} threads, read bandwidth {gbs:.1f} GB/s "
          f"({', '.join(f'{b:.1f}' for b in bandwidth)}), commit {report['git_commit']}"
          f"{' (dirty)' if report['git_dirty'] else ''}, {report['date']}, median of "
          f"{args.runs}, prompt {args.prompt_tokens} tokens, {args.max_tokens} generated\n")
    print("| file | MB read/token | prefill wick | prefill llama.cpp | ratio | decode wick "
          "| decode llama.cpp | ratio | floor | wick / floor | llama.cpp / floor | greedy 16 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, r in results.items():
        floor = gbs * 1e9 / r["bytes_per_token"]
        wd, ld = r["wick_decode_tok_s"], r["llama_decode_tok_s"]
        wp, lp = r["wick_prefill_tok_s"], r["llama_prefill_tok_s"]
        g = r.get("greedy", [])
        print(f"| {t}{' --pure' if args.pure else ''} | {r['bytes_per_token'] / 1e6:.1f} "
              f"| {wp:.0f} | {lp:.0f} | {wp / lp:.2f}x | {wd:.1f} | {ld:.1f} | {wd / ld:.2f}x "
              f"| {floor:.0f} | {wd / floor:.0%} | {ld / floor:.0%} "
              f"| {sum(x['equal'] for x in g)}/{len(g)} |")


if __name__ == "__main__":
    main()
