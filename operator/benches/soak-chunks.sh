#!/usr/bin/env bash
# Run the 100,000-rollout soak as chunks of 10,000 (one process at a time, niced), appending
# each chunk's totals to the soak table of docs/benchmarks.md and committing that file.
#
#   operator/benches/soak-chunks.sh BINARY COMMIT FIRST_CHUNK LAST_CHUNK
#
# BINARY is a copy of the release soak bench (target/release/deps/soak-*), COMMIT the commit it
# was built from. Chunk k (1-based) runs seeds (k-1)*10,000+1 … k*10,000 (2,500 per scenario).
# Output of chunk k: BINARY.chunk-k.out (the table) and BINARY.chunk-k.err (failing seeds).
# DRY=1 prints the row instead of committing it; CHUNK=n changes the chunk size (for trials).
# Several runs over disjoint chunk ranges may go at once (one per core): the table update and
# commit are serialised by a lock file in .git.
set -u
bin=$1 commit=$2 first=$3 last=$4
size=${CHUNK:-10000}
repo=$(cd "$(dirname "$0")/../.." && pwd)
for k in $(seq "$first" "$last"); do
  seed=$(( (k - 1) * size + 1 ))
  out=$bin.chunk-$k.out err=$bin.chunk-$k.err
  start=$(date +%s)
  nice -n 10 "$bin" "$size" "$seed" >"$out" 2>"$err"
  rc=$?
  wall=$(( $(date +%s) - start ))
  flock "$repo/.git/soak-chunks.lock" python3 - "$repo/docs/benchmarks.md" "$out" "$k" "$seed" "$commit" "$rc" "$wall" "${DRY:-}" <<'PY' || exit 1
import re, subprocess, sys
doc, out, k, seed, commit, rc, wall, dry = sys.argv[1:]
# Per-scenario rows: | name | rollouts | clusters | members | oc | mc | ready | viol | live | s |
tot = [0] * 8
n = 0
for line in open(out):
    m = re.match(r"\| (CleanUpgrade|FaultyUpgrade|FaultyBackout|Reversal) \|(.*)\|\s*$", line)
    if m:
        f = [int(x) for x in m.group(2).split("|")[:8]]
        tot = [a + b for a, b in zip(tot, f)]
        n += 1
rollouts, clusters, members, oc, mc, ready, viol, live = tot
c = lambda x: f"{x:,}"
verdict = c(viol) if n == 4 else f"run failed (exit {rc}, {n} of 4 scenarios reported)"
w = int(wall)
row = (f"| {k} | {c(int(seed))} | `{commit[:7]}` | {c(rollouts)} | {c(clusters)} | {c(members)} "
       f"| {c(oc)} | {c(mc)} | {verdict} | {c(live)} | {w // 60} min {w % 60} s |")
if dry:
    print(row)
    sys.exit(0)
marker = "<!-- soak-100k rows"
s = open(doc).read()
i = s.index(marker)
open(doc, "w").write(s[:i] + row + "\n" + s[i:])
msg = f"Soak 100k: chunk {k} (seeds from {seed}): {rollouts} rollouts, {verdict} violations, {live} liveness failures"
# Someone else may be committing in the same checkout (index.lock): try again for a while.
import time
for attempt in range(20):
    r = subprocess.run(["git", "-C", doc.rsplit("/docs/", 1)[0], "commit", "-q", "-m", msg, "--", "docs/benchmarks.md"])
    if r.returncode == 0:
        break
    time.sleep(15)
else:
    sys.exit(f"could not commit the row of chunk {k}: {row}")
PY
done
