#!/usr/bin/env bash
# Kafka clients against a cluster of three example brokers (built with `--features
# kafka,cluster`) on loopback: kcat lists three brokers and every partition's leader and
# replicas, and kafka-python's group check (tests/clients/python_group.py) passes with its
# bootstrap at one node. The brokers then stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "cluster check failed: $*" >&2; exit 1; }
# shellcheck source=tests/clients/three_brokers.sh
source tests/clients/three_brokers.sh

dir=$(mktemp -d)
cleanup() {
    for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

start_three_brokers "$dir" --group-initial-rebalance-delay-ms 1000 || fail "no cluster"
timeout 150 python3 tests/clients/python_group.py "${kafka[1]}"
stop_three_brokers "$dir" || fail "the nodes did not stop cleanly"
echo "cluster: kcat -L lists 3 brokers, kafka-python's group check passes: ok"
