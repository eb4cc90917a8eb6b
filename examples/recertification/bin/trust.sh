#!/bin/sh
# install-trust BUNDLE: replace the application's trust store, atomically (a reader sees the
# old bundle or the new one, never half of one).
set -eu
mkdir -p tls
cp "$1" tls/trust.pem.tmp
mv tls/trust.pem.tmp tls/trust.pem
echo "trust store replaced: $(grep -c 'BEGIN CERTIFICATE' tls/trust.pem) CA(s)"
