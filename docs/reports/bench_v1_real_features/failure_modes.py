"""Failure modes from per_frame.csv (ours and peer) of a bench-v1 eval run."""
import csv, json, sys, collections
import numpy as np
run, info = sys.argv[1], sys.argv[2]   # run folder, models_info.json
mi = json.load(open(info))
sym = {int(k): bool(v.get("symmetries_discrete") or v.get("symmetries_continuous")) for k, v in mi.items()}
def load(p):
    return list(csv.DictReader(open(p)))
def classify(rows):
    c = collections.Counter(); per_obj = collections.defaultdict(collections.Counter)
    rot_fail = []
    for r in rows:
        o = int(r["obj_id"]); d = float(r["diameter_m"])
        if r["found"] != "1" or r["add_m"] in ("", "nan", "inf"):
            k = "missing"
        else:
            e = float(r["adds_m"]) if sym[o] else float(r["add_m"])
            te = float(r["trans_err_cm"]) / 100.0
            re = float(r["rot_err_deg"])
            if e < 0.1 * d:
                k = "pass"
            elif te > 0.5 * d:
                k = "wrong place (centre > 0.5 d off)"
            elif float(r["adds_m"]) < 0.1 * d:
                k = "right place + surface (ADD-S ok), rotation wrong: flip/twin face" 
                rot_fail.append(re)
            else:
                k = "right place (centre < 0.5 d), pose off"
                rot_fail.append(re)
        c[k] += 1; per_obj[o][k] += 1
    return c, per_obj, rot_fail
for name, p in (("ours", f"{run}/per_frame.csv"), ("open3d_fpfh_icp", f"{run}/peers/open3d_fpfh_icp/per_frame.csv")):
    try:
        rows = load(p)
    except FileNotFoundError:
        print(name, "no per_frame.csv"); continue
    c, per_obj, rf = classify(rows)
    n = len(rows)
    print(f"## {name}: {n} instances, pooled ADD(-S)-0.1d {c['pass']}/{n} = {100*c['pass']/n:.1f} %")
    for k, v in c.most_common():
        print(f"  {k}: {v}")
    if rf:
        rf = np.array(rf)
        print(f"  rotation error of the non-passing found-at-right-place: median {np.median(rf):.0f} deg, >150 deg: {(rf>150).sum()}, 60-150: {((rf>60)&(rf<=150)).sum()}, <60: {(rf<=60).sum()}")
    print("  per object (sym):", {o: (sym[o], dict(v)) for o, v in sorted(per_obj.items())})
    lat = sorted({(r['scene_id'], r['im_id']): float(r['latency_ms']) for r in rows if r['latency_ms']}.values())
    print(f"  latency median over frames {np.median(lat):.0f} ms")
