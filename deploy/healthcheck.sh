#!/bin/bash
# crm-healthcheck PORT [PATH]: exit 0 when http://127.0.0.1:PORT/PATH answers 200.
# Uses bash's /dev/tcp so the runtime image needs no HTTP client.
set -eu
port="${1:?usage: crm-healthcheck PORT [PATH]}"
path="${2:-/readyz}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) exit 1 ;;
esac
