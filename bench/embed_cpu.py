"""CPU embedding throughput: wick vs sentence-transformers (PyTorch), all-MiniLM-L6-v2, f32.

Usage (from anywhere): /root/refvenv/bin/python bench/embed_cpu.py [--model DIR] [--warmup W] [--runs R]

Cases: batch 1 and 32 at about 16 and 128 word pieces per text (incl. [CLS]/[SEP]). Both sides get
the same texts, batch size, thread count and dtype; each reports the median of R timed `encode` /
`embed` calls after W warm-ups, excluding process start and model load. Prints a Markdown table
last and writes raw numbers to bench/out/embed_cpu.json.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no extra tokenizer threads on either side

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
BINARY = REPO / "target" / "release" / "examples" / "embed_bench"

# (name, batch size, target tokens per text, number of texts)
CASES = [
    ("b1-16", 1, 16, 64),
    ("b32-16", 32, 16, 256),
    ("b1-128", 1, 128, 64),
    ("b32-128", 32, 128, 256),
]

SENTENCES = [
    "The museum reopened last spring after a long renovation of its east wing.",
    "Our team shipped the new billing service two weeks ahead of schedule.",
    "She planted tomatoes, basil and a row of sunflowers along the fence.",
    "Heavy rain is expected across the region on Thursday evening.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "He missed the last bus and walked home through the quiet streets.",
    "Researchers measured how quickly the glacier retreated over a decade.",
    "The library extended its opening hours during the exam period.",
    "A small bakery on the corner sells the best croissants in the city.",
    "The committee will publish its findings before the end of the month.",
    "Please restart the router if the connection keeps dropping.",
    "Migrating birds stop at the wetlands to rest and feed in autumn.",
    "The violinist practised the same difficult passage for hours.",
    "Several volunteers cleaned the beach early on Saturday morning.",
    "The startup raised funding to expand into three new markets.",
    "Children built a fort out of blankets, chairs and cardboard boxes.",
    "The bridge was closed overnight for routine safety inspections.",
    "Astronomers spotted a faint comet near the constellation Orion.",
    "The new policy gives employees more flexibility to work from home.",
    "Fresh snow covered the mountain trails after a cold night.",
    "The chef changes the menu every season to use local produce.",
    "Our flight was delayed because of fog at the departure airport.",
    "The documentary follows a family of elephants across the savanna.",
    "A software update fixed the battery drain that users reported.",
    "The old mill by the river has been turned into a community hall.",
    "Students debated whether cities should ban cars from the centre.",
    "The painter used bright colours to capture the harbour at dawn.",
    "Traffic on the ring road was slower than usual this morning.",
    "The hospital opened a new wing dedicated to children's care.",
    "He learned to juggle with three oranges during the summer holidays.",
    "The orchestra will perform a programme of Brahms and Dvořák.",
    "Farmers reported an unusually good harvest of apples this year.",
]


def make_texts(tokenizer, target, n):
    """n distinct texts of about `target` word pieces each, cut from a rotating sentence stream."""
    words = " ".join(SENTENCES).split()
    # Word pieces per whitespace word; BERT pre-tokenises on whitespace, so counts add up.
    pieces = [len(tokenizer.tokenize(w)) for w in words]
    texts = []
    for i in range(n):
        start, count, out = (i * 37) % len(words), 2, []  # 2 = [CLS] + [SEP]
        j = start
        while count + pieces[j % len(words)] <= target:
            out.append(words[j % len(words)])
            count += pieces[j % len(words)]
            j += 1
        texts.append(" ".join(out))
    assert len(set(texts)) == n, "texts should all differ"
    return texts


def time_st(model, texts, batch, warmup, runs):
    enc = lambda: model.encode(
        texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False
    )
    for _ in range(warmup):
        enc()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        vecs = enc()
        times.append(time.perf_counter() - t0)
    return times, vecs


def time_wick(model_dir, texts_path, vecs_path, batch, warmup, runs, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))  # candle's CPU kernels use rayon
    cmd = [
        str(BINARY), "--model", str(model_dir), "--texts", str(texts_path),
        "--batch-size", str(batch), "--warmup", str(warmup), "--runs", str(runs),
        "--vectors-out", str(vecs_path),
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1]), np.load(vecs_path)


def max_one_minus_cos(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float((1.0 - cos).max())


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    threads = len(os.sched_getaffinity(0))

    subprocess.run(
        ["cargo", "build", "--release", "--example", "embed_bench"], cwd=REPO, check=True
    )
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    print(f"threads: {threads} (torch.get_num_threads() = {torch.get_num_threads()})")
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)

    rows = []
    for name, batch, target, n in CASES:
        texts = make_texts(model.tokenizer, target, n)
        lens = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
        texts_path = OUT / f"embed_cpu_{name}.json"
        texts_path.write_text(json.dumps(texts))

        st_times, st_vecs = time_st(model, texts, batch, args.warmup, args.runs)
        wick, wick_vecs = time_wick(
            args.model, texts_path, OUT / f"embed_cpu_{name}.npy",
            batch, args.warmup, args.runs, threads,
        )  # fmt: skip
        st_dps = n / statistics.median(st_times)
        row = {
            "case": name,
            "batch_size": batch,
            "n_texts": n,
            "tokens_mean": statistics.mean(lens),
            "tokens_min": min(lens),
            "tokens_max": max(lens),
            "st_runs_s": st_times,
            "st_docs_per_s": st_dps,
            "wick_runs_s": wick["runs_s"],
            "wick_docs_per_s": wick["docs_per_s"],
            "wick_over_st": wick["docs_per_s"] / st_dps,
            "max_1_minus_cos": max_one_minus_cos(wick_vecs, st_vecs),
            "max_abs_diff": float(np.abs(wick_vecs - st_vecs).max()),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu": cpu_model(),
        "threads": threads,
        "dtype": "f32",
        "model": args.model,
        "warmup": args.warmup,
        "runs": args.runs,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence-transformers": sentence_transformers.__version__,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cases": rows,
    }
    (OUT / "embed_cpu.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{report['cpu']}, {threads} threads, f32, median of {args.runs} runs, "
          f"commit {report['git_commit']}{' (dirty)' if report['git_dirty'] else ''}\n")
    print("| case | tokens/text | ST docs/s | wick docs/s | wick/ST | max 1-cos |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| batch {r['batch_size']}, ~{r['tokens_mean']:.0f} tok | {r['tokens_mean']:.1f} "
              f"| {r['st_docs_per_s']:.1f} | {r['wick_docs_per_s']:.1f} "
              f"| {r['wick_over_st']:.2f}x | {r['max_1_minus_cos']:.1e} |")


if __name__ == "__main__":
    main()
