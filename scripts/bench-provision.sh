#!/bin/sh
# One `make bench` row: AMT activations against amtsim. Runs the demo
# (scripts/demo.sh) with $BENCH_DEVICES (200) simulated devices booting at
# once and reads the appliance's audit log: activations/s is the device
# count over the time from the first hello to the last activation, and
# p50/p99 are each device's time from its first hello to its activation
# (the provisioner's branchbox_provisioner_hello_to_activated_seconds
# histogram measures the same, in power-of-two buckets). No peer runs
# against amtsim, so the peer and ratio columns are empty.
#
# Root, after `make build`. Prints one markdown table row on stdout.
set -eu
N=${BENCH_DEVICES:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/branchbox-bench-provision.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! DEMO_DEVICES=$N DEMO_TIMEOUT=${BENCH_TIMEOUT:-600} DEMO_AUDIT="$TMP/audit.json" \
	sh "$ROOT/scripts/demo.sh" >"$TMP/demo.log" 2>&1; then
	tail -25 "$TMP/demo.log" >&2
	echo "bench-provision: the demo run failed" >&2
	exit 1
fi

# The audit JSON is indented one field a line, "time" before "action"
# before "subject". Times are RFC 3339 UTC; turned into seconds since the
# epoch so a run across midnight still subtracts right.
awk -v n="$N" '
function epoch(ts,    d, t, y, m, day, era, yoe, doy, doe, days) {
	split(substr(ts, 1, 10), d, "-")
	y = d[1] + 0; m = d[2] + 0; day = d[3] + 0
	y -= (m <= 2)
	era = int(y / 400); yoe = y - era * 400
	doy = int((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + day - 1
	doe = yoe * 365 + int(yoe / 4) - int(yoe / 100) + doy
	days = era * 146097 + doe - 719468
	split(substr(ts, 12), t, ":")
	return days * 86400 + t[1] * 3600 + t[2] * 60 + (t[3] + 0)
}
function field(line) { sub(/^[^:]*: *"/, "", line); sub(/",?$/, "", line); return line }
/^ *"time":/    { tm = epoch(field($0)) }
/^ *"action":/  { act = field($0) }
/^ *"subject":/ {
	subj = field($0)
	if (act == "activation.hello" && !(subj in hello)) hello[subj] = tm
	if (act == "activation.activated" && !(subj in done)) done[subj] = tm
}
END {
	k = 0; first = -1; last = 0
	for (u in done) {
		if (!(u in hello)) continue
		dur[++k] = done[u] - hello[u]
		if (first < 0 || hello[u] < first) first = hello[u]
		if (done[u] > last) last = done[u]
	}
	if (k != n) { printf "bench-provision: %d of %d devices have a hello and an activation in the audit log\n", k, n > "/dev/stderr"; exit 1 }
	for (i = 2; i <= k; i++) { v = dur[i]; for (j = i - 1; j >= 1 && dur[j] > v; j--) dur[j + 1] = dur[j]; dur[j + 1] = v }
	p50 = dur[int(0.50 * (k - 1)) + 1]; p99 = dur[int(0.99 * (k - 1)) + 1]
	printf "| AMT activations, %d amtsim devices at once: activations/s; p50 / p99 hello→activated | %.1f/s; %.2f s / %.2f s | — | — |\n", \
		k, k / (last - first), p50, p99
}' "$TMP/audit.json"
