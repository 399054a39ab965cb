#!/bin/sh
# make bench: every benchmark against its peer, in one run on this machine,
# each printed as a markdown table. Progress goes to stderr.
set -u
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces)" >&2; exit 1; }
status=0

section() { printf '\n### %s\n\n' "$1"; }
header() { printf '| what was measured | branchbox | peer | ratio |\n|---|---|---|---|\n'; }

section "DHCP leases/s (perfdhcp, relayed) — branchbox vs Kea and dnsmasq"
bash bench/dhcp/run.sh || status=1

section "DNS ProvisionServer queries/s (dnsperf) — branchbox vs stock CoreDNS hosts"
header
go run ./bench/dns -branchbox bin/branchbox || status=1

if [ -f scripts/bench-provision.sh ]; then
	section "AMT activations against amtsim"
	header
	sh scripts/bench-provision.sh || status=1
fi

section "Raft lease commits (Go benchmark, single node, fsync, 64 in flight)"
go test -run '^$' -bench LeaseCommit -benchtime 20000x ./cluster/ 2>/dev/null |
	awk '/commits\/s/ { for (i = 1; i <= NF; i++) if ($i == "commits/s") {
		print "| benchmark | branchbox |"; print "|---|---|"; printf "| raft lease commits/s | %d |\n", $(i-1) } }'
exit $status
