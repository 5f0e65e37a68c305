#!/usr/bin/env bash
# Runs tests of librdkafka's own test suite against a running example broker, one test at a time,
# and prints a line per test (PASS or FAIL, with its time) and a summary.
#
#   tests/clients/librdkafka_suite.sh LIBRDKAFKA_TESTS_DIR ADDR TEST...
#
# A TEST of the form NNNN:NAME runs only test NNNN's subtests whose names contain NAME.
#
# LIBRDKAFKA_TESTS_DIR is the `tests` directory of a librdkafka source tree whose library and
# test runner are built (see docs/compatibility.md). Each test runs without quick mode (which
# skips subtests) under a timeout of TEST_TIMEOUT seconds (240 unless set). Full logs go to
# LOG_DIR (a temporary directory unless set). Exits non-zero when any test fails.
set -uo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 LIBRDKAFKA_TESTS_DIR ADDR TEST..." >&2
    exit 2
fi
dir=$1
addr=$2
shift 2
timeout_s=${TEST_TIMEOUT:-240}
logs=${LOG_DIR:-$(mktemp -d)}
mkdir -p "$logs"

cd "$dir" || exit 2
[ -x ./test-runner ] || { echo "no test-runner in $dir: build the suite first" >&2; exit 2; }
cat >test.conf <<EOF
bootstrap.servers=$addr
EOF

passed=()
failed=()
for test in "$@"; do
    start=$(date +%s)
    number=${test%%:*}
    subtests=""
    [ "$number" != "$test" ] && subtests=${test#*:}
    LD_LIBRARY_PATH=../src:../src-cpp TEST_KAFKA_VERSION=3.9.0 TESTS=$number SUBTESTS=$subtests \
        timeout "$timeout_s" ./test-runner -p1 -E -L >"$logs/${test//:/-}.log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    # A subtest name that matches nothing runs nothing: it must have passed by name.
    if [ $rc -eq 0 ] && [ -n "$subtests" ] && ! grep -q "\[ $subtests[^]]*: PASS" "$logs/${test//:/-}.log"; then
        rc=no-subtest
    fi
    if [ $rc -eq 0 ]; then
        passed+=("$test")
        printf 'PASS %s %ss\n' "$test" "$took"
    else
        failed+=("$test")
        printf 'FAIL %s %ss (exit %s; log %s)\n' "$test" "$took" "$rc" "$logs/${test//:/-}.log"
    fi
done

printf '\n%s of %s passed\n' "${#passed[@]}" "$#"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[*]}"
    exit 1
fi
