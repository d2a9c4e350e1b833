"""A diff of two runs' log.csv and metrics.json, every row written as sorted `key = value` lines, so that the
diff shows the values that differ and nothing else (a column added or moved in the file is no difference).
usage: normdiff.py A_DIR B_DIR"""
import csv, difflib, json, os, sys


def lines(d):
    out = []
    with open(os.path.join(d, "log.csv"), newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            out += [f"log.csv row {i} ({row['split']}, step {row['step']}): {k} = {v}" for k, v in sorted(row.items()) if v != ""]
    with open(os.path.join(d, "metrics.json"), encoding="utf-8") as f:
        out += [f"metrics.json: {k} = {json.dumps(v)}" for k, v in sorted(json.load(f).items())]
    return out


a, b = sys.argv[1:3]
la, lb = lines(a), lines(b)
diff = list(difflib.unified_diff(la, lb, a, b, n=0, lineterm=""))
print(f"# {a} vs {b}: {len(la)} and {len(lb)} key = value lines; {sum(l[:1] in '+-' for l in diff[2:])} differ")
print("\n".join(diff))
