"""Compare two run folders (or sets of folders): log.csv rows and metrics.json in every key but the wall
times, text outputs byte for byte, and every tensor of checkpoint.pt / best.pt with torch.equal.
usage: compare.py A_ROOT B_ROOT run [run ...]      (compares A_ROOT/run with B_ROOT/run)
       compare.py --pairs A_DIR B_DIR [...]         (compares folders pairwise)"""
import csv, json, os, sys
import torch

WALL = {"train_time_s", "test_seconds", "val_seconds", "device"}


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: norm(k, v) for k, v in r.items() if k not in WALL and v != ""} for r in csv.DictReader(f)]


def norm(k, v):                      # the Acc classifier's file: the same name, in each side's --classifier_dir
    return os.path.basename(v) if k == "classifier" and v else v


def flat(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def compare(a, b):
    problems, checked = [], []
    ra, rb = rows(os.path.join(a, "log.csv")), rows(os.path.join(b, "log.csv"))
    checked.append(f"log.csv {len(ra)} rows")
    if ra != rb:
        for i, (x, y) in enumerate(zip(ra, rb)):
            if x != y:
                problems.append(f"log.csv row {i}: " + str({k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}))
        if len(ra) != len(rb):
            problems.append(f"log.csv: {len(ra)} vs {len(rb)} rows")
    ma, mb = (json.load(open(os.path.join(d, "metrics.json"))) for d in (a, b))
    ma, mb = ({k: norm(k, v) for k, v in m.items() if k not in WALL} for m in (ma, mb))
    checked.append(f"metrics.json {len(ma)} keys")
    if ma != mb:
        problems.append("metrics.json: " + str({k: (ma.get(k), mb.get(k)) for k in set(ma) | set(mb) if ma.get(k) != mb.get(k)}))
    for name in ("transfers.txt", "samples.txt", "responses.txt"):
        if os.path.exists(os.path.join(a, name)):
            checked.append(name)
            if open(os.path.join(a, name), "rb").read() != open(os.path.join(b, name), "rb").read():
                problems.append(f"{name} differs")
    for name in ("checkpoint.pt", "best.pt"):
        ca, cb = (torch.load(os.path.join(d, name), weights_only=True, map_location="cpu") for d in (a, b))
        if list(ca) != list(cb):
            problems.append(f"{name}: keys {list(ca)} vs {list(cb)}")
        n = 0
        for key in ca:
            if key in ("train_time_s",):
                continue
            fa, fb = dict(flat(ca[key])), dict(flat(cb.get(key)))
            if key == "config":
                fa = {k: v for k, v in fa.items() if not k.startswith(("/out_dir", "/data_dir", "/resume", "/max_steps", "/classifier_dir"))}
                fb = {k: v for k, v in fb.items() if not k.startswith(("/out_dir", "/data_dir", "/resume", "/max_steps", "/classifier_dir"))}
            if set(fa) != set(fb):
                problems.append(f"{name}/{key}: entries differ {sorted(set(fa) ^ set(fb))[:5]}")
            for k in fa:
                n += isinstance(fa[k], torch.Tensor)
                if k in fb and not same(fa[k], fb[k]):
                    problems.append(f"{name}/{key}{k} differs")
        checked.append(f"{name}: {len(ca)} keys, {n} tensors torch.equal")
    return checked, problems


if __name__ == "__main__":
    args = sys.argv[1:]
    pairs = list(zip(args[1::2], args[2::2])) if args[0] == "--pairs" else [(os.path.join(args[0], r), os.path.join(args[1], r)) for r in args[2:]]
    bad = 0
    for a, b in pairs:
        checked, problems = compare(a, b)
        print(f"{a} vs {b}: " + ("EQUAL" if not problems else f"{len(problems)} DIFFERENCES") + " (" + "; ".join(checked) + ")")
        for p in problems[:20]:
            print("   ", p)
        bad += bool(problems)
    sys.exit(1 if bad else 0)
