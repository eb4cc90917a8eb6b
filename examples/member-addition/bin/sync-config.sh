#!/bin/sh
# sync-config: copy the configuration from the package's storage (package/config) into this
# member's config/. The storage is mounted only where the package runs, so this refuses unless
# the package runs on the active; Baton sends it with the active's data endpoint as source.
set -eu
h="hosts/$BATON_MEMBER"
on=""
if [ -f package/running-on ]; then on=$(head -n 1 package/running-on); fi
if [ -z "$on" ]; then
  echo "the package is not running: its storage is mounted nowhere, nothing copied" >&2
  exit 1
fi
role=""
if [ -f "hosts/$on/role" ]; then role=$(head -n 1 "hosts/$on/role"); fi
if [ "$role" != Active ]; then
  echo "the package runs on $on, which is not the active (role ${role:-none}): nothing copied" >&2
  exit 1
fi
endpoint=""
if [ -f "hosts/$on/data-endpoint" ]; then endpoint=$(head -n 1 "hosts/$on/data-endpoint"); fi
if [ -n "${BATON_SOURCE:-}" ] && [ "$BATON_SOURCE" != "$endpoint" ]; then
  echo "asked to copy from $BATON_SOURCE, but the package runs on $on ($endpoint): nothing copied" >&2
  exit 1
fi
# A whole new tree, then one rename: a reader never sees half a configuration.
rm -rf "$h/config.new"
cp -R package/config "$h/config.new"
rm -rf "$h/config"
mv "$h/config.new" "$h/config"
echo "configuration copied from the package on $on: $(find "$h/config" -type f | wc -l | tr -d ' ') file(s)"
