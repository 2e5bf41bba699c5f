"""Prefill/decode tok/s per GGUF quantization type, wick vs llama.cpp, one run each: the speed half
of bench/quant_cpu.py with fewer runs, for a machine too busy to run the whole harness in time.

Usage: CARGO_TARGET_DIR=... /root/refvenv/bin/python bench/quant_cpu_speed.py T1,T2,...

Per type, on the files bench/quant_cpu.py made under /work/quant-out: `llama-bench -t 2 -p 128
-n 32 -r 3` (its mean) and one `wick generate` of a 128-token prompt and 32 tokens after a warm-up
(RAYON_NUM_THREADS=2), with the load average before and after. Writes bench/out/quant_speed.json.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quant_cpu as q  # noqa: E402


def main():
    types = sys.argv[1].split(",")
    prompt = q.prompt_of(128)
    out = {}
    for t in types:
        p = Path("/work/quant-out") / f"smollm2-135m-{t}.gguf"
        la = os.getloadavg()
        ll = q.llama_bench(p)
        w = q.wick_speed(p, prompt, runs=1)
        out[t] = {"llama": ll, "wick": w, "loadavg_before": la, "loadavg_after": os.getloadavg()}
        print(f"{t}: prefill wick {w['prefill_tok_s']:.1f} / llama.cpp {ll['prefill_tok_s']:.1f}, "
              f"decode wick {w['decode_tok_s']:.1f} / llama.cpp {ll['decode_tok_s']:.1f} tok/s "
              f"(wick prompt {w['prompt_tokens']} tok) [load {la[0]:.1f}]", flush=True)  # fmt: skip
        q.OUT.mkdir(parents=True, exist_ok=True)
        (q.OUT / "quant_speed.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
