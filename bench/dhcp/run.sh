#!/usr/bin/env bash
# DHCP leases/s side by side: branchbox, Kea and dnsmasq serve the same
# pool in the same network-namespace set-up, one after the other in one
# run, each driven by perfdhcp (which acts as a relay, so this measures the
# giaddr path). Prints a markdown table on stdout; progress goes to stderr.
#
# Usage: bench/dhcp/run.sh            (as root, from the repository root)
# Environment: BRANCHBOX_BIN (default bin/branchbox), RATE (offered DORA/s,
# default 4000), DURATION (seconds, default 10), CLIENTS (default 10000),
# SERVERS (default "branchbox kea dnsmasq"), REPEAT (rounds, default 3),
# LOW_RATE (default 2000) and LOW_SERVERS (default "branchbox kea"; empty
# skips) for a second table at a rate the driver keeps up with.
# Debian packages: kea-admin (perfdhcp), kea-dhcp4-server, dnsmasq-base,
# util-linux (taskset), iproute2.
set -euo pipefail

BIN=${BRANCHBOX_BIN:-bin/branchbox}
RATE=${RATE:-4000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-10000}
SERVERS=${SERVERS:-branchbox kea dnsmasq}
REPEAT=${REPEAT:-3}
LOW_RATE=${LOW_RATE:-2000}
LOW_SERVERS=${LOW_SERVERS-branchbox kea}

log() { echo "bench/dhcp: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for p in perfdhcp:kea-admin kea-dhcp4:kea-dhcp4-server dnsmasq:dnsmasq-base taskset:util-linux ip:iproute2; do
	command -v "${p%%:*}" >/dev/null || die "${p%%:*} missing: apt-get install ${p#*:}"
done
[ -x "$BIN" ] || die "$BIN missing: run make build"
BIN=$(realpath "$BIN")

SRV=bbbench-srv-$$
CLI=bbbench-cli-$$
WORK=$(mktemp -d /tmp/bench-dhcp.XXXXXX)
SERVER_PID=
RMEM_DEFAULT=$(sysctl -n net.core.rmem_default)

stop_server() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
	fi
}
cleanup() {
	stop_server
	sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"
	ip netns del "$SRV" 2>/dev/null || true
	ip netns del "$CLI" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

# perfdhcp stands in for thousands of clients on one socket with the
# kernel's default receive buffer (about 200 KiB), which overflows when a
# server answers in bursts (branchbox releases a whole raft group commit of
# ACKs at once) and counts as server loss. Every server is measured with a
# 4 MiB default; this kernel has no per-namespace value, so it is the
# host's, restored on exit.
sysctl -qw net.core.rmem_default=4194304

# server 10.77.0.1 (CPU 0) <-veth-> perfdhcp 10.77.0.2 (CPU 1), the relay
# address perfdhcp puts in giaddr.
ip netns add "$SRV"
ip netns add "$CLI"
ip link add s0 netns "$SRV" type veth peer name c0 netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/16 dev s0
ip -n "$CLI" addr add 10.77.0.2/16 dev c0
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set s0 up
ip -n "$CLI" link set c0 up

# Same pool, router, domain and lease time for every server.
FIRST=10.77.1.0 LAST=10.77.255.254 ROUTER=10.77.0.2 DOMAIN=bench.example LEASE=3600

start_branchbox() {
	mkdir -p "$WORK/branchbox"
	cat >"$WORK/branchbox/branchbox.yaml" <<-YAML
	node:
	  id: bench
	  data_dir: $WORK/branchbox/data
	  api: 127.0.0.1:18443
	  log_level: warn
	dns:
	  listen: 127.0.0.1:15353
	provisioner:
	  listen: 127.0.0.1:19971
	dhcp:
	  relay_listen: "0.0.0.0:67"
	sites:
	  - name: bench
	    domain: $DOMAIN
	    relay: true
	    subnet: 10.77.0.0/16
	    range: [$FIRST, $LAST]
	    router: $ROUTER
	    lease_time: ${LEASE}s
	YAML
	ip netns exec "$SRV" taskset -c 0 "$BIN" serve --config "$WORK/branchbox/branchbox.yaml" >"$WORK/branchbox/log" 2>&1 &
	SERVER_PID=$!
}

start_kea() {
	mkdir -p "$WORK/kea"
	cat >"$WORK/kea/kea-dhcp4.json" <<-JSON
	{ "Dhcp4": {
	    "interfaces-config": { "interfaces": ["s0"] },
	    "lease-database": { "type": "memfile", "persist": true, "lfc-interval": 0,
	                        "name": "$WORK/kea/leases.csv" },
	    "multi-threading": { "enable-multi-threading": false },
	    "valid-lifetime": $LEASE,
	    "subnet4": [ { "id": 1, "subnet": "10.77.0.0/16",
	                   "pools": [ { "pool": "$FIRST - $LAST" } ],
	                   "option-data": [ { "name": "routers", "data": "$ROUTER" },
	                                    { "name": "domain-name", "data": "$DOMAIN" },
	                                    { "name": "domain-name-servers", "data": "10.77.0.1" } ] } ],
	    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
	                   "output_options": [ { "output": "$WORK/kea/log" } ] } ]
	} }
	JSON
	ip netns exec "$SRV" env KEA_PIDFILE_DIR="$WORK/kea" KEA_LOCKFILE_DIR="$WORK/kea" \
		taskset -c 0 kea-dhcp4 -c "$WORK/kea/kea-dhcp4.json" >"$WORK/kea/out" 2>&1 &
	SERVER_PID=$!
}

start_dnsmasq() {
	mkdir -p "$WORK/dnsmasq"
	ip netns exec "$SRV" taskset -c 0 dnsmasq --keep-in-foreground --port=0 --no-ping --dhcp-authoritative \
		--quiet-dhcp --dhcp-lease-max=200000 --interface=s0 --user=root \
		--pid-file="$WORK/dnsmasq/pid" --dhcp-leasefile="$WORK/dnsmasq/leases" \
		--dhcp-range="$FIRST,$LAST,255.255.0.0,${LEASE}s" \
		--dhcp-option=option:router,$ROUTER --dhcp-option=option:domain-name,$DOMAIN \
		--dhcp-option=option:dns-server,10.77.0.1 >"$WORK/dnsmasq/log" 2>&1 &
	SERVER_PID=$!
}

# wait_ready polls with one-second trickles until the server answers
# (perfdhcp -n 1 exits before a reply can arrive).
wait_ready() {
	for _ in $(seq 60); do
		kill -0 "$SERVER_PID" 2>/dev/null || return 1
		got=$(ip netns exec "$CLI" perfdhcp -4 -l 10.77.0.2 -R 10 -p 1 -r 10 10.77.0.1 2>/dev/null |
			awk '/^received packets:/ { print $3; exit }')
		if [ "${got:-0}" -gt 0 ]; then
			return 0
		fi
		sleep 0.5
	done
	return 1
}

# summarize turns perfdhcp -x t output into
# "rate do_loss ra_loss do_p50 do_p99 ra_p50 ra_p99" (ms, %).
summarize() {
	local f=$1
	# One latency per answered exchange, per kind, sorted for percentiles.
	awk '
	/^\*\*\*Timestamps for packets: DISCOVER-OFFER/ { out = FILENAME ".do"; next }
	/^\*\*\*Timestamps for packets: REQUEST-ACK/ { out = FILENAME ".ra"; next }
	/^sent \/ received:/ && out != "" { printf "%.3f\n", ($6 - $4) * 1000 > out }
	' "$f"
	for k in do ra; do
		touch "$f.$k"
		sort -n -o "$f.$k" "$f.$k"
	done
	pct() {
		awk -v p="$2" '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int(p * NR + 0.999999); if (i < 1) i = 1; printf "%.2f", v[i] }' "$1"
	}
	awk '
	/^Rate:/ { rate = $2 }
	/^\*\*\*Statistics for: DISCOVER-OFFER/ { sec = "do" }
	/^\*\*\*Statistics for: REQUEST-ACK/ { sec = "ra" }
	/^drops ratio:/ { loss[sec] = $3 }
	END { printf "%s %s %s", rate, loss["do"], loss["ra"] }
	' "$f"
	echo " $(pct "$f.do" .5) $(pct "$f.do" .99) $(pct "$f.ra" .5) $(pct "$f.ra" .99)"
}

# cpu_ticks prints a process's user+system CPU in clock ticks; sys_ticks
# its system part (the kernel's work for its sockets and disk).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
sys_ticks() { awk '{ print $15 }' "/proc/$1/stat"; }

# cpu1_busy prints "busy total" jiffies of CPU 1 (perfdhcp's); given an
# earlier reading, the percentage busy since then instead.
cpu1_busy() {
	awk -v prev="${1:-}" '$1 == "cpu1" {
		busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6
		if (prev == "") { print busy "," total; exit }
		split(prev, p, ","); printf "%.0f", 100 * (busy - p[1]) / (total - p[2]); exit
	}' /proc/stat
}

# measure SERVER RATE runs perfdhcp once against a fresh server and sets
# MEASURED to "rate do_loss ra_loss do_p50 do_p99 ra_p50 ra_p99 cpu_ticks
# driver_cpu% sys_ticks", or "failed". (Not a subshell: the exit trap must see
# SERVER_PID.)
measure() {
	local server=$1 rate=$2 out="$WORK/$1.$2.perfdhcp"
	log "$server: starting"
	"start_$server"
	if ! wait_ready; then
		log "$server did not answer; its log:"
		cat "$WORK/$server"/log* "$WORK/$server"/out 2>/dev/null >&2 || true
		stop_server
		MEASURED=failed
		return
	fi
	log "$server: perfdhcp at $rate DORA/s for ${DURATION}s, $CLIENTS clients"
	local cpu0 sys0 busy0 cpu sys drv
	cpu0=$(cpu_ticks "$SERVER_PID") sys0=$(sys_ticks "$SERVER_PID") busy0=$(cpu1_busy)
	ip netns exec "$CLI" taskset -c 1 perfdhcp -4 -l 10.77.0.2 -R "$CLIENTS" -p "$DURATION" -r "$rate" -x t 10.77.0.1 \
		>"$out" 2>&1 || true
	cpu=$(($(cpu_ticks "$SERVER_PID") - cpu0)) sys=$(($(sys_ticks "$SERVER_PID") - sys0))
	drv=$(cpu1_busy "$busy0")
	stop_server
	MEASURED="$(summarize "$out") $cpu $drv $sys"
	rm -f "$out" "$out".*
}

# median_of takes one result line per round and prints the median of each
# column; a failed round makes the whole result "failed".
median_of() {
	if grep -q failed <<<"$1"; then echo failed; return; fi
	awk 'NF { rows++; for (i = 1; i <= NF; i++) v[i, rows] = $i; n = NF }
	END {
		for (i = 1; i <= n; i++) {
			# insertion sort of column i over the rounds (a handful)
			for (r = 1; r <= rows; r++) c[r] = v[i, r]
			for (r = 2; r <= rows; r++) { x = c[r]; k = r - 1; while (k >= 1 && c[k] + 0 > x + 0) { c[k + 1] = c[k]; k-- } c[k + 1] = x }
			printf "%s%s", c[int((rows + 1) / 2)], (i < n ? " " : "\n")
		}
	}' <<<"$1"
}

# Rounds alternate the servers, so a noisy minute on a shared VM lands on
# each of them rather than on one.
declare -A RUNS
for round in $(seq "$REPEAT"); do
	for server in $SERVERS; do
		measure "$server" "$RATE"
		log "$server round $round at $RATE: $MEASURED"
		RUNS[$server]+="$MEASURED"$'\n'
	done
	for server in $LOW_SERVERS; do
		measure "$server" "$LOW_RATE"
		log "$server round $round at $LOW_RATE: $MEASURED"
		RUNS[low.$server]+="$MEASURED"$'\n'
	done
done

TICK=$(getconf CLK_TCK)
cpu_per_lease() { # µs of server CPU per lease
	awk -v c="$1" -v r="$2" -v d="$DURATION" -v t="$TICK" 'BEGIN { if (r > 0) printf "%.0f", c / t * 1e6 / (r * d); else print "-" }'
}

# table PREFIX RATE SERVERS prints one markdown table of medians.
table() {
	local prefix=$1 rate=$2 servers=$3 bb bbcpl
	declare -A res
	for server in $servers; do
		res[$server]=$(median_of "${RUNS[$prefix$server]:-failed}")
	done
	read -r bb _ _ _ _ _ _ bbcpu _ <<<"${res[branchbox]:-failed}"
	[ "$bb" = failed ] && bb=0
	bbcpl=$(cpu_per_lease "${bbcpu:-0}" "$bb")
	echo "### DHCP at $rate offered DORA/s (perfdhcp, relayed, ${DURATION}s, $CLIENTS clients; median of $REPEAT alternating rounds; server on CPU 0, perfdhcp on CPU 1)"
	echo
	echo "| server | leases/s | server CPU µs / lease (of which system) | DISCOVER→OFFER p50 / p99 ms | REQUEST→ACK p50 / p99 ms | loss DO / RA % | perfdhcp CPU % | branchbox ÷ server, leases/s | server ÷ branchbox, CPU / lease |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for server in $servers; do
		local r=${res[$server]}
		if [ "$r" = failed ]; then
			echo "| $server | failed | | | | | | | |"
			continue
		fi
		read -r rate dol ral dop50 dop99 rap50 rap99 cpu drv sys <<<"$r"
		local cpl spl ratio cratio
		cpl=$(cpu_per_lease "$cpu" "$rate") spl=$(cpu_per_lease "$sys" "$rate")
		ratio=$(awk -v a="$bb" -v b="$rate" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }')
		cratio=$(awk -v a="$bbcpl" -v b="$cpl" 'BEGIN { if (a > 0 && b > 0) printf "%.2f×", b / a; else print "-" }')
		echo "| $server | $rate | $cpl ($spl) | $dop50 / $dop99 | $rap50 / $rap99 | $dol / $ral | $drv | $ratio | $cratio |"
	done
	echo
}

table "" "$RATE" "$SERVERS"
if [ -n "$LOW_SERVERS" ]; then
	table low. "$LOW_RATE" "$LOW_SERVERS"
fi
echo "Each cell is the median over the rounds, column by column. Server CPU is the server process's user+system"
echo "time over the run; in brackets its system part, the kernel's work for its sockets (and for branchbox its"
echo "fsyncs). perfdhcp CPU is CPU 1's busy share. When perfdhcp is near 100% the offered rate is what the driver"
echo "can push and its own queueing shows in the latencies; the second table, at a rate the driver keeps up with,"
echo "is where latency compares servers. branchbox commits every lease through raft (fsync'd) before its ACK;"
echo "kea uses memfile with persist, dnsmasq its lease file."
