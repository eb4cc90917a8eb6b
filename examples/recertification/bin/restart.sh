#!/bin/sh
# restart: apply a staged certificate and restart the application. Here the "restart" is
# moving files into place; a real deployment calls its service manager and waits until the
# service answers again before exiting 0.
set -eu
if [ -f tls/next/cert.pem ]; then
  mv tls/next/key.pem tls/key.pem
  mv tls/next/cert.pem tls/cert.pem
  echo "restarted with the staged certificate"
else
  echo "restarted (no staged certificate)"
fi
