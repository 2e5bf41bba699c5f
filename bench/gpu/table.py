"""Pairs wick's and PyTorch's `RESULT {json}` lines (same section and name) into one table.

    python3 bench/gpu/table.py wick.log torch.log [card name]
"""
import json
import sys


def read(path):
    rows = {}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("RESULT "):
                r = json.loads(line[len("RESULT "):])
                rows[(r["section"], r["name"])] = r
    return rows


def main():
    wick, torch = read(sys.argv[1]), read(sys.argv[2])
    card = sys.argv[3] if len(sys.argv) > 3 else "?"
    print(f"\n## wick vs PyTorch on {card}\n")
    print("| work | wick | PyTorch | wick ÷ PyTorch | wick detail | PyTorch detail |")
    print("|---|---|---|---|---|---|")
    for key in list(wick) + [k for k in torch if k not in wick]:
        w, t = wick.get(key), torch.get(key)
        unit = (w or t)["unit"]
        fmt = (lambda v: f"{v:,.1f}") if unit != "GiB" else (lambda v: f"{v:.2f}")
        wv = fmt(w["value"]) + f" {unit}" if w else "—"
        tv = fmt(t["value"]) + f" {unit}" if t else "—"
        ratio = f"{w['value'] / t['value']:.2f}×" if w and t and t["value"] else ""
        print(f"| {key[1]} | {wv} | {tv} | {ratio} | {w['extra'] if w else ''} "
              f"| {t['extra'] if t else ''} |")


if __name__ == "__main__":
    main()
