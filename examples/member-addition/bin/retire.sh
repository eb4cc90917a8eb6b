#!/bin/sh
# retire: the member leaves the cluster for good: out of service, replicating from nobody,
# the package stopped if it runs here. Baton only retires a member that is not the active.
set -eu
h="hosts/$BATON_MEMBER"
stopped=$(./bin/package.sh stop "$BATON_MEMBER")
echo OutOfService >"$h/role"
rm -f "$h/source"
touch "$h/retired"
echo "$BATON_MEMBER retired: out of service; $stopped"
