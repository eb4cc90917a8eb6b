#!/usr/bin/env bash
# Start or stop the demo agents an example's agents.tsv describes, on 127.0.0.1.
#   examples/agents.sh start|stop EXAMPLE_DIR
# The agent binary: $BATON_AGENT if set, else `baton-agent` on PATH, else the one cargo builds
# in this checkout (built here if missing; $CARGO_TARGET_DIR is honoured).
# Variables: BATON_AGENT, CARGO_TARGET_DIR, UPGRADE_SECONDS (demo upgrade time, default 3),
# TASK_SECONDS (how long a demo `task` runs, default 1), STAGE_SECONDS (how long staging a
# version's media takes, default 1), PREPARE_SECONDS (how long the preparation checks take,
# default 1).
# An example may hold agent-flags: one line of extra flags for every agent it starts (e.g.
# --require-staged-media, so that an upgrade without its media staged is refused).
set -euo pipefail

usage() { echo "usage: $0 start|stop EXAMPLE_DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1
dir=${2%/}
[[ -f "$dir/agents.tsv" ]] || { echo "$dir/agents.tsv not found" >&2; exit 2; }
run="$dir/.run"
root=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"

find_agent() {
  if [[ -n "${BATON_AGENT:-}" ]]; then
    [[ -x "$BATON_AGENT" ]] || { echo "BATON_AGENT=$BATON_AGENT is not an executable" >&2; exit 2; }
    echo "$BATON_AGENT"; return
  fi
  command -v baton-agent && return
  for candidate in "$target/debug/baton-agent" "$target/release/baton-agent"; do
    [[ -x "$candidate" ]] && { echo "$candidate"; return; }
  done
  command -v cargo >/dev/null || { echo "baton-agent not found: set BATON_AGENT or install cargo" >&2; exit 2; }
  echo "building baton-agent (cargo build -p baton-agent)..." >&2
  (cd "$root" && cargo build -q -p baton-agent) >&2
  [[ -x "$target/debug/baton-agent" ]] || { echo "cargo built no $target/debug/baton-agent" >&2; exit 2; }
  echo "$target/debug/baton-agent"
}

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
    agent=$(find_agent)
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
              --upgrade-seconds "${UPGRADE_SECONDS:-3}" --task-seconds "${TASK_SECONDS:-1}"
              --stage-seconds "${STAGE_SECONDS:-1}" --prepare-seconds "${PREPARE_SECONDS:-1}")
        if [[ -f "$dir/agent-flags" ]]; then
          read -r -a extra <"$dir/agent-flags"
          args+=("${extra[@]}")
        fi
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
