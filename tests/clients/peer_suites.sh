#!/usr/bin/env bash
# Runs Kafka clients' own test suites against the example broker: librdkafka 2.14.2's tests
# (the ones tests/clients/librdkafka-tests.txt marks `ci`, or with --full every one it marks
# `ci` or `full`) and kafka-python 3.0.11's integration tests; then the librdkafka subtests it
# marks `cluster` against a cluster of three example brokers. See docs/compatibility.md.
#
#   tests/clients/peer_suites.sh [--full]
#
# The suites' sources are read from PEERS (default: ../shared/peers beside the repository, else
# /work/shared/peers), unpacked and built in SCRATCH (default: a new temporary directory; give
# one to reuse a build). Needs a C toolchain, libzstd-dev and zlib1g-dev, and kafka-python's test
# requirements (installed by .ci/run). Exits non-zero if any test fails (a kafka-python test
# that fails is run once more, and reported as RERUN: some race their own metadata refresh).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

full=false
[ "${1:-}" = "--full" ] && full=true

peers=${PEERS:-}
for candidate in "$repo/../shared/peers" /work/shared/peers; do
    [ -n "$peers" ] && break
    [ -f "$candidate/librdkafka-2.14.2.tar.gz" ] && peers=$candidate
done
[ -n "$peers" ] || { echo "the peer suites' sources are not found: set PEERS" >&2; exit 2; }
scratch=${SCRATCH:-$(mktemp -d)}
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)

rdkafka=$scratch/librdkafka-2.14.2
if [ ! -x "$rdkafka/tests/test-runner" ]; then
    echo "building librdkafka 2.14.2 and its test runner in $rdkafka"
    tar xzf "$peers/librdkafka-2.14.2.tar.gz" -C "$scratch"
    (
        cd "$rdkafka"
        ./configure --disable-curl --disable-sasl --disable-ssl --disable-gssapi --disable-lz4-ext >"$scratch/configure.log" 2>&1
        make -j2 libs >"$scratch/make.log" 2>&1
        make -j2 -C tests build >"$scratch/make-tests.log" 2>&1
    ) || { tail -n 30 "$scratch"/*.log; exit 1; }
fi
kpython=$scratch/kafka-python-3.0.11
[ -d "$kpython/test" ] || tar xzf "$peers/kafka-python-3.0.11-tests.tar.gz" -C "$scratch"

cargo build -q --features kafka,cluster --example broker
data=$scratch/broker-data
rm -rf "$data"
log=$scratch/broker.log
# As the suites' own Kafka setups: topics auto-created with 4 partitions, ACLs applied. A new
# group waits 1 s for more members (Kafka's default is 3 s, kafka-python's setup 0): librdkafka's
# 0102 needs two static members started together to share their first rebalance, and its 0081
# creates some twenty short-lived groups within a three-minute budget.
target/debug/examples/broker --data "$data" --listen 127.0.0.1:0 --fsync never --num-partitions 4 \
    --acls true --group-initial-rebalance-delay-ms 1000 >"$log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 100); do
    addr=$(grep -o "on 127.0.0.1:[0-9]*" "$log" | cut -c4- || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "the broker did not start" >&2; exit 1; }

if $full; then
    # 0081 and 0113 take several minutes against any broker.
    export TEST_TIMEOUT=${TEST_TIMEOUT:-900}
    tests=$(awk '!/^#/ && ($2 == "ci" || $2 == "full") { print $1 }' tests/clients/librdkafka-tests.txt)
else
    tests=$(awk '!/^#/ && $2 == "ci" { print $1 }' tests/clients/librdkafka-tests.txt)
fi
status=0
echo "librdkafka 2.14.2's tests against $addr"
# shellcheck disable=SC2086
LOG_DIR=$scratch/librdkafka-logs tests/clients/librdkafka_suite.sh "$rdkafka/tests" "$addr" $tests || status=1

echo "kafka-python 3.0.11's integration tests against $addr"
# KAFKA_VERSION: the Kafka release whose API versions the broker's ApiVersions answer matches,
# as kafka-python infers it (test_kafka_version_infer checks the two agree).
kafka_version=3.8.0
mkdir -p "$scratch/kafka-root"
(
    cd "$kpython"
    KAFKA_ROOT=$scratch/kafka-root KAFKA_VERSION=$kafka_version \
        KAFKA_URI=PLAINTEXT://$addr timeout 900 python3 -m pytest test/integration -p no:cacheprovider \
        --timeout 120 --reruns 1 -q -rfEsR \
        --deselect test/integration/test_sasl_integration.py \
        --deselect test/integration/test_ssl_integration.py \
        $(sed -e '/^#/d' -e '/^$/d' -e 's/ .*//' -e 's/^/--deselect test\/integration\//' "$repo/tests/clients/kafka-python-deselected.txt")
) >"$scratch/kafka-python.log" 2>&1 || status=1
grep -E "^(FAILED|ERROR|SKIPPED|RERUN)|passed|failed" "$scratch/kafka-python.log" | tail -n 30

kill -INT "$broker"
wait "$broker" || true
trap - EXIT
grep -q "closed cleanly" "$log" || { tail -n 30 "$log"; echo "the broker did not stop cleanly" >&2; status=1; }

# shellcheck source=tests/clients/three_brokers.sh
source tests/clients/three_brokers.sh
cluster_data=$scratch/cluster-data
rm -rf "$cluster_data"
mkdir -p "$cluster_data"
trap 'for pid in "${cluster_pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
cluster_tests=$(awk '!/^#/ && $2 == "cluster" { for (i = 3; i <= NF; i++) print $1 ":" $i }' tests/clients/librdkafka-tests.txt)
if start_three_brokers "$cluster_data" --fsync never --num-partitions 4 --acls true \
    --group-initial-rebalance-delay-ms 1000; then
    echo "librdkafka 2.14.2's tests against a cluster of three brokers ($bootstrap)"
    # shellcheck disable=SC2086
    LOG_DIR=$scratch/librdkafka-cluster-logs tests/clients/librdkafka_suite.sh "$rdkafka/tests" "$bootstrap" \
        $cluster_tests || status=1
    stop_three_brokers "$cluster_data" || status=1
else
    status=1
fi
trap - EXIT
exit $status
