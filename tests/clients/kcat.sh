#!/usr/bin/env bash
# kcat (Debian's package: librdkafka 2.0) against the example broker at $1, started with
# `--num-partitions 2`: metadata (-L), produce with each codec (-P) to auto-created topics of
# two partitions, consume (-C), and a group consumer (-G) that commits and, run again, resumes
# after its commits.
set -euo pipefail
B=$1
fail() { echo "kcat check failed: $*" >&2; exit 1; }
k() { timeout 30 kcat -b "$B" "$@"; }

k -L | grep -q "1 brokers" || fail "-L does not list one broker"

for codec in none gzip snappy lz4 zstd; do
    topic="kcat-$codec"
    seq 1 200 | awk '{print "k" $1 ":v" $1}' | k -P -t "$topic" -K: -z "$codec"
    got=$(k -C -t "$topic" -e -q -f '%k=%s\n' | sort)
    want=$(seq 1 200 | awk '{print "k" $1 "=v" $1}' | sort)
    [ "$got" = "$want" ] || fail "$codec: consumed records differ from those produced"
done
k -L | grep -q 'topic "kcat-zstd" with 2 partitions' ||
    fail "-L does not list the new topics with --num-partitions 2"

first=$(k -G kcat-group kcat-none -e -q -f '%s\n' -X auto.offset.reset=earliest | wc -l)
[ "$first" -eq 200 ] || fail "-G read $first records, not 200"
seq 1 5 | awk '{print "late" $1}' | k -P -t kcat-none
again=$(k -G kcat-group kcat-none -e -q -f '%s\n' -X auto.offset.reset=earliest)
[ "$(echo "$again" | wc -l)" -eq 5 ] && echo "$again" | grep -q late5 ||
    fail "-G run again read [$again], not just the 5 records produced since its commits"
echo "kcat: -L, -P/-C with 5 codecs, -G with commits: ok"
