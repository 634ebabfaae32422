#!/bin/sh
# The quick start: two demo destinations on loopback and the sidecar on $SIDECAR_PORT (5000)
# dispatching between them with ./config.yaml. Ctrl-C stops all three.
set -eu
cd "$(dirname "$0")/.."
port=${SIDECAR_PORT:-5000}

python example/demo_destination.py --name default --port 8081 &
default_pid=$!
python example/demo_destination.py --name dev --port 8082 &
dev_pid=$!
trap 'kill $default_pid $dev_pid 2>/dev/null' EXIT INT TERM

echo "try:  curl localhost:$port/   and   curl -H 'environment: dev' localhost:$port/"
mitmdump --mode "reverse:http://127.0.0.1:8081@$port" -s addons/dispatcher.py \
    --set dispatcher_config="${SIDECAR_CONFIG:-config.yaml}"
