#!/bin/sh
# make vm: boots image/out in QEMU, the serial console on this terminal
# (Ctrl-A X quits), eth0 on a tap bridged to lan0 in a throw-away network
# namespace, so that amtsim and DHCP clients in that namespace are the
# branch LAN the VM serves.
#
#   VM_DISK=FILE     config disk (default image/out/config.img when it exists;
#                    make config-disk CONFIG=... makes it). It is used in
#                    place: the box keeps its state on it between runs.
#   VM_APPEND=...    more kernel parameters (branchbox.ip=, branchbox.node=)
#   VM_ACCEL=auto    kvm | tcg | auto: KVM only when the probe below says it
#                    really works
#
# Needs root (the namespace and the tap).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/image/out
die() { echo "vm: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (it creates a network namespace and a tap)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (make deps installs qemu-system-x86)"
for f in vmlinuz vmlinux initramfs.cpio.gz initramfs.cpio.lz4; do
	[ -f "$OUT/$f" ] || die "$OUT/$f missing: run make image"
done

# /dev/kvm is not enough: on a nested host it may be kvm_pvm, which runs
# only PVM-enlightened kernels and leaves a stock one hanging or failing
# with "emulation failure". KVM counts only with real VMX/SVM under it.
kvm_works() {
	[ -c /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] &&
		{ [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } &&
		grep -qwE 'vmx|svm' /proc/cpuinfo
}
accel=${VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
	if kvm_works; then accel=kvm; else accel=tcg; fi
fi
case $accel in
kvm) kernel=$OUT/vmlinuz initrd=$OUT/initramfs.cpio.gz && set -- -accel kvm -cpu host ;;
# Under TCG the bzImage's decompressor alone costs ~3.4 s and inflating the
# gzip archive ~0.5 s: boot the uncompressed kernel through PVH and the
# LZ4 archive (the same files) instead.
tcg) kernel=$OUT/vmlinux initrd=$OUT/initramfs.cpio.lz4 && set -- -accel tcg ;;
*) die "VM_ACCEL=$accel: want kvm, tcg or auto" ;;
esac

disk=${VM_DISK:-}
[ -z "$disk" ] && [ -f "$OUT/config.img" ] && disk=$OUT/config.img
append="$(cat "$OUT/cmdline") ${VM_APPEND:-}"
if [ -n "$disk" ]; then
	[ -f "$disk" ] || die "VM_DISK=$disk: no such file"
	set -- "$@" -drive "file=$disk,if=virtio,format=raw"
else
	# No disk, no network.conf: give eth0 the lab address.
	append="$append branchbox.ip=10.77.0.1/24"
fi

NS=bbvm-$$
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
in_ns ip link add br0 type bridge
in_ns ip tuntap add dev tap0 mode tap
in_ns ip link add lan0 type veth peer name lanbr
for l in tap0 lanbr; do in_ns ip link set "$l" master br0; done
for l in br0 tap0 lanbr lan0; do in_ns ip link set "$l" up; done

cat <<EOF
vm: $accel, kernel $kernel, initramfs $initrd, disk ${disk:-none}
vm: the branch LAN is lan0 in namespace $NS; from another shell, for example:
      ip netns exec $NS udhcpc -i lan0 -n -q
      ip netns exec $NS bin/amtsim --count 5 --interface lan0 --custom-root-hash \$(cat ROOT.sha256)
vm: Ctrl-A X quits QEMU
EOF
# virtio-rng: without RDRAND (QEMU's default CPU) or an RNG device the
# kernel needs ~1 s to gather the entropy branchbox's keys wait for.
in_ns qemu-system-x86_64 "$@" -m 512 -smp 2 -nodefaults -display none -serial mon:stdio -no-reboot \
	-kernel "$kernel" -initrd "$initrd" -append "$append" \
	-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,romfile= \
	-device virtio-rng-pci
