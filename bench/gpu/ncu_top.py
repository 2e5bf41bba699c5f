"""Sums ncu's per-kernel summary (--print-summary per-kernel --csv) into a top-N table."""
import csv
import sys


def main(path, top=30):
    rows = []
    with open(path) as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        n = int(r.get("Invocations", "0").replace(",", "") or 0)
        avg = float(r["Average"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        scale = {"ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}.get(unit, 1e-6)
        rows.append((avg * n * scale, n, avg * scale, r["Kernel Name"][:90]))
    if not rows:
        print("no gpu__time_duration rows; the file starts:")
        print("".join(lines[:5]) or open(path).read()[:2000])
        return
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"total kernel time {total:.1f} ms over {sum(r[1] for r in rows)} launches")
    print(f"{'ms total':>10} {'%':>5} {'calls':>7} {'ms avg':>9}  kernel")
    for t, n, a, name in rows[:top]:
        print(f"{t:10.2f} {100 * t / total:5.1f} {n:7d} {a:9.4f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
