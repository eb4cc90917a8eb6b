#!/usr/bin/env bash
# Start or stop the demo agents an example's agents.tsv describes, on 127.0.0.1.
#   examples/agents.sh start|stop EXAMPLE_DIR
# Needs `baton-agent` on PATH or built in target/debug (cargo build -p baton-agent).
set -euo pipefail

usage() { echo "usage: $0 start|stop EXAMPLE_DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1
dir=${2%/}
[[ -f "$dir/agents.tsv" ]] || { echo "$dir/agents.tsv not found" >&2; exit 2; }
run="$dir/.run"
root=$(cd "$(dirname "$0")/.." && pwd)
agent=$(command -v baton-agent || true)
for candidate in "${CARGO_TARGET_DIR:-$root/target}/debug/baton-agent" "${CARGO_TARGET_DIR:-$root/target}/release/baton-agent"; do
  [[ -n "$agent" ]] && break
  [[ -x "$candidate" ]] && agent=$candidate
done
[[ -n "$agent" ]] || { echo "baton-agent not found: cargo build -p baton-agent" >&2; exit 2; }

stop() {
  shopt -s nullglob
  for pidfile in "$run"/*.pid; do
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case $cmd in
  stop) stop; echo "stopped the agents of $dir" ;;
  start)
    mkdir -p "$run"
    names=$(awk -F'\t' '!/^#/ && NF { printf "%s%s-%s", sep, $1, $2; sep="," }' "$dir/agents.tsv")
    [[ -f "$run/certs/ca.crt" ]] || "$agent" gen-certs --out "$run/certs" --members "$names" >/dev/null
    mapfile -t rows < <(grep -v '^#' "$dir/agents.tsv" | grep .)
    started=0
    # Actives first: standbys follow their data port.
    for pass in active other; do
      for row in "${rows[@]}"; do
        IFS=$'\t' read -r cluster member version role follows control data components <<<"$row"
        [[ -z "$cluster" || "$cluster" == \#* ]] && continue
        if [[ $pass == active && $role != active ]] || [[ $pass != active && $role == active ]]; then
          continue
        fi
        id="$cluster-$member"
        args=(--member "$id" --data-dir "$run/$id" --listen "127.0.0.1:$control"
              --data-listen "127.0.0.1:$data" --version "$version" --role "$role"
              --tls-cert "$run/certs/server.crt" --tls-key "$run/certs/server.key"
              --client-ca "$run/certs/ca.crt" --member-cert "$run/certs/member-$id.crt"
              --member-key "$run/certs/member-$id.key" --trust "$run/certs/trust.pem"
              --upgrade-seconds "${UPGRADE_SECONDS:-3}")
        if [[ $follows != - ]]; then
          src=$(printf '%s\n' "${rows[@]}" | awk -F'\t' -v c="$cluster" -v m="$follows" '$1 == c && $2 == m { print $7 }')
          args+=(--source "127.0.0.1:$src")
        fi
        [[ $components != - ]] && args+=(--components "$components")
        "$agent" "${args[@]}" >"$run/$id.out" 2>"$run/$id.log" &
        echo $! >"$run/$id.pid"
        started=$((started + 1))
      done
      sleep 0.5
    done
    echo "started $started agents for $dir (logs in $run)"
    ;;
  *) usage ;;
esac
