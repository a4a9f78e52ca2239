#!/usr/bin/env bash
# The demo behind `make demo`: a dev server on a SQLite file, a worker, and the shop's
# workflows driven from the CLI. Prints what happens at each step.
set -euo pipefail
cd "$(dirname "$0")/.."
legato=.venv/bin/legato
work=$(mktemp -d -t legato-demo-XXXX)
port=${LEGATO_DEMO_PORT:-7299}
addr="127.0.0.1:$port"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the dev server on $addr (data in $work/demo.db)"
$legato server start-dev --db "$work/demo.db" --port "$port" >"$work/server.log" 2>&1 &
pids+=($!)
# Wait for the server to say it listens (it prints one line once the port is open).
for _ in $(seq 1 200); do grep -q "listening" "$work/server.log" 2>/dev/null && break; sleep 0.05; done
grep -q "listening" "$work/server.log" || { cat "$work/server.log"; exit 1; }

say "Starting a worker for examples/shop"
$legato worker --entries examples/shop --address "$addr" >"$work/worker.log" 2>&1 &
pids+=($!)

wf() { $legato workflow "$@" --address "$addr"; }

say "Order 1: everything in stock, card good, address known"
wf start --type shop:order_saga --task-queue shop --id order-1 \
   --input '{"items":["book"],"payment":{"amount":42,"card":"ok"},"shipping":{"address":"Baker Street"}}'
wf result --id order-1 --timeout 30s

say "Order 2: the card is declined: the reservation is released (compensation)"
wf start --type shop:order_saga --task-queue shop --id order-2 \
   --input '{"items":["lamp"],"payment":{"amount":99,"card":"declined"},"shipping":{"address":"Elm Street"}}'
wf result --id order-2 --timeout 30s

say "Order 3: no shipping address: the payment is refunded and the reservation released"
wf start --type shop:order_saga --task-queue shop --id order-3 \
   --input '{"items":["desk"],"payment":{"amount":300,"card":"ok"},"shipping":{}}'
wf result --id order-3 --timeout 30s

say "Approval: starts, submits the request, then waits durably for a decision signal"
wf start --type shop:approval --task-queue shop --id approval-7 --input '{"order_id":"7","timeout":"1h"}'
wf describe --id approval-7    # RUNNING, with a pending timer: it waits for the signal or the deadline

say "Sending the decision signal"
wf signal --id approval-7 --name decision --input '{"approved":true,"reason":"looks fine"}'
wf result --id approval-7 --timeout 30s

say "The approval's history"
wf show --id approval-7

say "All workflows"
wf list
