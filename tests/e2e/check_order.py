#!/usr/bin/env python3
"""Check, from the demo agents' own operation records (GET /v1/operations, wall-clock times),
that a Mesh rollout went tier by tier (cluster demo-<i+1> only after demo-<i>) and standby
first inside each cluster (member b upgraded, switched over to, then member a).

Usage: check_order.py OPS_DIR TARGET_VERSION DEMO_NAME CLUSTERS
OPS_DIR holds <pod>.json per demo agent pod <DEMO_NAME>-<a|b>-<i>. Used by kind.sh; tested by
tests/packaging/test_e2e_tools.py on records written by real agents (tests/e2e/testdata/).
"""
import datetime, json, pathlib, sys

ops_dir, target, demo, clusters = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ops = {p.stem: json.loads(p.read_text()) for p in ops_dir.glob("*.json")}
problems = []
for i in range(clusters):
    for m in ("a", "b"):
        if f"{demo}-{m}-{i}" not in ops:
            problems.append(f"no operation records for {demo}-{m}-{i} in {ops_dir}")

def at(ts):
    # Agents write RFC 3339 with up to nanoseconds; keep microseconds for fromisoformat.
    head, _, frac = ts.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")

for records in ops.values():
    for o in records:
        for k in ("startedAt", "finishedAt"):
            if o.get(k):
                o[k] = at(o[k])

def upgrades(pod):
    return [o for o in ops.get(pod, []) if o["kind"] == "upgrade" and o["state"] == "Succeeded"
            and o.get("versionAfter") == target]

def promotes(pod):
    return [o for o in ops.get(pod, []) if o["kind"] == "promote" and o["state"] == "Succeeded"]

windows = []
for i in range(clusters):
    a, b = f"{demo}-a-{i}", f"{demo}-b-{i}"
    ua, ub = upgrades(a), upgrades(b)
    if len(ua) != 1 or len(ub) != 1:
        problems.append(f"cluster {i}: expected one upgrade to {target} on {a} and on {b}, "
                        f"found {len(ua)} and {len(ub)}")
        continue
    ua, ub = ua[0], ub[0]
    # Standby first: b (the standby) was upgraded, then promoted, then a (the old active).
    if not ub["finishedAt"] <= ua["startedAt"]:
        problems.append(f"cluster {i}: {a} (active) upgraded before standby {b} finished")
    pb = [p for p in promotes(b) if ub["finishedAt"] <= p["startedAt"] <= ua["startedAt"]]
    if not pb:
        problems.append(f"cluster {i}: no switchover to {b} between the two upgrades")
    windows.append((ub["startedAt"], ua["finishedAt"]))
    print(f"cluster demo-{i}: {b} upgraded {ub['startedAt']}..{ub['finishedAt']}, "
          f"promoted, {a} upgraded {ua['startedAt']}..{ua['finishedAt']}")

# Tier by tier: cluster i+1 (next tier) started only after cluster i finished.
for (_, end), (start, _) in zip(windows, windows[1:]):
    if not end <= start:
        problems.append(f"tiers overlap: a cluster started at {start} before the previous "
                        f"tier finished at {end}")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("upgrade order: tier by tier, standby first")
