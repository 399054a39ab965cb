#!/bin/sh
# Installs the Debian packages the tests, demo and benchmarks use.
# Idempotent and quiet: only missing packages are installed.
set -eu
PKGS="iproute2 udhcpc isc-dhcp-client isc-dhcp-relay dnsutils openssl procps psmisc curl chromium"
# The appliance image (make image) and its VM boot tests.
PKGS="$PKGS qemu-system-x86 kmod xz-utils lz4 e2fsprogs"
if [ "${1:-}" = "bench" ]; then
	PKGS="$PKGS kea-admin kea-dhcp4-server dnsmasq-base dnsperf"
fi
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
