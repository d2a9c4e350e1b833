import json, sys, os, csv
a, b = sys.argv[1], sys.argv[2]
ok = True
for f in ("metrics.json", "log.csv", "samples.txt", "fwd_rev_samples.txt", "interpolation.txt", "config.json"):
    pa, pb = os.path.join(a, f), os.path.join(b, f)
    if not os.path.exists(pa) and not os.path.exists(pb):
        continue
    if f.endswith(".json"):
        da, db = (json.load(open(p)) for p in (pa, pb))
        for d in (da, db):
            for k in ("train_time_s", "test_seconds", "out_dir"):
                d.pop(k, None)
        same = da == db
    elif f == "log.csv":
        ra, rb = ([{k: v for k, v in r.items() if k not in ("val_seconds", "train_time_s", "test_seconds")}
                   for r in csv.DictReader(open(p))] for p in (pa, pb))
        same = ra == rb
    else:
        same = open(pa).read() == open(pb).read()
    ok &= same
    print(f"{f}: {'equal' if same else 'DIFFERENT'}")
print("ALL EQUAL" if ok else "DIFFERENCES")
