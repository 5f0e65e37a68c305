# Sourced by the client checks that need a cluster: start_three_brokers DIR [BROKER ARG...]
# starts three example brokers (target/debug/examples/broker, built with `--features
# kafka,cluster`) on loopback as nodes 1 to 3 of one cluster, with their data and logs in DIR
# and the extra arguments given, and waits (bounded) until kcat sees three brokers and a
# partition led with three replicas. It sets `kafka` (the nodes' Kafka addresses), `bootstrap`
# (all three, comma-separated) and `cluster_pids`; stop_three_brokers stops them cleanly with
# SIGTERM, as service managers do (and fails if one did not close cleanly).

cluster_pids=()

start_three_brokers() {
    local dir=$1 i listed=""
    shift
    local port peers=()
    kafka=() cluster_pids=()
    port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    for i in 1 2 3; do
        peers+=("127.0.0.1:$(port)")
        kafka+=("127.0.0.1:$(port)")
    done
    local voters="1@${peers[0]},2@${peers[1]},3@${peers[2]}"
    for i in 0 1 2; do
        target/debug/examples/broker --data "$dir/n$i" --listen "${kafka[$i]}" --node-id $((i + 1)) \
            --peer-listen "${peers[$i]}" --voters "$voters" "$@" >"$dir/log$i" 2>&1 &
        cluster_pids+=($!)
    done
    bootstrap="${kafka[0]},${kafka[1]},${kafka[2]}"
    for _ in $(seq 100); do
        listed=$(timeout 10 kcat -b "${kafka[0]}" -L 2>/dev/null || true)
        echo "$listed" | grep -q "3 brokers" &&
            echo "$listed" | grep -q 'partition 0, leader [123], replicas: [123],[123],[123]' && return 0
        sleep 0.2
    done
    cat "$dir"/log*
    echo "three brokers did not form a cluster: kcat -L shows" >&2
    echo "$listed" >&2
    return 1
}

stop_three_brokers() {
    local dir=$1 i status=0
    for i in 0 1 2; do kill -TERM "${cluster_pids[$i]}" 2>/dev/null || true; done
    for i in 0 1 2; do wait "${cluster_pids[$i]}" || status=1; done
    cluster_pids=()
    for i in 0 1 2; do
        grep -q "closed cleanly" "$dir/log$i" || { tail -n 30 "$dir/log$i"; echo "node $((i + 1)) did not stop cleanly" >&2; status=1; }
    done
    return $status
}
