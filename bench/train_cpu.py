"""CPU LoRA training: wick vs mlx-lm, SmolLM2-135M-Instruct, tok/s and peak memory.

Usage (from anywhere): /root/refvenv/bin/python bench/train_cpu.py [--steps N] [--warmup W]
    [--mlx-budget S] [--deadline HH:MM] [--configs NAME,...] [--skip-build]

Configurations, each its own process under `/usr/bin/time -v` (peak RSS = its "Maximum resident
set size", the same for every row):
  wick f32               `wick train --dtype f32` on the Q4_1 GGUF: dequantized at load
  wick Q4_1 base         `wick train --quantized-base`: the GGUF's Q4_1 blocks stay in memory and
                         each weight is dequantized on use, forward and backward (QLoRA-style)
  mlx f32 [BLAS]         mlx-lm's trainer (`mlx_lm.tuner.trainer.train`, what `mlx_lm.lora` runs)
                         on bench/out/smollm2_135m_hf_f32 (transformers' dequantization of the
                         same GGUF, written by bench/generate_cpu.py)
  mlx 4-bit [BLAS]       the same on bench/out/smollm2_135m_mlx_q4_g32 (mlx_lm.convert, affine
                         4-bit, groups of 32): mlx-lm's QLoRA-style run, base kept quantized
Each mlx configuration runs with the BLAS its wheel bundles (reference BLAS) and with OpenBLAS
through LD_PRELOAD (checked as in generate_cpu.py).

Same settings on both sides: data/chatterbot/train.jsonl ({"messages"} chat data, rendered with
the model's chat template: wick the GGUF's, mlx-lm the HF folder's copy of it, through mlx-lm's
ChatDataset); prompt masking OFF on both (wick --train-on-all, mlx-lm mask_prompt=False: mlx-lm's
masking keeps only the last assistant turn and wick's every assistant turn, which differ on the
multi-turn conversations); LoRA rank 8, alpha 16 (mlx-lm scale = alpha/rank = 2.0), dropout 0,
on self_attn.q_proj and self_attn.v_proj of all 30 layers; batch 4; sequences truncated to 128
tokens; AdamW lr 1e-4 constant, betas (0.9, 0.999), eps 1e-8, weight decay 0, bias correction on
(mlx's default is off), no gradient clipping (wick --max-grad-norm 0; mlx-lm has none); seed 0.

Same batches in the same order: wick sorts examples by (truncated) length, cuts batches of 4 and
visits them in a seeded shuffle, which it records in its checkpoint (trainer_state.json,
epoch_order). The mlx workers rebuild those batches from mlx-lm's own tokenization and replace
mlx-lm's batch iterator (which would sort by untruncated length and shuffle with numpy) with one
that yields them in wick's order, padded exactly as mlx-lm's `iterate_batches` pads (to 1 + a
multiple of 32, capped at 128). Per step, the harness checks that the batch's token count equals
the one wick logged.

Tokens: the real (non-padding) tokens of each batch after truncation, the same number on both
sides (wick's metrics.jsonl `tokens`; recomputed from the batch for mlx). mlx-lm's own Tokens/sec
counts the positions its loss mask selects, which is not the same thing (kept in the JSON as
mlx_ntoks).

Timing: per-step wall time between consecutive step completions (wick: when each line of
OUT/metrics.jsonl appears, polled every 5 ms; mlx: the trainer's per-step report callback,
steps_per_report = 1, which follows mx.eval of the step). Steady state = steps after the first W,
also leaving out every step whose padded batch width had not occurred before (MLX compiles its
step function once per input shape; those steps carry the compile), unless that leaves nothing.
tok/s = tokens of those steps / their time. Every mlx row is compared with wick over exactly its
own timed steps (the batches are identical). Slow configurations stop early: an mlx run takes no
new step once its training time plus its last step would exceed --mlx-budget seconds (after at
least 2 steps; then W = 1).

Prints a Markdown table last and writes raw per-step numbers to bench/out/train_cpu.json.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_cpu as gen  # noqa: E402  (BLAS checks, CPU accounting, paths, model folders)

REPO = gen.REPO
OUT = gen.OUT
RUNS = OUT / "train_cpu_runs"
BINARY = gen.BINARY
GGUF = gen.GGUF
HF_F32 = gen.HF_F32
MLX_Q4 = gen.MLX_Q4
OPENBLAS = gen.OPENBLAS
TIME = "/usr/bin/time"
DATA_DIR = REPO / "data" / "chatterbot"

RANK, ALPHA, DROPOUT = 8, 16.0, 0.0
TARGETS = ["q_proj", "v_proj"]
BATCH, MAX_LEN, LR, SEED = 4, 128, 1e-4, 0
PAD_TO = 32  # mlx-lm's iterate_batches pads to 1 + a multiple of this

CONFIGS = {
    # name: (side, model, blas)
    "wick f32": ("wick", "f32", None),
    "wick Q4_1 base": ("wick", "q4_1", None),
    "mlx f32 + OpenBLAS": ("mlx", HF_F32, "openblas"),
    "mlx f32 default BLAS": ("mlx", HF_F32, "default"),
    "mlx 4-bit default BLAS": ("mlx", MLX_Q4, "default"),
    "mlx 4-bit + OpenBLAS": ("mlx", MLX_Q4, "openblas"),
}


def mlx_width(lengths, max_len=MAX_LEN):
    """The padded width mlx-lm's iterate_batches gives a batch (before the inputs drop one)."""
    return min(1 + PAD_TO * ((max(lengths) + PAD_TO - 1) // PAD_TO), max_len)


def wick_batches(token_lists, batch_size=BATCH, max_len=MAX_LEN):
    """wick's batching (crates/wick/src/train/batch.rs): stable sort by truncated length, chunks
    of batch_size (a short last chunk kept)."""
    tl = [min(len(t), max_len) for t in token_lists]
    idx = sorted(range(len(token_lists)), key=lambda i: tl[i])
    return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]


# ---------------------------------------------------------------------------------------------
# Worker side: one mlx-lm training run (mlx imported only here, after LD_PRELOAD took effect)


def worker_mlx(args):
    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    import mlx.optimizers as optim
    import mlx_lm
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    report = {"blas": gen.blas_report(), "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__}
    system_openblas = os.path.realpath(OPENBLAS)
    report["openblas_mapped"] = system_openblas in report["blas"]["mapped"]
    report["openblas_binds"] = report["blas"]["cblas_sgemm_global"] == system_openblas

    t0 = time.perf_counter()
    model, tokenizer = load(args.model)
    mx.eval(model.parameters())
    report["load_s"] = time.perf_counter() - t0

    # mlx-lm's own tokenization of the chat data (ChatDataset.process, mask_prompt off).
    data = [json.loads(ln) for ln in Path(args.data).read_text().splitlines() if ln.strip()]
    ds = ChatDataset(data, tokenizer, mask_prompt=False)
    toks = []
    for d in data:
        t, offset = ds.process(d)
        assert offset == 0
        toks.append(list(t))
    report["examples"] = len(toks)
    report["tokens_total"] = sum(min(len(t), args.max_len) for t in toks)
    report["truncated"] = sum(len(t) > args.max_len for t in toks)

    batches = wick_batches(toks, args.batch_size, args.max_len)
    order = json.loads(Path(args.order).read_text())
    assert len(order) == len(batches), f"wick has {len(order)} batches, here {len(batches)}"
    plan = [batches[b] for b in order[: args.steps]]
    report["plan_tokens"] = [sum(min(len(toks[j]), args.max_len) for j in b) for b in plan]
    report["plan_widths"] = [mlx_width([len(toks[j]) for j in b], args.max_len) for b in plan]

    steps = []  # one dict per completed step
    clock = {"t_train0": None}

    class Recorder(TrainingCallback):
        def on_train_loss_report(self, info):
            steps.append({
                "t": time.perf_counter(),
                "loss": info["train_loss"],
                "mlx_it_s": info["iterations_per_second"],
                "mlx_tok_s": info["tokens_per_second"],
                "mlx_ntoks": info["tokens_per_second"] / info["iterations_per_second"],
                "mlx_peak_memory_gb": info["peak_memory"],
            })  # fmt: skip

    def iterate(dataset=None, batch_size=None, max_seq_length=None, loop=False, seed=None,
                comm_group=None):  # fmt: skip
        """wick's batches in wick's order, padded and truncated as mlx-lm's iterate_batches
        does (mlx_lm/tuner/trainer.py); stops early once the time budget would be exceeded."""
        for k, b in enumerate(plan):
            if k >= args.min_steps and steps:
                elapsed = steps[-1]["t"] - clock["t_train0"]
                last = steps[-1]["t"] - (steps[-2]["t"] if len(steps) > 1 else clock["t_train0"])
                if elapsed + last > args.budget:
                    break
            rows = [toks[j] for j in b]
            lengths = [len(r) for r in rows]
            width = mlx_width(lengths, max_seq_length)
            arr = np.zeros((len(rows), width), np.int32)
            for i, r in enumerate(rows):
                n = min(lengths[i], max_seq_length)
                arr[i, :n] = r[:n]
                lengths[i] = n
            yield mx.array(arr), mx.array(list(zip([0] * len(rows), lengths)))

    # As mlx_lm.lora's train_model: seed, freeze, LoRA on the last num_layers layers.
    mx.random.seed(SEED)
    model.freeze()
    n_layers = len(model.layers)
    linear_to_lora_layers(
        model, n_layers,
        {"rank": RANK, "scale": ALPHA / RANK, "dropout": DROPOUT,
         "keys": [f"self_attn.{t}" for t in TARGETS]},
    )  # fmt: skip
    report["lora_layers"] = n_layers
    report["trainable_params"] = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    opt = optim.AdamW(
        learning_rate=LR, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, bias_correction=True
    )
    targs = TrainingArgs(
        batch_size=args.batch_size, iters=args.steps, val_batches=0, steps_per_report=1,
        steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=args.max_len,
        adapter_file=str(Path(args.run_dir) / "adapters.safetensors"),
    )  # fmt: skip
    clock["t_train0"] = time.perf_counter()
    train(model, opt, ds, None, args=targs, iterate_batches=iterate, training_callback=Recorder())
    prev = clock["t_train0"]
    for s in steps:
        s["dur_s"] = s["t"] - prev
        prev = s.pop("t")
    report["steps"] = steps
    report["train_wall_s"] = time.perf_counter() - clock["t_train0"]
    Path(args.result).write_text(json.dumps(report))


# ---------------------------------------------------------------------------------------------
# Driver side


def popen_timed(cmd, env, run_dir, limit_s, on_poll=None):
    """Runs cmd under /usr/bin/time -v in its own session; returns (rc, peak RSS KiB, wall s).
    Kills its process group past limit_s."""
    rss_file = run_dir / "time_v.txt"
    with open(run_dir / "stdout.txt", "w") as so, open(run_dir / "stderr.txt", "w") as se:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [TIME, "-v", "-o", str(rss_file), *cmd], env=env, stdout=so, stderr=se,
            start_new_session=True,
        )  # fmt: skip
        while p.poll() is None:
            if on_poll:
                on_poll()
            if time.perf_counter() - t0 > limit_s:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        if on_poll:
            on_poll()
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", rss_file.read_text())
    return p.returncode, int(m[1]) if m else None, wall


def wick_command(gguf, train_file, run_dir, steps, quantized):
    base = ["--quantized-base"] if quantized else ["--dtype", "f32"]
    return [
        str(BINARY), "train", "--model", str(gguf), *base, "--data", str(train_file),
        "--out", str(run_dir), "--max-length", str(MAX_LEN), "--train-on-all",
        "--batch-size", str(BATCH), "--max-steps", str(steps), "--lr", str(LR),
        "--schedule", "constant", "--warmup-steps", "0", "--weight-decay", "0",
        "--max-grad-norm", "0", "--seed", str(SEED), "--save-every", "1000000",
        "--lora-r", str(RANK), "--lora-alpha", str(ALPHA), "--lora-dropout", str(DROPOUT),
        "--lora-targets", ",".join(TARGETS),
    ]  # fmt: skip


def run_wick(name, gguf, train_file, args, limit_s):
    run_dir = RUNS / name.replace(" ", "_")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env, _ = gen.clean_env()
    cmd = wick_command(gguf, train_file, run_dir, args.steps, CONFIGS[name][1] == "q4_1")
    metrics = run_dir / "metrics.jsonl"
    seen = []  # (arrival time, parsed line)
    t_start = time.perf_counter()

    def poll():
        try:
            text = metrics.read_text()
        except FileNotFoundError:
            return
        lines = text.split("\n")[:-1]  # complete lines only
        now = time.perf_counter()
        for ln in lines[len(seen) :]:
            seen.append((now, json.loads(ln)))

    rc, rss, wall = popen_timed(cmd, env, run_dir, limit_s, poll)
    stderr = (run_dir / "stderr.txt").read_text()
    assert rc == 0, f"wick train failed (rc {rc}):\n{stderr[-3000:]}"
    train_lines = [(t, m) for t, m in seen if m.get("kind") == "train"]
    steps, prev = [], t_start
    for t, m in train_lines:
        steps.append({"dur_s": t - prev, "loss": m["loss"], "tokens": m["tokens"]})
        prev = t
    m = re.search(r"(\d+) examples \((\d+) tokens, (\d+) trained\) from (\d+) records; (\d+) "
                  r"truncated", stderr)  # fmt: skip
    data_report = m and {"examples": int(m[1]), "tokens_total": int(m[2]),
                         "trained_tokens": int(m[3]), "truncated": int(m[5])}  # fmt: skip
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"))
    state = json.loads(states[-1].read_text())
    assert state["epoch"] == 0, "the run went past one epoch; the order file would be wrong"
    order_file = run_dir / "epoch_order.json"
    order_file.write_text(json.dumps(state["epoch_order"]))
    shown = ["target/release/wick", *cmd[1:]]
    shown = [s.replace(str(REPO) + "/", "") for s in shown]
    return {
        "command": " ".join(shown),
        "rc": rc,
        "peak_rss_kib": rss,
        "wall_s": wall,
        "steps": steps,
        "data_report": data_report,
        "n_batches": state["n_train_batches"],
        "order_file": str(order_file),
        "stderr_tail": stderr[-1500:],
    }


def run_mlx(name, model_dir, blas, train_file, order_file, args, limit_s):
    run_dir = RUNS / name.replace(" ", "_").replace("+", "plus")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env, removed = gen.clean_env()
    if blas == "openblas":
        env["LD_PRELOAD"] = OPENBLAS
    result = run_dir / "result.json"
    budget = min(args.mlx_budget, max(30.0, limit_s - 60))
    wargs = ["--worker", "mlx", "--model", str(model_dir), "--data", str(train_file),
             "--order", str(order_file), "--steps", str(args.steps), "--min-steps", "2",
             "--budget", f"{budget:.0f}", "--run-dir", str(run_dir), "--result", str(result)]  # fmt: skip
    cmd = [sys.executable, __file__, *wargs]
    rc, rss, wall = popen_timed(cmd, env, run_dir, limit_s)
    stderr = (run_dir / "stderr.txt").read_text()
    assert rc == 0 and result.exists(), f"mlx worker failed (rc {rc}):\n{stderr[-3000:]}"
    out = json.loads(result.read_text())
    want = blas == "openblas"
    assert out["openblas_mapped"] == want, f"OpenBLAS mapped = {out['openblas_mapped']}: {out}"
    assert out["openblas_binds"] == want, f"cblas_sgemm from {out['blas']['cblas_sgemm_global']}"
    for s, tok in zip(out["steps"], out["plan_tokens"]):
        s["tokens"] = tok
    shown = [("LD_PRELOAD=" + OPENBLAS) if want else "", Path(sys.executable).name,
             "bench/train_cpu.py", *[a.replace(str(REPO) + "/", "") for a in wargs]]  # fmt: skip
    out.update({"command": " ".join(s for s in shown if s), "rc": rc, "peak_rss_kib": rss,
                "wall_s": wall, "env_removed": removed, "budget_s": budget})  # fmt: skip
    return out


def timed_steps(n, widths, warmup):
    """1-based steps after the warm-up whose padded width occurred before (no MLX compile)."""
    w = warmup if n >= 3 * warmup else 1
    later = list(range(w + 1, n + 1))
    keep = [k for k in later if widths[k - 1] in widths[: k - 1]]
    return keep or later


def rate(steps, sel):
    tokens = sum(steps[k - 1]["tokens"] for k in sel)
    secs = sum(steps[k - 1]["dur_s"] for k in sel)
    return tokens / secs, tokens, secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=str(GGUF))
    ap.add_argument("--steps", type=int, default=35)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--mlx-budget", type=float, default=150.0,
                    help="seconds of training per mlx configuration before it stops early")
    ap.add_argument("--deadline", help="HH:MM UTC: skip configurations that cannot finish by then")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--skip-build", action="store_true")
    # worker mode
    ap.add_argument("--worker", choices=["mlx"])
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--order")
    ap.add_argument("--min-steps", type=int, default=2)
    ap.add_argument("--budget", type=float, default=1e9)
    ap.add_argument("--run-dir")
    ap.add_argument("--result")
    ap.add_argument("--batch-size", type=int, default=BATCH)
    ap.add_argument("--max-len", type=int, default=MAX_LEN)
    args = ap.parse_args()
    if args.worker == "mlx":
        return worker_mlx(args)

    started = time.perf_counter()
    deadline = None
    if args.deadline:
        now = datetime.datetime.now(datetime.timezone.utc)
        hh, mm = map(int, args.deadline.split(":"))
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if deadline < now:
            deadline += datetime.timedelta(days=1)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    assert names and names[0] == "wick f32", "wick f32 runs first: it fixes the batch order"
    assert all(n in CONFIGS for n in names), f"configurations: {list(CONFIGS)}"
    gguf = Path(args.gguf).resolve()
    threads = len(os.sched_getaffinity(0))
    _, removed = gen.clean_env()
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "-p", "wick-cli"], cwd=REPO, check=True)
    train_file = DATA_DIR / "train.jsonl"
    if not train_file.exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "chatterbot-to-jsonl.py")],
                       check=True)  # fmt: skip
    gen.prepare_models(gguf)
    OUT.mkdir(parents=True, exist_ok=True)
    RUNS.mkdir(parents=True, exist_ok=True)

    def left_s():
        if deadline is None:
            return 3600.0
        return (deadline - datetime.datetime.now(datetime.timezone.utc)).total_seconds()

    results, skipped = {}, {}
    json_path = OUT / "train_cpu.json"
    for name in names:
        side, model, blas = CONFIGS[name]
        limit = left_s()
        if limit < 90:
            skipped[name] = f"deadline: {limit:.0f} s left"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        t0, (m0, o0) = time.perf_counter(), gen.cpu_busy_s()
        if side == "wick":
            r = run_wick(name, gguf, train_file, args, limit)
            order_file = r["order_file"]  # the same seeded order for every wick row
        else:
            r = run_mlx(name, model, blas, train_file, order_file, args, limit)
        m1, o1 = gen.cpu_busy_s()
        r["foreign_cpu_cores"] = max(0.0, (m1 - m0) - (o1 - o0)) / (time.perf_counter() - t0)
        results[name] = r
        n = len(r["steps"])
        losses = [s["loss"] for s in r["steps"]]
        print(f"{name}: {n} steps in {r['wall_s']:.0f} s, peak RSS "
              f"{r['peak_rss_kib'] / 1024:.0f} MiB, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"step s: {' '.join('%.2f' % s['dur_s'] for s in r['steps'])} (other processes "
              f"used {r['foreign_cpu_cores']:.2f} cores meanwhile)", flush=True)
        if side == "mlx":
            w = results["wick f32"]
            same = [s["tokens"] for s in w["steps"][:n]] == [s["tokens"] for s in r["steps"]]
            r["batches_match_wick"] = same
            if not same:
                print("  WARNING: per-step token counts differ from wick's: the two sides "
                      "tokenized the data differently, so their batches are not identical",
                      flush=True)
            print(f"  cblas_sgemm in the global scope: {r['blas']['cblas_sgemm_global']}; "
                  f"trainable params {r['trainable_params']}; tokens {r['tokens_total']} "
                  f"(wick: {w['data_report'] and w['data_report']['tokens_total']}); mlx ntoks vs "
                  f"batch tokens, first steps: "
                  f"{[(round(s['mlx_ntoks']), s['tokens']) for s in r['steps'][:3]]}", flush=True)
        json_path.write_text(json.dumps({"partial": True, "configs": results}, indent=1) + "\n")

    # Steady-state selection: widths (hence MLX compiles) are a function of the batch, so the
    # first mlx report's plan holds them for every config.
    widths = next((r["plan_widths"] for r in results.values() if "plan_widths" in r), None)
    for name, r in results.items():
        n = len(r["steps"])
        sel = timed_steps(n, widths[:n] if widths else [0] * n, args.warmup)
        r["timed_steps"] = sel
        r["tok_s"], r["timed_tokens"], r["timed_s"] = rate(r["steps"], sel)
        # Each mlx row against wick with the same kind of base: f32, or quantized.
        mine = "wick Q4_1 base" if "4-bit" in name else "wick f32"
        if CONFIGS[name][0] == "mlx" and mine in results:
            w = results[mine]
            r["wick_tok_s_same_steps"] = rate(w["steps"], sel)[0]
            r["wick_over_mlx"] = r["wick_tok_s_same_steps"] / r["tok_s"]

    import mlx.core as mx
    import mlx_lm
    import transformers

    w = results.get("wick f32", {})
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": gen.git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(gen.git("status", "--porcelain", "--untracked-files=no")),
        "cpu": gen.cpu_model(),
        "threads": threads,
        "thread_settings": "defaults: wick's rayon pool and OpenBLAS's pthreads use every core; "
        "MLX's CPU kernels are its own",
        "env_removed": removed,
        "gguf": str(gguf.relative_to(REPO)) if gguf.is_relative_to(REPO) else str(gguf),
        "hf_f32_dir": str(HF_F32.relative_to(REPO)),
        "mlx_q4_dir": str(MLX_Q4.relative_to(REPO)),
        "data": str(train_file.relative_to(REPO)),
        "settings": {
            "lora_rank": RANK, "lora_alpha": ALPHA, "mlx_scale": ALPHA / RANK,
            "lora_dropout": DROPOUT, "targets": TARGETS, "layers": "all 30",
            "batch_size": BATCH, "max_length": MAX_LEN, "truncate": True, "optimizer":
            "AdamW lr 1e-4 constant, betas (0.9, 0.999), eps 1e-8, weight decay 0, bias "
            "correction, no clipping", "prompt_masking": "off on both sides", "seed": SEED,
            "steps": args.steps, "warmup_steps_excluded": args.warmup,
            "mlx_budget_s": args.mlx_budget,
        },  # fmt: skip
        "batch_widths_mlx": widths,
        "skipped": skipped,
        "versions": {
            "python": platform.python_version(),
            "mlx": mx.__version__,
            "mlx_lm": mlx_lm.__version__,
            "transformers": transformers.__version__,
            "wick": gen.run([str(BINARY), "--version"]).stdout.strip(),
            "rustc": gen.run(["rustc", "--version"]).stdout.strip(),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "total_wall_s": time.perf_counter() - started,
        "foreign_cpu_cores_max": max(r["foreign_cpu_cores"] for r in results.values()),
        "configs": results,
    }
    json_path.write_text(json.dumps(report, indent=1) + "\n")

    busy = {k: round(r["foreign_cpu_cores"], 2) for k, r in results.items()}
    if max(busy.values()) > 0.1:
        print(f"WARNING: other processes used CPU during the run (cores on average): {busy}")
    if skipped:
        print(f"skipped: {skipped}")
    dr = w.get("data_report") or {}
    print(f"\n{report['cpu']}, {threads} threads, SmolLM2-135M-Instruct, "
          f"{dr.get('examples')} chatterbot conversations ({dr.get('truncated')} truncated to "
          f"{MAX_LEN}), LoRA r {RANK} alpha {ALPHA:g} on q_proj,v_proj of all 30 layers, batch "
          f"{BATCH}, AdamW lr {LR:g}, prompt masking off on both sides; identical batches in the "
          f"same order on both sides; tok/s = real (non-padding) tokens per second over the "
          f"steady-state steps (after {args.warmup} warm-up steps, leaving out MLX's "
          f"first step at each new batch shape; slow mlx rows stop after ~{args.mlx_budget:.0f} s "
          f"with 1 warm-up step); wick/mlx compares wick over the same steps; peak RSS = "
          f"/usr/bin/time's max RSS of the whole process; commit {report['git_commit']}"
          f"{' (dirty)' if report['git_dirty'] else ''}, {report['date']}. wick/mlx compares "
          f"f32 rows with wick f32 and 4-bit rows with wick's Q4_1 base (--quantized-base).\n")
    print("| config | base | tok/s | peak RSS MiB | wick/mlx | loss first→last | timed steps |")
    print("|---|---|---:|---:|---:|---|---|")
    bases = {
        "wick f32": "f32 (Q4_1 GGUF dequantized at load)",
        "wick Q4_1 base": "Q4_1 GGUF kept quantized (--quantized-base)",
    }
    for name, r in results.items():
        base = bases.get(name) or ("f32 (HF folder)" if "f32" in name else "4-bit affine g32")
        label = "wick" if name.startswith("wick") else (
            "mlx-lm + OpenBLAS" if "OpenBLAS" in name else "mlx-lm, default BLAS")
        ratio = f"{r['wick_over_mlx']:.2f}x" if "wick_over_mlx" in r else "—"
        losses = [s["loss"] for s in r["steps"]]
        sel = r["timed_steps"]
        span = f"{len(sel)} of {len(r['steps'])} ({sel[0]}-{sel[-1]})"
        print(f"| {label} | {base} | {r['tok_s']:.1f} | {r['peak_rss_kib'] / 1024:.0f} | {ratio} "
              f"| {losses[0]:.3f}→{losses[-1]:.3f} (step {len(losses)}) | {span} |")


if __name__ == "__main__":
    main()
