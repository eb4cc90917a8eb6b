#!/bin/sh
# package.sh start MEMBER | stop [MEMBER]: start or stop the failover package. Its storage,
# package/ (the configuration in package/config), is mounted only where it runs:
# package/running-on names that member. It runs only on the active, and on one member at a
# time. promote.sh, demote.sh and retire.sh call it; an administrator may too (README.md).
set -eu
what=${1:-}
member=${2:-}
on=""
if [ -f package/running-on ]; then on=$(head -n 1 package/running-on); fi
role_of() {
  if [ -f "hosts/$1/role" ]; then head -n 1 "hosts/$1/role"; fi
}

case "$what" in
start)
  if [ -z "$member" ]; then
    echo "usage: package.sh start MEMBER" >&2
    exit 2
  fi
  role=$(role_of "$member")
  if [ "$role" != Active ]; then
    echo "package not started: $member is not the active (role ${role:-none})" >&2
    exit 1
  fi
  if [ "$on" = "$member" ]; then
    echo "package already runs on $member"
    exit 0
  fi
  if [ -n "$on" ] && [ "$(role_of "$on")" = Active ]; then
    echo "package not started on $member: it runs on the active $on" >&2
    exit 1
  fi
  printf '%s\n' "$member" >package/running-on.tmp
  mv package/running-on.tmp package/running-on
  echo "package started on $member"
  ;;
stop)
  if [ -z "$on" ] || { [ -n "$member" ] && [ "$on" != "$member" ]; }; then
    echo "package not running${member:+ on $member}"
    exit 0
  fi
  rm -f package/running-on
  echo "package stopped on $on"
  ;;
*)
  echo "usage: package.sh start MEMBER | stop [MEMBER]" >&2
  exit 2
  ;;
esac
