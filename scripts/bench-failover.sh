#!/bin/sh
# One `make bench` row: leader failover of a pair + witness. Runs the HA
# end-to-end test (tests/e2e TestHAPairAndWitness: three branchbox
# processes in namespaces under continuous DHCP load) with
# $BENCH_FAILOVER_RUNS (20) kill -9s of the leader, each measured from the
# kill to the first DHCP ACK from the new leader. Kea is not run: its HA
# hook's failover is set by configuration, not by speed — in hot-standby a
# server goes partner-down only after max-response-delay (60 s by default)
# and then max-unacked-clients (10) clients unanswered for max-ack-delay
# (10 s) — so its documented default, ≥ 60 s, is the peer figure.
#
# Root, after `make build`. Prints one markdown table row on stdout.
set -eu
RUNS=${BENCH_FAILOVER_RUNS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/branchbox-bench-failover.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

cd "$ROOT"
if ! BRANCHBOX_BIN="$ROOT/bin/branchbox" AMTSIM_BIN="$ROOT/bin/amtsim" \
	BRANCHBOX_FAILOVER_RUNS=$RUNS BRANCHBOX_FAILOVER_OUT="$TMP/failover.json" \
	go test -count=1 -timeout 20m -run '^TestHAPairAndWitness$' ./tests/e2e/ >"$TMP/test.log" 2>&1; then
	grep -E "ha_test.go|^(---|FAIL|ok)" "$TMP/test.log" | grep -v "log without" | tail -30 >&2
	echo "bench-failover: the HA test failed" >&2
	exit 1
fi
# {"kill9_ms":[1211.3,...]} → sorted, nearest-rank p50 and p99.
sed 's/.*\[//; s/\].*//' "$TMP/failover.json" | tr ',' '\n' | sed '/^$/d' | sort -n | awk -v runs="$RUNS" '
	{ v[NR] = $1 }
	END {
		p50 = v[int((NR * 50 + 99) / 100)]; p99 = v[int((NR * 99 + 99) / 100)]
		printf "| leader failover, kill -9 → first DHCP ACK from the new leader (%d runs; pair + witness, 500 ms heartbeat) | p50 %.2f s, p99 %.2f s | Kea HA hot-standby, documented defaults: partner-down ≥ 60 s | ≥ %.0f× (p99) |\n",
			NR, p50 / 1000, p99 / 1000, 60000 / p99
	}'
