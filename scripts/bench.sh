#!/bin/sh
# make bench: every benchmark against its peer, in one run on this machine,
# each printed as a markdown table. Progress goes to stderr.
set -u
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces)" >&2; exit 1; }
status=0

section() { printf '\n### %s\n\n' "$1"; }
header() { printf '| what was measured | branchbox | peer | ratio |\n|---|---|---|---|\n'; }

section "DHCP CPU per lease at 1 000, 2 000 and 4 000 DORA/s (perfdhcp, relayed) — branchbox vs Kea (and dnsmasq)"
bash bench/dhcp/run.sh || status=1

section "DNS ProvisionServer queries/s (dnsperf) — branchbox vs stock CoreDNS hosts"
header
go run ./bench/dns -branchbox bin/branchbox || status=1

if [ -f scripts/bench-provision.sh ]; then
	section "AMT activations against amtsim"
	header
	sh scripts/bench-provision.sh || status=1
fi

section "AMT activations, the same amtsim fleet — branchbox vs MeshCentral"
header
out=$(mktemp)
if BRANCHBOX_BENCH_ACTIVATIONS=${BENCH_MC_DEVICES:-20} BRANCHBOX_BENCH_OUT=$out \
	BRANCHBOX_BIN=$PWD/bin/branchbox AMTSIM_BIN=$PWD/bin/amtsim \
	go test -count=1 -timeout 30m -run '^TestBenchActivationsVsMeshCentral$' ./tests/e2e/ >"$out.log" 2>&1; then
	cat "$out"
else
	grep -E "activation_bench_test|^(---|FAIL)" "$out.log" | tail -20 >&2
	status=1
fi
rm -f "$out" "$out.log"

section "Leader failover — branchbox pair + witness vs Kea HA"
header
sh scripts/bench-failover.sh || status=1

section "Raft lease commits (Go benchmark, single node, fsync, 64 in flight)"
go test -run '^$' -bench LeaseCommit -benchtime 20000x ./cluster/ 2>/dev/null |
	awk '/commits\/s/ { for (i = 1; i <= NF; i++) if ($i == "commits/s") {
		print "| benchmark | branchbox |"; print "|---|---|"; printf "| raft lease commits/s | %d |\n", $(i-1) } }'
section "Raft log store: one durable commit (Go benchmark) — cluster/raftlog vs raft-boltdb"
go test -run '^$' -bench RaftLogStores -benchtime 2000x ./cluster/ 2>/dev/null | awk '
	/^BenchmarkRaftLogStores/ {
		split($1, p, "/"); sub(/^batch=/, "", p[2]); sub(/-[0-9]+$/, "", p[3]); k = p[2] SUBSEP p[3]
		wall[k] = $3 / 1000
		for (i = 4; i <= NF; i++) {
			if ($i == "cpu-µs/op") cpu[k] = $(i-1)
			if ($i == "p99-µs") p99[k] = $(i-1)
			if ($i == "p99.9-µs") p999[k] = $(i-1)
		}
		if (!(p[2] in seen)) { seen[p[2]] = 1; order[++n] = p[2] }
	}
	END {
		print "| entries per commit | raftlog wall / CPU µs | raft-boltdb wall / CPU µs | ratio (boltdb ÷ raftlog), wall / CPU | wall p99 / p99.9 µs, raftlog · boltdb |"
		print "|---|---|---|---|---|"
		for (i = 1; i <= n; i++) { b = order[i]; r = b SUBSEP "raftlog"; o = b SUBSEP "boltdb"
			printf "| %s | %.0f / %.0f | %.0f / %.0f | %.2f× / %.2f× | %d / %d · %d / %d |\n", b, wall[r], cpu[r],
				wall[o], cpu[o], wall[o] / wall[r], cpu[o] / cpu[r], p99[r], p999[r], p99[o], p999[o] }
	}'
exit $status
