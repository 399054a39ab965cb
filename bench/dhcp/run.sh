#!/usr/bin/env bash
# DHCP CPU per lease side by side: branchbox and Kea serve the same pool in
# the same network-namespace set-up at each offered rate, alternating in
# every round, each driven by perfdhcp (which acts as a relay, so this
# measures the giaddr path); dnsmasq once at the highest rate for scale.
# Prints markdown tables on stdout; progress and every round go to stderr.
#
# Usage: bench/dhcp/run.sh            (as root, from the repository root)
# Environment: BRANCHBOX_BIN (default bin/branchbox), RATES (offered DORA/s,
# default "1000 2000 4000"), DURATION (seconds, default 10), CLIENTS
# (default 10000), REPEAT (rounds, default 3), EXTRA (servers measured once
# per round at the highest rate only, default "dnsmasq"; empty skips),
# QUIET_WAIT (seconds each run may wait for an idle machine, default 120).
# Debian packages: kea-admin (perfdhcp), kea-dhcp4-server, dnsmasq-base,
# util-linux (taskset), iproute2.
set -euo pipefail

BIN=${BRANCHBOX_BIN:-bin/branchbox}
RATES=${RATES:-1000 2000 4000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-10000}
REPEAT=${REPEAT:-3}
EXTRA=${EXTRA-dnsmasq}
QUIET_WAIT=${QUIET_WAIT:-120}
TOP_RATE=$(tr ' ' '\n' <<<"$RATES" | sort -n | tail -1)
# perfdhcp at or above this share of its CPU is the limit, not the server.
DRIVER_BUSY=90

log() { echo "bench/dhcp: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for p in perfdhcp:kea-admin kea-dhcp4:kea-dhcp4-server dnsmasq:dnsmasq-base taskset:util-linux ip:iproute2; do
	command -v "${p%%:*}" >/dev/null || die "${p%%:*} missing: apt-get install ${p#*:}"
done
[ -n "$RATES" ] || die "RATES is empty"
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

# cpu_ticks prints a process's user+system CPU in clock ticks (all its
# threads, exited ones included); sys_ticks its system part (the kernel's
# work for its sockets and disk).
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

TICK=$(getconf CLK_TCK)

# all_busy prints the busy jiffies of all CPUs together.
all_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# children_ticks prints the CPU time, in ticks, of this shell's children
# that have ended (perfdhcp, once it has), from the times builtin.
children_ticks() {
	times | awk -v t="$TICK" 'NR == 2 {
		s = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
		printf "%.0f", s * t }'
}

# wait_quiet waits, up to QUIET_WAIT seconds, for the machine to be idle
# (under 5% of a CPU over 2 s): other work on a shared VM (a build) takes
# CPU and cache from whichever server runs then.
wait_quiet() {
	local waited=0 a b
	while [ "$waited" -lt "$QUIET_WAIT" ]; do
		a=$(all_busy)
		sleep 2
		b=$(all_busy)
		[ $((b - a)) -le $((TICK / 10)) ] && break
		waited=$((waited + 2))
	done
	[ "$waited" -gt 0 ] && log "waited ${waited}s for other work on the machine to stop"
	return 0
}

# measure SERVER RATE runs perfdhcp once against a fresh server and sets
# MEASURED to "rate do_loss ra_loss do_p50 do_p99 ra_p50 ra_p99 cpu_ticks
# driver_cpu% sys_ticks others%", or "failed"; others% is the CPU that
# neither the server nor perfdhcp used meanwhile (other processes, and
# interrupts not charged to either), in % of one CPU. (Not a subshell: the
# exit trap must see SERVER_PID.)
measure() {
	local server=$1 rate=$2 out="$WORK/$1.$2.perfdhcp"
	wait_quiet
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
	local cpu0 sys0 busy0 all0 kids0 cpu sys drv others
	cpu0=$(cpu_ticks "$SERVER_PID") sys0=$(sys_ticks "$SERVER_PID") busy0=$(cpu1_busy) all0=$(all_busy) kids0=$(children_ticks)
	ip netns exec "$CLI" taskset -c 1 perfdhcp -4 -l 10.77.0.2 -R "$CLIENTS" -p "$DURATION" -r "$rate" -x t 10.77.0.1 \
		>"$out" 2>&1 || true
	cpu=$(($(cpu_ticks "$SERVER_PID") - cpu0)) sys=$(($(sys_ticks "$SERVER_PID") - sys0))
	drv=$(cpu1_busy "$busy0")
	others=$(awk -v all=$(($(all_busy) - all0)) -v srv="$cpu" -v kids=$(($(children_ticks) - kids0)) -v t="$TICK" -v d="$DURATION" \
		'BEGIN { o = 100 * (all - srv - kids) / (t * d); printf "%.0f", (o < 0 ? 0 : o) }')
	stop_server
	MEASURED="$(summarize "$out") $cpu $drv $sys $others"
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

# Every round measures each rate with branchbox and Kea back to back, in
# alternating order, so a noisy minute on a shared VM lands on both.
declare -A RUNS
for round in $(seq "$REPEAT"); do
	pair="branchbox kea"
	[ $((round % 2)) = 0 ] && pair="kea branchbox"
	for rate in $RATES; do
		for server in $pair; do
			measure "$server" "$rate"
			log "round $round, $server at $rate/s: $MEASURED"
			RUNS[$server.$rate]+="$MEASURED"$'\n'
		done
	done
	for server in $EXTRA; do
		measure "$server" "$TOP_RATE"
		log "round $round, $server at $TOP_RATE/s: $MEASURED"
		RUNS[$server.$TOP_RATE]+="$MEASURED"$'\n'
	done
done

per_lease() { # µs of server CPU per lease, from ticks and leases/s
	awk -v c="$1" -v r="$2" -v d="$DURATION" -v t="$TICK" 'BEGIN { if (r > 0) printf "%.0f", c / t * 1e6 / (r * d); else print "-" }'
}

# limit names what held a run back: the driver when perfdhcp's CPU was
# busy, the server when it answered under 99% of the offered rate, else
# nothing (the offered rate was met).
limit() { # leases/s offered perfdhcp-CPU%
	awk -v r="$1" -v o="$2" -v d="$3" -v busy="$DRIVER_BUSY" 'BEGIN {
		if (d + 0 >= busy) print "driver"; else if (r + 0 < 0.99 * o) print "server"; else print "—" }'
}

# cells SERVER RATE sets C_RATE C_CPU (total, user + system) C_TOTAL C_ACK
# C_LOSS C_DRV C_LIMIT C_OTHERS from the median of the server's rounds at RATE.
cells() {
	local r rate dol ral dop50 dop99 rap50 rap99 cpu drv sys others
	r=$(median_of "${RUNS[$1.$2]:-failed}")
	if [ "$r" = failed ]; then
		C_RATE=failed C_CPU=- C_TOTAL=0 C_ACK=- C_LOSS=- C_DRV=- C_LIMIT=- C_OTHERS=-
		return
	fi
	read -r rate dol ral dop50 dop99 rap50 rap99 cpu drv sys others <<<"$r"
	C_OTHERS=$others
	C_TOTAL=$(per_lease "$cpu" "$rate")
	C_CPU="$C_TOTAL ($(per_lease $((cpu - sys)) "$rate") + $(per_lease "$sys" "$rate"))"
	C_RATE=$(printf '%.0f' "$rate") C_ACK="$rap50 / $rap99" C_LOSS="$ral" C_DRV="$drv"
	C_LIMIT=$(limit "$rate" "$2" "$drv")
}

echo "### DHCP CPU per lease: branchbox against Kea (perfdhcp, relayed, ${DURATION}s per run, $CLIENTS clients; median of $REPEAT alternating rounds; server on CPU 0, perfdhcp on CPU 1)"
echo
echo "| offered DORA/s | leases/s, branchbox · Kea | CPU µs / lease (user + system), branchbox | Kea | Kea ÷ branchbox, CPU / lease | REQUEST→ACK p50 / p99 ms, branchbox · Kea | REQUEST loss %, branchbox · Kea | perfdhcp CPU %, branchbox · Kea runs | limited by, branchbox · Kea | other CPU %, branchbox · Kea runs |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for rate in $RATES; do
	cells branchbox "$rate"
	b_rate=$C_RATE b_cpu=$C_CPU b_total=$C_TOTAL b_ack=$C_ACK b_loss=$C_LOSS b_drv=$C_DRV b_limit=$C_LIMIT b_others=$C_OTHERS
	cells kea "$rate"
	ratio=$(awk -v b="$b_total" -v k="$C_TOTAL" 'BEGIN { if (b > 0 && k > 0) printf "%.2f×", k / b; else print "-" }')
	echo "| $rate | $b_rate · $C_RATE | $b_cpu | $C_CPU | $ratio | $b_ack · $C_ACK | $b_loss · $C_LOSS | $b_drv · $C_DRV | $b_limit · $C_LIMIT | $b_others · $C_OTHERS |"
done
echo
if [ -n "$EXTRA" ]; then
	echo "| at $TOP_RATE offered DORA/s | leases/s | CPU µs / lease (user + system) | REQUEST→ACK p50 / p99 ms | REQUEST loss % | perfdhcp CPU % | limited by |"
	echo "|---|---|---|---|---|---|---|"
	for server in $EXTRA; do
		cells "$server" "$TOP_RATE"
		echo "| $server | $C_RATE | $C_CPU | $C_ACK | $C_LOSS | $C_DRV | $C_LIMIT |"
	done
	echo
fi
echo "Each cell is the median over the rounds, column by column. CPU per lease is the server process's user +"
echo "system time during the run (/proc/PID/stat, every thread) over the leases perfdhcp got; Kea ÷ branchbox"
echo "above 1.00× means branchbox spends less. perfdhcp CPU is CPU 1's busy share; at $DRIVER_BUSY% or more the"
echo "driver is the limit and its own queueing shows in the latencies. Other CPU is what neither the server nor perfdhcp"
echo "used meanwhile, in % of one CPU: other processes on a shared machine, and interrupts charged to neither (each run"
echo "first waits up to ${QUIET_WAIT}s for the machine to be idle). branchbox commits every lease through raft"
echo "(fdatasync'd) before its ACK; Kea uses memfile with persist (written, never fsync'd), dnsmasq its lease file."
