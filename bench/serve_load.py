"""Load test of `wick serve` on loopback (stdlib only: http.client + threads).

Usage: python3 bench/serve_load.py [--wick PATH] [--seconds 60] [--clients 64]
           [--embed-clients 32] [--embed-requests 25] [--hangup-share 0.25] [--only-mixed]

1. Mixed load: one server with SmolLM2-135M-Instruct (Q4_1 GGUF, kept quantized) and
   all-MiniLM-L6-v2. --clients concurrent clients (keep-alive connections) send mixed requests for
   --seconds: embeddings (1 to 4 texts), chat (max_tokens 16), streamed chat (max_tokens 16,
   SSE read to [DONE]) and completions (max_tokens 8), by a fixed per-client rotation. After the
   deadline no new request starts; in-flight ones finish. Counted: responses by status, 5xx,
   dropped connections (any socket error, reset or incomplete stream), the server's resident
   memory (VmRSS) before the load (after one warm-up request of each kind) and after it, and
   each live request's latency (send to last byte) by kind, reported as p50 / p99.
   With --hangup-share S > 0 the mixed load runs twice on fresh servers: first with no hang-ups,
   then with a share S of streamed requests (seeded per client) whose client hangs up at the first
   chunk (reads the first `data:` line, closes the socket, reconnects for its next request). It
   prints, per kind, the p99 of the live requests with hang-ups over the p99 without, and the
   server's cancellation counts. Acceptance (issue 11): every ratio within 2x, 0 5xx.
2. Embedding throughput: an embedding-only server, --embed-clients concurrent clients each sending
   --embed-requests requests of one short sentence, once with batching (the default token budget)
   and once with `--max-batch-tokens 0` (each request alone); requests per second for each.

The server inherits RAYON_NUM_THREADS (candle's CPU thread count). Records the CPU other
processes used meanwhile (machine busy time from /proc/stat minus this
harness and the server), since the machine may be shared. Writes bench/out/serve_load.json and
prints a Markdown summary.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GGUF = REPO / "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = REPO / "models/all-MiniLM-L6-v2"
SENTENCES = [
    "A man is eating food.",
    "The weather is lovely today.",
    "Rust makes systems programming safer.",
    "She plays the violin every evening.",
    "Stock markets fell sharply on Monday.",
    "A cat sleeps on the warm windowsill.",
]
QUESTIONS = ["What is the capital of France?", "Name three colours.", "Say hello.", "What is 7 times 6?"]


def clk():
    return os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / clk()


def process_cpu_s(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clk()  # utime + stime


def own_cpu_s():
    t = os.times()
    return t.user + t.system


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, wick, args):
        self.proc = subprocess.Popen(
            [wick, "serve", "--port", "0", *args], stderr=subprocess.PIPE, text=True
        )
        for line in self.proc.stderr:
            if "listening on http://" in line:
                hostport = line.split("listening on http://")[1].split()[0]
                self.host, port = hostport.rsplit(":", 1)
                self.port = int(port)
                break
        else:
            sys.exit("wick serve exited before listening")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        return self.proc.wait(timeout=120)


def post(conn, path, body, stream=False):
    """(status, ok) for one request on a keep-alive connection; raises on socket errors."""
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if stream and r.status == 200 and not data.rstrip().endswith(b"data: [DONE]"):
        raise ConnectionError("stream ended without [DONE]")
    return r.status


def post_and_hang_up(conn, path, body):
    """Sends a streamed request, reads up to its first `data:` line, and closes the socket."""
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status == 200:
        while not r.readline().startswith(b"data:"):
            pass
    conn.close()
    return r.status


def percentile(values, q):
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def metric(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def request_for(kind, i):
    if kind == "embed":
        n = 1 + i % 4
        return "/v1/embeddings", {"model": "minilm", "input": [SENTENCES[(i + k) % 6] for k in range(n)]}, False
    msgs = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
    if kind == "chat":
        return "/v1/chat/completions", {"model": "smollm2", "messages": msgs, "max_tokens": 16}, False
    if kind == "stream":
        body = {"model": "smollm2", "messages": msgs, "max_tokens": 16, "stream": True}
        return "/v1/chat/completions", body, True
    return "/v1/completions", {"model": "smollm2", "prompt": QUESTIONS[i % 4], "max_tokens": 8}, False


ROTATION = ["embed", "chat", "embed", "stream", "embed", "completion"]


def run_clients(server, clients, work):
    """work(client, conn, stats) in `clients` threads; returns merged stats and wall time."""
    stats = [dict(status={}, dropped=0, errors=[], done=0, hung_up=0, latency={}) for _ in range(clients)]

    def client(c):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=300)
        work(c, conn, stats[c], lambda: http.client.HTTPConnection(server.host, server.port, timeout=300))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    merged = dict(status={}, dropped=0, errors=[], done=0, hung_up=0, latency={})
    for s in stats:
        for k, v in s["status"].items():
            merged["status"][k] = merged["status"].get(k, 0) + v
        for k, v in s["latency"].items():
            merged["latency"].setdefault(k, []).extend(v)
        merged["dropped"] += s["dropped"]
        merged["errors"] += s["errors"][:3]
        merged["done"] += s["done"]
        merged["hung_up"] += s["hung_up"]
    return merged, wall


def one(conn_box, stats, path, body, stream, reconnect, kind=None, hang_up=False):
    """One request; a live one's latency is recorded under `kind`; `hang_up` drops the
    connection at the first chunk (then reconnects)."""
    try:
        t0 = time.perf_counter()
        if hang_up:
            status = post_and_hang_up(conn_box[0], path, body)
            conn_box[0] = reconnect()
            stats["hung_up"] += 1
        else:
            status = post(conn_box[0], path, body, stream)
            if kind is not None and status == 200:
                stats["latency"].setdefault(kind, []).append(time.perf_counter() - t0)
        stats["status"][status] = stats["status"].get(status, 0) + 1
        stats["done"] += 1
    except (OSError, http.client.HTTPException) as e:
        stats["dropped"] += 1
        stats["errors"].append(repr(e))
        conn_box[0].close()
        conn_box[0] = reconnect()


def mixed(wick, seconds, clients, hangup_share=0.0):
    server = Server(wick, ["--model", str(GGUF), "--model-name", "smollm2", "--embedding-model",
                           str(MINILM), "--embedding-model-name", "minilm"])
    warm = http.client.HTTPConnection(server.host, server.port, timeout=300)
    for kind in ["embed", "chat", "stream", "completion"]:
        post(warm, *request_for(kind, 0)[:2], stream=request_for(kind, 0)[2])
    rss_before = rss_mib(server.proc.pid)
    deadline = time.perf_counter() + seconds

    def work(c, conn, stats, reconnect):
        box, i = [conn], 0
        rng = random.Random(1000 + c)  # the same hang-up pattern on every run
        while time.perf_counter() < deadline:
            kind = ROTATION[(c + i) % len(ROTATION)]
            path, body, stream = request_for(kind, c + i)
            hang_up = kind == "stream" and rng.random() < hangup_share
            one(box, stats, path, body, stream, reconnect, kind=kind, hang_up=hang_up)
            i += 1

    cpu0 = (machine_busy_s(), own_cpu_s(), process_cpu_s(server.proc.pid))
    stats, wall = run_clients(server, clients, work)
    cpu1 = (machine_busy_s(), own_cpu_s(), process_cpu_s(server.proc.pid))
    rss_after = rss_mib(server.proc.pid)
    probe = http.client.HTTPConnection(server.host, server.port, timeout=60)
    probe.request("GET", "/metrics")
    metrics_text = probe.getresponse().read().decode()
    exit_code = server.stop()
    latency = {k: dict(n=len(v), p50_s=percentile(v, 50), p99_s=percentile(v, 99))
               for k, v in sorted(stats["latency"].items())}
    cancelled = {stage: metric(metrics_text, f'wick_generations_cancelled_total{{stage="{stage}"}}')
                 for stage in ["queued", "running"]}
    foreign = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])) / wall
    fivexx = sum(v for k, v in stats["status"].items() if k >= 500)
    return dict(clients=clients, seconds=seconds, hangup_share=hangup_share, wall_s=wall,
                requests=stats["done"], hung_up=stats["hung_up"], live_latency=latency,
                cancelled=cancelled, status=stats["status"], five_xx=fivexx, dropped=stats["dropped"],
                errors=stats["errors"][:5], rss_before_mib=rss_before, rss_after_mib=rss_after,
                server_cpu_cores=(cpu1[2] - cpu0[2]) / wall, foreign_cpu_cores=foreign,
                server_exit_code=exit_code)


def embed_throughput(wick, clients, requests, batching):
    extra = [] if batching else ["--max-batch-tokens", "0"]
    server = Server(wick, ["--embedding-model", str(MINILM), "--embedding-model-name", "minilm", *extra])
    warm = http.client.HTTPConnection(server.host, server.port, timeout=300)
    for i in range(8):
        post(warm, "/v1/embeddings", {"model": "minilm", "input": SENTENCES[i % 6]})

    def work(c, conn, stats, reconnect):
        box = [conn]
        for i in range(requests):
            body = {"model": "minilm", "input": SENTENCES[(c + i) % 6]}
            one(box, stats, "/v1/embeddings", body, False, reconnect)

    cpu0 = (machine_busy_s(), own_cpu_s(), process_cpu_s(server.proc.pid))
    stats, wall = run_clients(server, clients, work)
    cpu1 = (machine_busy_s(), own_cpu_s(), process_cpu_s(server.proc.pid))
    server.stop()
    foreign = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])) / wall
    ok = stats["status"].get(200, 0)
    return dict(batching=batching, clients=clients, requests=stats["done"], ok=ok,
                dropped=stats["dropped"], wall_s=wall, requests_per_s=ok / wall,
                foreign_cpu_cores=foreign)


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def print_mixed(m, label):
    print(f"| {label}: clients × seconds | {m['clients']} × {m['seconds']:.0f} s (wall {m['wall_s']:.1f} s) |")
    print(f"| {label}: requests completed / by status | {m['requests']} / {m['status']} |")
    print(f"| {label}: 5xx / dropped connections | {m['five_xx']} / {m['dropped']} |")
    print(f"| {label}: streamed requests hung up / cancelled queued, running | {m['hung_up']} / "
          f"{m['cancelled']['queued']:.0f}, {m['cancelled']['running']:.0f} |")
    lat = ", ".join(f"{k} {v['p50_s']:.2f} / {v['p99_s']:.2f} s (n={v['n']})"
                    for k, v in m["live_latency"].items())
    print(f"| {label}: live latency p50 / p99 by kind | {lat} |")
    print(f"| {label}: server RSS before → after | {m['rss_before_mib']:.0f} MiB → {m['rss_after_mib']:.0f} MiB |")
    print(f"| {label}: other processes' CPU | {m['foreign_cpu_cores']:.2f} cores |")


def hangup_ratios(calm, hung):
    """p99 of live requests with hang-ups / without, per kind (None where a run has none)."""
    out = {}
    for kind, c in calm["live_latency"].items():
        h = hung["live_latency"].get(kind)
        out[kind] = None if not h or not c["p99_s"] else h["p99_s"] / c["p99_s"]
    return out


def main():
    ap = argparse.ArgumentParser()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    ap.add_argument("--wick", default=str(target / "release" / "wick"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--embed-clients", type=int, default=32)
    ap.add_argument("--embed-requests", type=int, default=25)
    ap.add_argument("--hangup-share", type=float, default=0.0,
                    help="> 0: run the mixed load without, then with this share of streamed "
                         "requests hung up at their first chunk, and compare live p99s")
    ap.add_argument("--only-mixed", action="store_true", help="skip the embedding throughput runs")
    a = ap.parse_args()
    if not 0.0 <= a.hangup_share <= 1.0:
        sys.exit(f"--hangup-share {a.hangup_share}: give a share between 0 and 1")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               commit=commit, cpu=cpu_model(), cores=os.cpu_count(), loadavg_start=os.getloadavg(),
               rayon_num_threads=os.environ.get("RAYON_NUM_THREADS"))
    out["mixed"] = mixed(a.wick, a.seconds, a.clients)
    print("mixed:", json.dumps(out["mixed"]), flush=True)
    if a.hangup_share > 0:
        out["mixed_hangups"] = mixed(a.wick, a.seconds, a.clients, a.hangup_share)
        print("mixed with hang-ups:", json.dumps(out["mixed_hangups"]), flush=True)
        out["hangup_p99_ratio"] = hangup_ratios(out["mixed"], out["mixed_hangups"])
    if not a.only_mixed:
        out["embed_batched"] = embed_throughput(a.wick, a.embed_clients, a.embed_requests, True)
        print("embed batched:", json.dumps(out["embed_batched"]), flush=True)
        out["embed_unbatched"] = embed_throughput(a.wick, a.embed_clients, a.embed_requests, False)
        print("embed unbatched:", json.dumps(out["embed_unbatched"]), flush=True)
        ratio = out["embed_batched"]["requests_per_s"] / max(out["embed_unbatched"]["requests_per_s"], 1e-9)
        out["embed_batching_speedup"] = ratio
    out["loadavg_end"] = os.getloadavg()
    (REPO / "bench/out").mkdir(parents=True, exist_ok=True)
    (REPO / "bench/out/serve_load.json").write_text(json.dumps(out, indent=1))
    print(f"\n{out['date']} commit {commit}, {out['cpu']} ({out['cores']} cores), "
          f"loadavg at start {out['loadavg_start']}, RAYON_NUM_THREADS={out['rayon_num_threads']}")
    print("| measure | value |\n|---|---|")
    print_mixed(out["mixed"], "mixed load")
    if a.hangup_share > 0:
        print_mixed(out["mixed_hangups"], f"with {a.hangup_share:.0%} of streams hung up")
        ratios = out["hangup_p99_ratio"]
        shown = ", ".join(f"{k} {'n/a' if r is None else f'{r:.2f}×'}" for k, r in ratios.items())
        print(f"| live p99 with hang-ups / without | {shown} |")
        worst = max((r for r in ratios.values() if r is not None), default=None)
        fivexx = out["mixed"]["five_xx"] + out["mixed_hangups"]["five_xx"]
        ok = worst is not None and worst <= 2.0 and fivexx == 0
        print(f"| acceptance (every live p99 within 2×, 0 5xx) | "
              f"{'pass' if ok else 'FAIL'} (worst {worst if worst is None else f'{worst:.2f}×'}, "
              f"{fivexx} 5xx) |")
    if not a.only_mixed:
        for k in ["embed_batched", "embed_unbatched"]:
            e = out[k]
            print(f"| embeddings, {e['clients']} clients, {'batched' if e['batching'] else 'one by one'} "
                  f"| {e['requests_per_s']:.1f} req/s ({e['ok']} ok, {e['dropped']} dropped; other "
                  f"processes {e['foreign_cpu_cores']:.2f} cores) |")
        print(f"| batching speed-up | {out['embed_batching_speedup']:.2f}× |")


if __name__ == "__main__":
    main()
