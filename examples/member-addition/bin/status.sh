#!/bin/sh
# statusCommand: this host's /v1/status fields as JSON, read from its files under
# hosts/$BATON_MEMBER (see README.md for the layout). Reads only; changes nothing.
set -eu
h="hosts/$BATON_MEMBER"
if [ ! -d "$h" ]; then
  echo "no directory $h under $(pwd)" >&2
  exit 1
fi

# The first line of a file, or nothing when it is absent.
value() {
  if [ -f "$1" ]; then head -n 1 "$1"; fi
}
digest() {
  sha256sum <"$1" | cut -d' ' -f1
}

role=$(value "$h/role")
source=$(value "$h/source")
endpoint=$(value "$h/data-endpoint")
running_on=$(value package/running-on)
retired=false
if [ -f "$h/retired" ]; then retired=true; fi

out="\"retired\":$retired"
if [ -n "$role" ]; then out="$out,\"role\":\"$role\""; fi
serving=false
if [ "$role" = Active ] && [ "$running_on" = "$BATON_MEMBER" ]; then serving=true; fi
out="$out,\"serving\":$serving"
if [ -n "$endpoint" ]; then out="$out,\"dataEndpoint\":\"$endpoint\""; fi

# Replicated data is not modelled: every member of the group (the active and whoever follows
# a source) is at the same position, always in sync; anyone else holds nothing.
at=0
if [ "$role" = Active ] || [ -n "$source" ]; then at=1; fi
repl="\"lagSeconds\":0,\"lagEntries\":0,\"backlog\":0,\"conflicts\":0,\"appliedIndex\":$at"
if [ -n "$source" ]; then repl="\"source\":\"$source\",\"connected\":true,$repl"; fi
out="$out,\"replication\":{$repl}"

if [ -f "$h/identity.pub" ]; then
  out="$out,\"identity\":\"$(digest "$h/identity.pub")\""
fi

peers=""
for key in "$h"/ppkeys/root-*.pub; do
  [ -f "$key" ] || continue
  name=${key##*/root-}
  name=${name%.pub}
  peers="$peers${peers:+,}\"$name\":\"$(digest "$key")\""
done
out="$out,\"peers\":{$peers}"

# One digest over the relative path and content digest of every file of config/, so equal
# trees have equal digests wherever they live.
if [ -d "$h/config" ]; then
  tree=$(cd "$h/config" && find . -type f | LC_ALL=C sort | while IFS= read -r f; do
    printf '%s %s\n' "$(digest "$f")" "$f"
  done)
  out="$out,\"configDigest\":\"$(printf '%s' "$tree" | sha256sum | cut -d' ' -f1)\""
fi

printf '{%s}\n' "$out"
