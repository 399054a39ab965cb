#!/bin/sh
# make demo: a throw-away branch LAN in two network namespaces — branchbox
# serving DHCP, DNS and the provisioner on one side, `amtsim` with
# $DEMO_DEVICES factory-fresh AMT devices on the other — and live progress
# until every device is activated. Ends with "activated N/N" (exit 0), or
# lists the devices that did not make it and why (exit 1).
#
#   DEMO_DEVICES=20     how many simulated devices (at most 240)
#   DEMO_TIMEOUT=300    seconds to wait for all of them
#   DEMO_KEEP=1         keep the work directory (config, logs) afterwards
#   DEMO_METRICS=FILE   save the appliance's /metrics here before stopping
#   DEMO_AUDIT=FILE     save the audit log (JSON) here before stopping
#
# Needs root (network namespaces), iproute2 and curl; no KVM.
set -eu

N=${DEMO_DEVICES:-20}
TIMEOUT=${DEMO_TIMEOUT:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/bin

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (it creates network namespaces)"
case $N in '' | *[!0-9]*) die "DEMO_DEVICES=$N is not a number" ;; esac
[ "$N" -ge 1 ] && [ "$N" -le 240 ] || die "DEMO_DEVICES must be 1..240"
for f in branchbox amtsim; do
	[ -x "$BIN/$f" ] || die "$BIN/$f missing: run make build"
done
for p in ip curl; do
	command -v $p >/dev/null || die "$p not found (make deps installs it)"
done

# Unique names so two demos (or a crashed earlier one) never collide.
TAG=$$
APP=bbdemo-app-$TAG
LAN=bbdemo-lan-$TAG
WORK=$(mktemp -d /tmp/branchbox-demo.XXXXXX)
DOMAIN=branch1.demo.example
BOX_PID=
SIM_PID=

cleanup() {
	status=$?
	trap - EXIT INT TERM
	for pid in $SIM_PID $BOX_PID; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $SIM_PID $BOX_PID; do
		# Give each a few seconds to remove its interfaces, then insist.
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	ip netns del "$LAN" 2>/dev/null || true
	ip netns del "$APP" 2>/dev/null || true
	# A failed run keeps its logs for a look; success and Ctrl-C leave nothing.
	if [ "${DEMO_KEEP:-}" = 1 ] || [ $status -eq 1 ]; then
		echo "demo: logs and config kept in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_app() { ip netns exec "$APP" "$@"; }
in_lan() { ip netns exec "$LAN" "$@"; }

# The branch LAN: appliance 10.77.0.1 on one end of a veth pair, the
# devices' macvlans on the other.
ip netns add "$APP"
ip netns add "$LAN"
ip link add lan0 netns "$APP" type veth peer name lan0 netns "$LAN"
in_app ip link set lo up
in_app ip addr add 10.77.0.1/24 dev lan0
in_app ip link set lan0 up
in_lan ip link set lo up
in_lan ip link set lan0 up

"$BIN/branchbox" demo-ca --domain "$DOMAIN" --out "$WORK/ca" >/dev/null
ROOT_HASH=$(cat "$WORK/ca/root.sha256")
# An AMT-strong admin password: 8+ characters, upper, lower, digit, symbol.
printf 'Demo-%s!a7\n' "$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" >"$WORK/admin.pass"
chmod 600 "$WORK/admin.pass"

cat >"$WORK/branchbox.yaml" <<EOF
node:
  id: demo
  data_dir: $WORK/data
  api: 127.0.0.1:8443
dns:
  listen: ":53"
provisioner:
  listen: ":9971"
sites:
  - name: branch1
    domain: $DOMAIN
    interface: lan0
    subnet: 10.77.0.0/24
    range: [10.77.0.10, 10.77.0.250]
    router: 10.77.0.1
    lease_time: 1h
    provisioning_cert:
      chain: $WORK/ca/chain.pem
      key: $WORK/ca/key.pem
    profile: demo
    naming_template: amt-{uuid8}
    allow_template: true
profiles:
  - name: demo
    admin_password_file: $WORK/admin.pass
EOF
"$BIN/branchbox" check-config "$WORK/branchbox.yaml" >/dev/null

ctl() { in_app "$BIN/branchbox" ctl --config "$WORK/branchbox.yaml" "$@"; }

echo "demo: branch LAN 10.77.0.0/24 in $LAN, branchbox on 10.77.0.1 in $APP, site domain $DOMAIN"
# Started directly (not through a shell function) so $! is the process
# itself: ip netns exec execs the program in place.
ip netns exec "$APP" "$BIN/branchbox" serve --config "$WORK/branchbox.yaml" >"$WORK/branchbox.log" 2>&1 &
BOX_PID=$!
up_by=$(($(date +%s) + 30))
until ctl --output json status 2>/dev/null | grep -q '"role": "leader"'; do
	kill -0 $BOX_PID 2>/dev/null || { tail -20 "$WORK/branchbox.log" >&2; die "branchbox exited"; }
	[ "$(date +%s)" -lt $up_by ] || { tail -20 "$WORK/branchbox.log" >&2; die "branchbox did not come up in 30s"; }
	sleep 0.2
done

echo "demo: starting $N factory-fresh AMT devices (custom root hash ${ROOT_HASH%"${ROOT_HASH#????????????????}"}...)"
# Short hello retries: the demo need not wait minutes for a retry.
ip netns exec "$LAN" "$BIN/amtsim" --count "$N" --interface lan0 --custom-root-hash "$ROOT_HASH" \
	--hello-schedule 20x3s,100x10s --status-listen 127.0.0.1:16999 \
	>"$WORK/amtsim.log" 2>&1 &
SIM_PID=$!

# devices prints one line per device the appliance knows:
# "<state> <uuid> <last_error>".
devices() {
	ctl --output json devices 2>/dev/null |
		sed -n 's/^ *"\(uuid\|state\|last_error\)": "\(.*\)",\{0,1\}$/\1 \2/p' |
		awk '$1 == "uuid" { u = $2 } $1 == "state" { s = $2 }
		     $1 == "last_error" { sub(/^last_error /, ""); print s, u, $0 }'
}

start=$(date +%s)
last=
while :; do
	kill -0 $BOX_PID 2>/dev/null || { tail -20 "$WORK/branchbox.log" >&2; die "branchbox exited"; }
	kill -0 $SIM_PID 2>/dev/null || { tail -20 "$WORK/amtsim.log" >&2; die "amtsim exited"; }
	list=$(devices)
	activated=$(printf '%s\n' "$list" | grep -c '^activated ' || true)
	activating=$(printf '%s\n' "$list" | grep -c '^activating ' || true)
	seen=$(printf '%s\n' "$list" | grep -c '^seen ' || true)
	failed=$(printf '%s\n' "$list" | grep -c '^failed ' || true)
	leases=$(in_lan curl -fsS http://127.0.0.1:16999/ 2>/dev/null | grep -c '"ip":' || true)
	elapsed=$(($(date +%s) - start))
	line="[${elapsed}s] addresses $leases/$N  hello seen $seen  activating $activating  activated $activated/$N  failed $failed"
	[ "$line" = "$last" ] || echo "$line"
	last=$line
	[ "$activated" -ge "$N" ] && break
	if [ $elapsed -ge "$TIMEOUT" ]; then
		echo "demo: timed out after ${TIMEOUT}s; devices not activated:" >&2
		printf '%s\n' "$list" | grep -v -e '^activated ' -e '^$' | sed 's/^/  /' >&2 || true
		# Devices the appliance never heard from, as amtsim sees them.
		in_lan curl -fsS http://127.0.0.1:16999/ 2>/dev/null |
			awk -v known="$(printf '%s\n' "$list" | awk '{ print $2 }')" '
			BEGIN { split(known, k, "\n"); for (i in k) seen[k[i]] = 1 }
			/"(index|ip|uuid|last_error)":/ {
				key = $1; gsub(/[":]/, "", key)
				val = $0; sub(/^[^:]*: */, "", val); sub(/,$/, "", val); gsub(/^"|"$/, "", val)
				d[key] = val
			}
			/^  }/ {
				if (!(d["uuid"] in seen))
					printf "  device %s %s (%s): never reached the provisioner: %s\n", d["index"], d["uuid"], d["ip"] == "" ? "no address" : d["ip"], d["last_error"]
				delete d
			}' >&2 || true
		echo "  amtsim log: $WORK/amtsim.log, branchbox log: $WORK/branchbox.log" >&2
		echo "activated $activated/$N"
		exit 1
	fi
	sleep 1
done

if [ -n "${DEMO_METRICS:-}" ]; then
	in_app curl -fsS http://127.0.0.1:8443/metrics >"$DEMO_METRICS"
fi
if [ -n "${DEMO_AUDIT:-}" ]; then
	ctl --output json audit --limit 10000 >"$DEMO_AUDIT"
fi
echo "activated $N/$N"
