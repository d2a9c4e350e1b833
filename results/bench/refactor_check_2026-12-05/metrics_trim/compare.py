"""compare.py BEFORE_DIR AFTER_DIR: a run's outputs, before vs after (wall times and out_dir left out)."""
import csv, hashlib, json, os, re, sys
a, b = sys.argv[1], sys.argv[2]
ok = True
names = sorted(set(os.listdir(a)) | set(os.listdir(b)))
for f in names:
    pa, pb = os.path.join(a, f), os.path.join(b, f)
    if not (os.path.isfile(pa) and os.path.isfile(pb)):
        print(f"{f}: only in one"); ok = False; continue
    if f.endswith(".pt"):
        continue                                         # checkpoints: pickles with paths; the numbers are in log/metrics
    if f.endswith(".json"):
        da, db = (json.load(open(p)) for p in (pa, pb))
        for d in (da, db):
            for k in ("train_time_s", "test_seconds", "val_seconds", "out_dir"):
                d.pop(k, None)
        same = da == db
    elif f == "log.csv":
        ra, rb = ([{k: v for k, v in r.items() if k not in ("val_seconds", "train_time_s", "test_seconds")}
                   for r in csv.DictReader(open(p))] for p in (pa, pb))
        same = ra == rb
    else:
        same = hashlib.md5(open(pa, "rb").read()).digest() == hashlib.md5(open(pb, "rb").read()).digest()
    ok &= same
    print(f"{f}: {'equal' if same else 'DIFFERENT'}")
print("ALL EQUAL" if ok else "DIFFERENCES")
