#!/bin/sh
# resign-data: re-sign the application's stored data with the key it presents now (after the
# Reissue restart, the new CA's). Each file under data/ gets a detached signature NAME.sig
# (SHA-256, openssl dgst -sign with tls/key.pem). Refuses to sign with a key that is not the
# one of tls/cert.pem, so a half-applied restart never produces signatures nobody can verify.
set -eu
cert_pub=$(openssl x509 -in tls/cert.pem -noout -pubkey)
key_pub=$(openssl pkey -in tls/key.pem -pubout)
if [ "$cert_pub" != "$key_pub" ]; then
  echo "tls/key.pem is not the key of tls/cert.pem: not re-signing" >&2
  exit 1
fi
n=0
for f in data/*; do
  [ -f "$f" ] || continue
  case "$f" in *.sig | *.sig.tmp) continue ;; esac
  openssl dgst -sha256 -sign tls/key.pem -out "$f.sig.tmp" "$f"
  mv "$f.sig.tmp" "$f.sig"
  n=$((n + 1))
done
echo "re-signed $n file(s) with the key of $(openssl x509 -in tls/cert.pem -noout -subject)"
