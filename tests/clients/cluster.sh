#!/usr/bin/env bash
# Kafka clients against a cluster of three example brokers (built with `--features
# kafka,cluster`) on loopback: kcat lists three brokers and every partition's leader and
# replicas, and kafka-python's group check (tests/clients/python_group.py) passes with its
# bootstrap at one node. The brokers then stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "cluster check failed: $*" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
peers=() kafka=()
for i in 1 2 3; do
    peers+=("127.0.0.1:$(port)")
    kafka+=("127.0.0.1:$(port)")
done
voters="1@${peers[0]},2@${peers[1]},3@${peers[2]}"
for i in 0 1 2; do
    target/debug/examples/broker --data "$dir/n$i" --listen "${kafka[$i]}" --node-id $((i + 1)) \
        --peer-listen "${peers[$i]}" --voters "$voters" --group-initial-rebalance-delay-ms 1000 \
        >"$dir/log$i" 2>&1 &
    pids+=($!)
done

listed=""
for _ in $(seq 100); do
    listed=$(timeout 10 kcat -b "${kafka[0]}" -L 2>/dev/null || true)
    echo "$listed" | grep -q "3 brokers" &&
        echo "$listed" | grep -q 'partition 0, leader [123], replicas: [123],[123],[123]' && break
    sleep 0.2
done
echo "$listed" | grep -q "3 brokers" || { cat "$dir"/log*; fail "kcat -L does not list three brokers"; }
echo "$listed" | grep -q 'partition 0, leader [123], replicas: [123],[123],[123]' ||
    { echo "$listed"; fail "kcat -L shows no partition with a leader and three replicas"; }

timeout 150 python3 tests/clients/python_group.py "${kafka[1]}"

for i in 0 1 2; do kill -INT "${pids[$i]}"; done
for i in 0 1 2; do wait "${pids[$i]}" || fail "node $((i + 1)) exited with an error"; done
pids=()
for i in 0 1 2; do
    grep -q "closed cleanly" "$dir/log$i" || { cat "$dir/log$i"; fail "node $((i + 1)) did not stop cleanly"; }
done
echo "cluster: kcat -L lists 3 brokers, kafka-python's group check passes: ok"
