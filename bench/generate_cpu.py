"""CPU text generation: wick vs mlx-lm, SmolLM2-135M-Instruct, f32 and 4-bit, prefill and decode tok/s.

Usage (from anywhere): /root/refvenv/bin/python bench/generate_cpu.py [--gguf FILE] [--max-tokens N]
    [--warmup-tokens W] [--runs R]

Eight configurations, each in its own process(es):
  wick f32          `wick generate --dtype f32` on the GGUF (weights dequantized at load)
  wick quantized    `wick generate` on the GGUF as stored: Q4_1 blocks (token embedding / tied head
                    Q8_0), run by candle's Q4_1 kernels (crates/wick/src/ops/qmatmul.rs)
  mlx f32           mlx-lm on an HF folder that transformers wrote from the same GGUF
                    (`from_pretrained(gguf_file=..., dtype=float32)`): the same dequantized weights
  mlx 4-bit         `mlx_lm.convert` of that folder, affine 4-bit, group size 32 (scale + bias per
                    32 weights, the same idea as Q4_1's scale + min; embedding / tied head too), f32
                    activations, scales and biases (6.0 bits per weight; Q4_1 is 5.0). Where mlx
                    or mlx-lm cannot be imported (e.g. not installed), these rows say so and the
                    rest runs
  llama.cpp Q4_1    `llama-bench -m GGUF -t 2 -p P -n N -r R` on the same GGUF file (P = wick's
                    prompt token count, N = --max-tokens), llama.cpp's own Q4_1 kernels
  llama.cpp f32     the same on an F32 GGUF that `llama-quantize --allow-requantize` writes from
                    that file (the same dequantized weights), cached as bench/out/smollm2_135m_f32.gguf
llama-bench times a P-token prompt from an empty cache (pp) and N generated tokens from an empty
cache (tg), each repeated R times (its samples_ts are the runs); it generates without a prompt
and without sampling or detokenizing, so its decode is a little lighter work than wick's.
Both folders are cached under bench/out/. Writing the HF folder drops transformers' "gguf quantized"
tag (save_pretrained refuses it; the tensors are plain f32) and copies rope_parameters.rope_theta
to a top-level rope_theta, which mlx-lm's llama reads (without it RoPE would run with base 10000).
and each mlx configuration twice: with the BLAS its wheel bundles (mlx_cpu.libs/libblas, reference
BLAS) and with OpenBLAS loaded through LD_PRELOAD (its cblas_* symbols then win; checked in
/proc/self/maps and with threadpoolctl inside the worker).

Same chat-formatted prompt on both sides (wick renders the GGUF's chat template with `--chat`; the
mlx side renders the tokenizer's chat template and encodes it without special tokens, as wick
does; both prompt token counts are printed), greedy, and every EOS id banned on both sides
(wick: `--logit-bias ID=-inf`; mlx-lm: a logits processor adding -inf) so every run generates
exactly --max-tokens tokens.

Timing: wick's numbers are its own stats line (prefill = prompt tokens / time of the prompt
forward; decode = (generated - 1) / time from the prompt's logits to the end, which covers the
generated-1 decode forwards plus sampling and detokenizing). mlx-lm's come from `stream_generate`:
prefill is its prompt_tps (prompt tokens / time to the first token); decode is recomputed with
wick's definition, (generated - 1) / (generated / generation_tps), since mlx-lm's generation_tps
counts all N tokens over the N-1 steps after the first (its raw value is kept in the JSON). Each
wick run is a fresh process (`wick generate` loads the model each time; load time is not counted);
each mlx configuration is one process that loads once, warms up, then runs R times. Warm-up: one
run of --warmup-tokens tokens on the same prompt. Reported: median of R runs.

Greedy match: how many of the first 32 token ids mlx generated (f32 vs f32, 4-bit vs quantized)
decode to a prefix of wick's output text; the wick CLI prints text, not ids. The quantized pair
runs different quantizations of the weights, so an early divergence there is expected.

The harness also measures how much CPU other processes took during each timed run (machine busy
time from /proc/stat minus the harness's own and its children's): on 2 cores a concurrent build
halves whatever it overlaps. A run disturbed by more than 0.1 cores is repeated (up to --retries
extra runs per configuration), the R quietest are kept, and a warning is printed when a kept run
was still disturbed.

Prints a Markdown table last and writes raw runs to bench/out/generate_cpu.json.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
BINARY = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "wick"
GGUF = REPO / "models" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_F32 = OUT / "smollm2_135m_hf_f32"  # transformers' dequantization of the GGUF
MLX_Q4 = OUT / "smollm2_135m_mlx_q4_g32"  # mlx_lm.convert of HF_F32
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"
LLAMA_BIN = Path("/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin")
LLAMA_F32 = OUT / "smollm2_135m_f32.gguf"  # llama-quantize's F32 copy of the GGUF
LLAMA_THREADS = 2
MATCH_TOKENS = 32

PROMPT = (
    "Write a long, detailed story for children about a young fox named Pip who lives at the edge "
    "of a great forest. One autumn morning Pip finds a lost baby owl under an old oak tree and "
    "decides to help it find its way home. On the journey they cross a wide river, meet a grumpy "
    "badger, a kind old tortoise and a family of rabbits, get caught in a thunderstorm and shelter "
    "in a cave, and learn to trust each other. Describe the places they visit, what the animals "
    "say to each other and how Pip feels at each step. Give the story a beginning, a middle and a "
    "happy ending, and finish with the lesson Pip learns about friendship and courage."
)

STATS_RE = re.compile(
    r"prompt: (\d+) tokens(?: \((\d+) truncated\))?, prefill ([\d.]+) tok/s \| generated: (\d+) "
    r"tokens, decode ([\d.]+) tok/s \| finish: (\w+) \| seed: (\d+)"
)


# ---------------------------------------------------------------------------------------------
# Worker side (runs in its own process: mlx is imported only here, after LD_PRELOAD took effect)


def blas_report():
    """Which BLAS libraries this process has mapped, and what threadpoolctl sees."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    libs = sorted({ln.split()[-1] for ln in maps if re.search(r"blas|lapack", ln.split()[-1])})
    try:
        from threadpoolctl import threadpool_info

        pools = [
            {k: p.get(k) for k in ("internal_api", "filepath", "version", "num_threads")}
            for p in threadpool_info()
        ]
    except Exception as e:  # noqa: BLE001 - diagnostics only
        pools = f"threadpoolctl failed: {e}"
    return {"mapped": libs, "threadpoolctl": pools, "cblas_sgemm_global": global_symbol_lib()}


def global_symbol_lib(name="cblas_sgemm"):
    """The library that provides `name` in the global scope, or None. libmlx.so's undefined
    cblas_* symbols bind there first (main program, LD_PRELOAD, their dependencies) and fall back
    to its own dependency (the bundled reference libblas) only when the global scope has none."""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]  # fmt: skip

    libc = ctypes.CDLL(None)
    try:
        addr = ctypes.cast(getattr(libc, name), ctypes.c_void_p)
    except AttributeError:
        return None
    info = DlInfo()
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    if not libc.dladdr(addr, ctypes.byref(info)):
        return "?"
    return os.path.realpath(info.dli_fname.decode())


def worker_convert(args):
    from mlx_lm import convert

    convert(
        args.src, args.dst, quantize=True, q_bits=4, q_group_size=32, q_mode="affine",
        dtype="float32",
    )  # fmt: skip


def worker_mlx(args):
    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    import mlx_lm
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    report = {"blas": blas_report(), "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__}
    # The system OpenBLAS specifically: numpy brings its own (libscipy_openblas64_, with suffixed
    # symbols that MLX never calls).
    system_openblas = os.path.realpath(OPENBLAS)
    report["openblas_mapped"] = system_openblas in report["blas"]["mapped"]
    report["openblas_binds"] = report["blas"]["cblas_sgemm_global"] == system_openblas
    t0 = time.perf_counter()
    model, tokenizer = load(args.model)
    mx.eval(model.parameters())
    report["load_s"] = time.perf_counter() - t0
    messages = [{"role": "user", "content": args.prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False)
    banned = sorted(set(args.ban) | set(tokenizer.eos_token_ids))
    report["banned_ids"] = banned
    mask = mx.zeros((model.args.vocab_size,), dtype=mx.float32)
    mask[mx.array(banned)] = -float("inf")
    sampler = make_sampler(temp=0.0)

    def ban_eos(_tokens, logits):
        return logits + mask.astype(logits.dtype)

    def one_run(max_tokens):
        tokens, last, t_first, t_start = [], None, None, time.perf_counter()
        for r in stream_generate(
            model, tokenizer, mx.array(ids), max_tokens=max_tokens, sampler=sampler,
            logits_processors=[ban_eos],
        ):  # fmt: skip
            if t_first is None:
                t_first = time.perf_counter()
            tokens.append(int(r.token))
            last = r
        t_end = time.perf_counter()
        n = last.generation_tokens
        return {
            "prompt_tokens": int(last.prompt_tokens),
            "generated_tokens": n,
            "finish": last.finish_reason,
            "prefill_tok_s": last.prompt_tps,
            # wick's definition: N-1 decode steps over the time mlx-lm counted for N tokens.
            "decode_tok_s": (n - 1) / (n / last.generation_tps),
            "mlx_generation_tps_raw": last.generation_tps,
            "own_clock_prefill_tok_s": int(last.prompt_tokens) / (t_first - t_start),
            "own_clock_decode_tok_s": (n - 1) / (t_end - t_first),
            "token_ids": tokens,
        }

    report["prompt_tokens"] = len(ids)
    report["warmup"] = one_run(args.warmup_tokens)
    report["runs"], report["discarded_runs"] = quiet_runs(
        lambda: one_run(args.max_tokens), args.runs, args.retries
    )
    report["text"] = tokenizer.decode(report["runs"][0]["token_ids"])
    print(json.dumps(report))


# ---------------------------------------------------------------------------------------------
# Driver side


def run(cmd, env=None, **kw):
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, **kw)


def clean_env():
    """This process's environment minus OpenBLAS tuning variables (reported if any was set)."""
    env = dict(os.environ)
    removed = {k: env.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env}
    env.pop("LD_PRELOAD", None)
    return env, removed


def prepare_models(gguf):
    """The HF f32 folder (transformers' dequantization of the GGUF) and its mlx 4-bit conversion."""
    if not (HF_F32 / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"writing {HF_F32} (transformers dequantizes {gguf.name})", flush=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        assert tok.chat_template, "the GGUF tokenizer should carry a chat template"
        # The weights are plain f32 tensors by now; transformers only tags the model as "gguf
        # quantized", which save_pretrained refuses, so drop the tag.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        assert all(p.dtype == torch.float32 for p in model.parameters())
        model.save_pretrained(HF_F32)
        tok.save_pretrained(HF_F32)
        # transformers 5 writes RoPE's base only under rope_parameters; mlx-lm's llama reads
        # rope_theta and would silently fall back to 10000 (SmolLM2 uses 100000).
        cfg_path = HF_F32 / "config.json"
        cfg = json.loads(cfg_path.read_text())
        rope = cfg.get("rope_parameters") or {}
        assert rope.get("rope_type", "default") == "default", rope
        cfg.setdefault("rope_theta", rope.get("rope_theta", cfg.get("rope_theta")))
        assert cfg["rope_theta"] is not None
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    if MLX_MISSING is None and not (MLX_Q4 / "config.json").exists():
        print(f"writing {MLX_Q4} (mlx_lm.convert, 4-bit affine, group 32)", flush=True)
        env, _ = clean_env()
        cmd = [sys.executable, __file__, "--worker", "convert", "--src", str(HF_F32),
               "--dst", str(MLX_Q4)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True)


def mlx_missing():
    """Why mlx-lm cannot run here (None when it can): its rows then say so instead of failing."""
    import importlib.util

    for name in ("mlx", "mlx_lm"):
        try:
            if importlib.util.find_spec(name) is None:
                return f"{name} is not installed in {sys.executable}"
        except (ImportError, ValueError) as e:
            return f"{name} cannot be imported: {e}"
    return None


MLX_MISSING = mlx_missing()


def time_wick(gguf, dtype, args, ban):
    env, _ = clean_env()
    base = [str(BINARY), "generate", "--model", str(gguf)]
    if dtype:
        base += ["--dtype", dtype]
    base += ["--chat", "--temperature", "0", "--seed", "0"]
    for i in ban:
        base += ["--logit-bias", f"{i}=-inf"]

    def once(max_tokens):
        cmd = base + ["--max-tokens", str(max_tokens), PROMPT]
        p = run(cmd, env=env)
        m = STATS_RE.search(p.stderr)
        assert m, f"no stats line in wick's stderr:\n{p.stderr}"
        return {
            "prompt_tokens": int(m[1]),
            "generated_tokens": int(m[4]),
            "finish": m[6],
            "prefill_tok_s": float(m[3]),
            "decode_tok_s": float(m[5]),
            "stats_line": m[0],
            "text": p.stdout,
        }

    warm = once(args.warmup_tokens)
    runs, discarded = quiet_runs(lambda: once(args.max_tokens), args.runs, args.retries)
    cmd = base + ["--max-tokens", str(args.max_tokens), "PROMPT"]
    return {"command": " ".join(cmd), "warmup": warm, "runs": runs, "discarded_runs": discarded,
            "text": runs[0]["text"]}  # fmt: skip


def time_mlx(model_dir, blas, args, ban):
    env, removed = clean_env()
    if blas == "openblas":
        env["LD_PRELOAD"] = OPENBLAS
    cmd = [sys.executable, __file__, "--worker", "mlx", "--model", str(model_dir),
           "--prompt", PROMPT, "--max-tokens", str(args.max_tokens),
           "--warmup-tokens", str(args.warmup_tokens), "--runs", str(args.runs),
           "--retries", str(args.retries), "--ban", *map(str, ban)]  # fmt: skip
    out = json.loads(run(cmd, env=env).stdout.strip().splitlines()[-1])
    want = blas == "openblas"
    assert out["openblas_mapped"] == want, f"OpenBLAS mapped = {out['openblas_mapped']}: {out}"
    assert out["openblas_binds"] == want, f"cblas_sgemm from {out['blas']['cblas_sgemm_global']}"
    shown = [("LD_PRELOAD=" + OPENBLAS) if want else ""] + [
        Path(sys.executable).name, "bench/generate_cpu.py", "--worker", "mlx", "--model",
        str(model_dir.relative_to(REPO)), "--prompt", "PROMPT",
        "--max-tokens", str(args.max_tokens), "--warmup-tokens", str(args.warmup_tokens),
        "--runs", str(args.runs), "--retries", str(args.retries), "--ban", *map(str, ban),
    ]  # fmt: skip
    out["command"] = " ".join(s for s in shown if s)
    out["env_removed"] = removed
    return out


def time_llama(gguf, prompt_tokens, args):
    """llama-bench on `gguf`: R repetitions of a prompt_tokens prefill and a max_tokens decode."""
    env, _ = clean_env()
    cmd = [str(LLAMA_BIN / "llama-bench"), "-m", str(gguf), "-t", str(LLAMA_THREADS),
           "-p", str(prompt_tokens), "-n", str(args.max_tokens), "-r", str(args.runs),
           "-o", "json"]  # fmt: skip
    r = measured(lambda: {"rows": json.loads(run(cmd, env=env).stdout)})
    pp = next(x for x in r["rows"] if x["n_prompt"] > 0)
    tg = next(x for x in r["rows"] if x["n_gen"] > 0)
    runs = [
        {"prompt_tokens": prompt_tokens, "generated_tokens": args.max_tokens, "finish": "length",
         "prefill_tok_s": p, "decode_tok_s": d, "foreign_cpu_cores": r["foreign_cpu_cores"]}
        for p, d in zip(pp["samples_ts"], tg["samples_ts"])
    ]  # fmt: skip
    return {"command": " ".join(cmd), "llama_bench": r["rows"], "runs": runs,
            "discarded_runs": [], "build_commit": pp.get("build_commit"),
            "build_number": pp.get("build_number")}  # fmt: skip


def greedy_match(wick_text, mlx_ids, tokenizer, n=MATCH_TOKENS):
    """Leading mlx tokens (of the first n) whose decoded text is a prefix of wick's output."""
    k = 0
    for i in range(1, min(n, len(mlx_ids)) + 1):
        piece = tokenizer.decode(mlx_ids[:i], clean_up_tokenization_spaces=False)
        if "\ufffd" in piece[-1:]:  # an incomplete UTF-8 character: judge it with the next token
            continue
        if not wick_text.startswith(piece):
            break
        k = i
    return k


def cpu_busy_s():
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its waited-for
    children). Their difference over a stretch is what other processes used meanwhile."""
    import resource

    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(
        ru.ru_utime + ru.ru_stime
        for ru in (resource.getrusage(resource.RUSAGE_SELF),
                   resource.getrusage(resource.RUSAGE_CHILDREN))
    )  # fmt: skip
    return machine, own


QUIET = 0.1  # cores other processes may take during a run that is kept


def measured(fn):
    """fn()'s result with the CPU other processes took meanwhile, in cores on average."""
    (m0, o0), t0 = cpu_busy_s(), time.perf_counter()
    r = fn()
    wall = time.perf_counter() - t0
    m1, o1 = cpu_busy_s()
    r["foreign_cpu_cores"] = max(0.0, (m1 - m0) - (o1 - o0)) / wall
    return r


def quiet_runs(fn, runs, retries):
    """`runs` timed runs of fn. A run during which other processes took more than QUIET cores is
    repeated, up to `retries` extra runs in all; the `runs` quietest are kept (in order), the
    others returned as discarded."""
    done = []
    while len(done) < runs + retries:
        done.append(measured(fn))
        if sum(r["foreign_cpu_cores"] <= QUIET for r in done) >= runs:
            break
    keep = set(sorted(range(len(done)), key=lambda i: done[i]["foreign_cpu_cores"])[:runs])
    return ([r for i, r in enumerate(done) if i in keep],
            [r for i, r in enumerate(done) if i not in keep])  # fmt: skip


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=str(GGUF))
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--warmup-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--retries", type=int, default=3,
                    help="extra runs per configuration allowed to replace runs that other "
                    "processes disturbed")  # fmt: skip
    ap.add_argument("--skip-build", action="store_true")
    # worker modes
    ap.add_argument("--worker", choices=["mlx", "convert"])
    ap.add_argument("--model")
    ap.add_argument("--prompt")
    ap.add_argument("--ban", type=int, nargs="*", default=[])
    ap.add_argument("--src")
    ap.add_argument("--dst")
    args = ap.parse_args()
    if args.worker == "mlx":
        return worker_mlx(args)
    if args.worker == "convert":
        return worker_convert(args)

    started = time.perf_counter()
    gguf = Path(args.gguf).resolve()
    threads = len(os.sched_getaffinity(0))
    _, removed = clean_env()
    if removed:
        print(f"unset for every child process: {removed}")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "-p", "wick-cli"], cwd=REPO, check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    prepare_models(gguf)
    if not LLAMA_F32.exists():
        print(f"writing {LLAMA_F32} (llama-quantize F32 of {gguf.name})", flush=True)
        run([str(LLAMA_BIN / "llama-quantize"), "--allow-requantize", str(gguf), str(LLAMA_F32),
             "F32"])  # fmt: skip

    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(HF_F32)
    # Ban every EOS id either side knows: the GGUF's eos (2, <|im_end|>) and the tokenizer's.
    ban = sorted({2} | {tokenizer.eos_token_id} - {None})

    results = {}
    mlx_rows = {"mlx f32 default BLAS", "mlx f32 + OpenBLAS", "mlx 4-bit default BLAS",
                "mlx 4-bit + OpenBLAS"}  # fmt: skip
    if MLX_MISSING:
        print(f"mlx-lm rows skipped: {MLX_MISSING}", flush=True)
    plan = [
        ("wick f32", lambda: time_wick(gguf, "f32", args, ban)),
        ("wick quantized", lambda: time_wick(gguf, None, args, ban)),
        ("mlx f32 default BLAS", lambda: time_mlx(HF_F32, "default", args, ban)),
        ("mlx f32 + OpenBLAS", lambda: time_mlx(HF_F32, "openblas", args, ban)),
        ("mlx 4-bit default BLAS", lambda: time_mlx(MLX_Q4, "default", args, ban)),
        ("mlx 4-bit + OpenBLAS", lambda: time_mlx(MLX_Q4, "openblas", args, ban)),
        # The same prompt length as wick's (its chat-formatted prompt, counted by wick).
        ("llama.cpp f32", lambda: time_llama(
            LLAMA_F32, results["wick f32"]["runs"][0]["prompt_tokens"], args)),
        ("llama.cpp Q4_1", lambda: time_llama(
            gguf, results["wick quantized"]["runs"][0]["prompt_tokens"], args)),
    ]
    plan = [(n, f) for n, f in plan if not (MLX_MISSING and n in mlx_rows)]
    for name, fn in plan:
        t0, (m0, o0) = time.perf_counter(), cpu_busy_s()
        r = fn()
        r["wall_s"] = time.perf_counter() - t0
        m1, o1 = cpu_busy_s()
        # CPU that other processes took meanwhile, in cores on average (a quiet machine: ~0).
        r["foreign_cpu_cores"] = max(0.0, (m1 - m0) - (o1 - o0)) / r["wall_s"]
        r["loadavg_after"] = os.getloadavg()
        r["prefill_tok_s_median"] = med(r["runs"], "prefill_tok_s")
        r["decode_tok_s_median"] = med(r["runs"], "decode_tok_s")
        results[name] = r
        r["kept_runs_foreign_cpu_cores_max"] = max(x["foreign_cpu_cores"] for x in r["runs"])
        gen = sorted({x["generated_tokens"] for x in r["runs"]})
        fin = sorted({x["finish"] for x in r["runs"]})
        print(f"{name}: prompt {r['runs'][0]['prompt_tokens']} tok, generated {gen} "
              f"({', '.join(fin)}), prefill {r['prefill_tok_s_median']:.1f} tok/s, decode "
              f"{r['decode_tok_s_median']:.1f} tok/s  [runs: "
              f"{', '.join('%.1f/%.1f' % (x['prefill_tok_s'], x['decode_tok_s']) for x in r['runs'])}"
              f"] ({r['wall_s']:.0f} s; other processes used {r['foreign_cpu_cores']:.2f} "
              f"cores meanwhile, at most {r['kept_runs_foreign_cpu_cores_max']:.2f} during a kept "
              f"run; {len(r['discarded_runs'])} run(s) discarded)", flush=True)
        if "blas" in r:
            print(f"  cblas_sgemm in the global scope: {r['blas']['cblas_sgemm_global']}; BLAS/"
                  f"LAPACK mapped: {[Path(p).name for p in r['blas']['mapped']]}", flush=True)

    # Greedy agreement: wick's text vs the mlx ids of the same weights kind.
    pair = {"f32": "wick f32", "4-bit": "wick quantized"}
    for name, r in results.items():
        if name.startswith("mlx"):
            wick = results[pair[name.split()[1]]]
            r["greedy_match"] = greedy_match(wick["text"], r["runs"][0]["token_ids"], tokenizer)
            r["greedy_vs"] = pair[name.split()[1]]
    ids_same = (
        None
        if MLX_MISSING
        else {
            kind: results[f"mlx {kind} default BLAS"]["runs"][0]["token_ids"]
            == results[f"mlx {kind} + OpenBLAS"]["runs"][0]["token_ids"]
            for kind in ("f32", "4-bit")
        }
    )
    import torch

    if MLX_MISSING:
        mlx_version = mlx_lm_version = f"unavailable: {MLX_MISSING}"
    else:
        import mlx_lm

        mlx_version = results["mlx f32 default BLAS"]["mlx"]
        mlx_lm_version = mlx_lm.__version__

    busy = {k: round(r["kept_runs_foreign_cpu_cores_max"], 2) for k, r in results.items()}
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": cpu_model(),
        "threads": threads,
        "thread_settings": "defaults: wick's rayon pool and OpenBLAS's pthreads use every core; "
        "MLX's CPU kernels are its own",
        "env_removed": removed,
        "gguf": str(gguf.relative_to(REPO)) if gguf.is_relative_to(REPO) else str(gguf),
        "hf_f32_dir": str(HF_F32.relative_to(REPO)),
        "mlx_q4_dir": str(MLX_Q4.relative_to(REPO)),
        "mlx_unavailable": MLX_MISSING,
        "quantization_note": "wick runs the GGUF's Q4_1 blocks as stored "
        "(token embedding / tied head stored Q8_0); MLX runs its own affine 4-bit groups of 32 "
        "(scale + bias) made by mlx_lm.convert from the dequantized f32 weights",
        "prompt": PROMPT,
        "banned_token_ids": ban,
        "max_tokens": args.max_tokens,
        "warmup_tokens": args.warmup_tokens,
        "runs_per_config": args.runs,
        "greedy_match_tokens": MATCH_TOKENS,
        "mlx_ids_same_across_blas": ids_same,
        "versions": {
            "python": platform.python_version(),
            "mlx": mlx_version,
            "mlx_lm": mlx_lm_version,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "wick": run([str(BINARY), "--version"]).stdout.strip(),
            "rustc": run(["rustc", "--version"]).stdout.strip(),
            "llama.cpp": f"build {results['llama.cpp Q4_1']['build_number']} "
            f"({results['llama.cpp Q4_1']['build_commit']}), llama-cpp-python 0.3.36 sdist",
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "total_wall_s": time.perf_counter() - started,
        "quiet_threshold_cores": QUIET,
        "kept_runs_foreign_cpu_cores": busy,
        "configs": results,
    }
    (OUT / "generate_cpu.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\nmlx token ids identical across BLAS: {ids_same}")
    if max(busy.values()) > QUIET:
        print(f"WARNING: other processes took CPU during kept runs (cores, worst run): {busy}")
    print(f"wick texts (first 200 chars):\n  f32: {results['wick f32']['text'][:200]!r}\n"
          f"  quantized: {results['wick quantized']['text'][:200]!r}")
    print(f"\n{report['cpu']}, {threads} threads, greedy, {args.max_tokens} generated tokens "
          f"(EOS ids {ban} banned on both sides), median of {args.runs} runs after a warm-up, "
          f"commit {report['git_commit']}{' (dirty)' if report['git_dirty'] else ''}, "
          f"{report['date']}. Quantized: wick runs the GGUF's Q4_1 as stored, MLX its own affine 4-bit groups of 32. Greedy match: leading tokens "
          f"of mlx's first {MATCH_TOKENS} that decode to a prefix of wick's text.\n")
    print("| config | prompt tok | prefill tok/s | decode tok/s | wick/this decode ratio "
          "| greedy match |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [
        ("f32", "mlx-lm, default BLAS", "mlx f32 default BLAS"),
        ("f32", "mlx-lm + OpenBLAS", "mlx f32 + OpenBLAS"),
        ("f32", "wick", "wick f32"),
        ("quantized", "mlx-lm 4-bit g32, default BLAS", "mlx 4-bit default BLAS"),
        ("quantized", "mlx-lm 4-bit g32 + OpenBLAS", "mlx 4-bit + OpenBLAS"),
        ("quantized", "wick Q4_1", "wick quantized"),
        ("f32", "llama.cpp (llama-bench)", "llama.cpp f32"),
        ("quantized", "llama.cpp Q4_1 (llama-bench)", "llama.cpp Q4_1"),
    ]
    for kind, label, key in rows:
        if key not in results:
            print(f"| {kind}: {label} | — | unavailable | unavailable | — | {MLX_MISSING} |")
            continue
        r = results[key]
        if key.startswith("llama.cpp"):
            wick = results[pair["f32" if kind == "f32" else "4-bit"]]
            ratio = f"{wick['decode_tok_s_median'] / r['decode_tok_s_median']:.2f}x"
            match = "—"
        elif key.startswith("mlx"):
            wick = results[r["greedy_vs"]]
            ratio = f"{wick['decode_tok_s_median'] / r['decode_tok_s_median']:.2f}x"
            match = f"{r['greedy_match']}/{MATCH_TOKENS}"
        else:
            ratio, match = "—", "—"
        print(f"| {kind}: {label} | {r['runs'][0]['prompt_tokens']} "
              f"| {r['prefill_tok_s_median']:.1f} | {r['decode_tok_s_median']:.1f} "
              f"| {ratio} | {match} |")


if __name__ == "__main__":
    main()
