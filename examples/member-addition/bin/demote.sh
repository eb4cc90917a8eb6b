#!/bin/sh
# demote and force-standby: this member stops being the active (the package stops if it runs
# here) and follows BATON_SOURCE, as a Standby (or Spare, BATON_ROLE) or, for force-standby,
# as a ForcedStandby held out of failover. Also how a new member joins: demote with the
# active as its source.
set -eu
h="hosts/$BATON_MEMBER"
case "$BATON_OPERATION_KIND" in
force-standby) role=ForcedStandby ;;
*) if [ "${BATON_ROLE:-standby}" = spare ]; then role=Spare; else role=Standby; fi ;;
esac
stopped=$(./bin/package.sh stop "$BATON_MEMBER")
echo "$role" >"$h/role"
rm -f "$h/retired"
if [ -n "${BATON_SOURCE:-}" ]; then
  printf '%s\n' "$BATON_SOURCE" >"$h/source"
  echo "$BATON_MEMBER is $role, replicating from $BATON_SOURCE; $stopped"
else
  rm -f "$h/source"
  echo "$BATON_MEMBER is $role, replicating from nobody; $stopped"
fi
