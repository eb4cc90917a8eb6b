#!/bin/sh
# promote: this member becomes the active and the package starts here (the switchover's last
# phase: the old active already stepped down and stopped it).
set -eu
h="hosts/$BATON_MEMBER"
if [ -f "$h/retired" ]; then
  echo "$BATON_MEMBER is retired: not promoted" >&2
  exit 1
fi
previous=""
if [ -f "$h/role" ]; then previous=$(head -n 1 "$h/role"); fi
echo Active >"$h/role"
if ! started=$(./bin/package.sh start "$BATON_MEMBER" 2>&1); then
  # Put the role back: an active that cannot run the package would take no writes.
  if [ -n "$previous" ]; then echo "$previous" >"$h/role"; else rm -f "$h/role"; fi
  echo "$BATON_MEMBER not promoted: $started" >&2
  exit 1
fi
rm -f "$h/source"
echo "$BATON_MEMBER is active; $started"
