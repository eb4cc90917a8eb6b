#!/bin/sh
# remove-peer: forget BATON_PEER's key. A key already absent is not an error.
set -eu
peer=${BATON_PEER:?remove-peer needs BATON_PEER}
key="hosts/$BATON_MEMBER/ppkeys/root-$peer.pub"
if [ -f "$key" ]; then
  rm -f "$key"
  echo "$BATON_MEMBER no longer accepts $peer"
else
  echo "$BATON_MEMBER did not accept $peer"
fi
