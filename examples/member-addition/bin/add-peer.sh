#!/bin/sh
# add-peer: accept BATON_PEER's key, installed as ppkeys/root-$BATON_PEER.pub. Two forms:
#  * BATON_FINGERPRINT: the peer's own key, taken where the cluster publishes it
#    (hosts/$BATON_PEER/identity.pub), installed only if its SHA-256 is that fingerprint;
#  * BATON_COPY_FROM: the members share one key; copy the entry of an accepted member under
#    the new name (the procedure's "cp root-existing.pub root-new.pub" on a managed client).
# Installing the same key again changes nothing.
set -eu
h="hosts/$BATON_MEMBER"
peer=${BATON_PEER:?add-peer needs BATON_PEER}
to="$h/ppkeys/root-$peer.pub"
if [ -n "${BATON_FINGERPRINT:-}" ]; then
  from="hosts/$peer/identity.pub"
  if [ ! -f "$from" ]; then
    echo "no key published for $peer ($from)" >&2
    exit 1
  fi
  got=$(sha256sum <"$from" | cut -d' ' -f1)
  if [ "$got" != "$BATON_FINGERPRINT" ]; then
    echo "the key of $peer has fingerprint $got, not $BATON_FINGERPRINT: not installed" >&2
    exit 1
  fi
  how="its own key"
elif [ -n "${BATON_COPY_FROM:-}" ]; then
  from="$h/ppkeys/root-$BATON_COPY_FROM.pub"
  if [ ! -f "$from" ]; then
    echo "no key of $BATON_COPY_FROM here to copy for $peer" >&2
    exit 1
  fi
  how="the key of $BATON_COPY_FROM"
else
  echo "add-peer needs BATON_FINGERPRINT or BATON_COPY_FROM" >&2
  exit 2
fi
mkdir -p "$h/ppkeys"
if [ -f "$to" ] && cmp -s "$from" "$to"; then
  echo "$BATON_MEMBER already accepts $peer"
  exit 0
fi
cp "$from" "$to.tmp"
mv "$to.tmp" "$to"
echo "$BATON_MEMBER accepts $peer with $how"
