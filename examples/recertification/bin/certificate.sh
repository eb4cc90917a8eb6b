#!/bin/sh
# install-certificate CERT KEY: stage the new certificate and key; the application keeps
# presenting its current one until the next restart (the procedure's "restart pending").
set -eu
mkdir -p tls/next
umask 077
cp "$2" tls/next/key.pem
cp "$1" tls/next/cert.pem
echo "certificate staged for the next restart"
