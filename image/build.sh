#!/bin/sh
# make image: image/out/vmlinuz (+ vmlinux, the same kernel uncompressed, for
# PVH boot) and image/out/initramfs.cpio.gz (+ initramfs.cpio.lz4, the same
# archive, quicker to unpack under TCG), a u-root initramfs whose uinit
# (image/cmd/boxinit) mounts the config disk and runs /bin/branchbox.
#
# Inputs are all pinned: the kernel .deb by version and sha256
# (image/kernel.env), u-root and mkuimage by go.mod, the template by
# image/uimage.yaml. The kernel .deb is cached in $IMAGE_CACHE
# (default image/out/cache), so only the first build downloads it.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=image/out
CACHE=${IMAGE_CACHE:-$OUT/cache}
GO=${GO:-go}
. image/kernel.env

die() { echo "image: $*" >&2; exit 1; }
for p in dpkg-deb depmod modprobe xz gzip lz4 sha256sum apt-get; do
	command -v $p >/dev/null || die "$p not found (make deps installs it)"
done
start=$(date +%s)
mkdir -p "$CACHE" "$OUT"

# 1. The kernel package, fetched once.
deb=$CACHE/${KERNEL_PKG}_${KERNEL_VERSION}_amd64.deb
if [ ! -f "$deb" ]; then
	echo "image: fetching $KERNEL_PKG $KERNEL_VERSION"
	# apt-get download writes into the current directory. As root it warns
	# that the _apt sandbox user cannot write there; the download is the same.
	fetch() { (cd "$CACHE" && apt-get download -q "$KERNEL_PKG=$KERNEL_VERSION") 2>&1 | grep -v unsandboxed || true; }
	fetch
	# A machine whose package lists are old or absent does not know it yet.
	[ -f "$deb" ] || { apt-get update -qq && fetch; }
	[ -f "$deb" ] || die "could not download $KERNEL_PKG=$KERNEL_VERSION: is it still in the Debian archive? (image/kernel.env pins it)"
fi
echo "$KERNEL_SHA256  $deb" | sha256sum -c --quiet - || die "$deb does not match the sha256 in image/kernel.env"

# 2. Kernel and modules, redone only when the .deb or the module list changes.
stamp=$OUT/stage/.kernel-stamp
want="$KERNEL_SHA256 $(cat image/modules.txt image/modules-fs.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "image: extracting kernel $KERNEL_RELEASE and staging modules"
	rm -rf "$OUT/kernel" "$OUT/stage"
	dpkg-deb -x "$deb" "$OUT/kernel"
	# The .deb ships no modules.dep: its postinst makes it.
	depmod -b "$OUT/kernel" "$KERNEL_RELEASE"
	cp "$OUT/kernel/boot/vmlinuz-$KERNEL_RELEASE" "$OUT/vmlinuz"
	# vmlinux for PVH boot: the bzImage's payload is one xz stream; under TCG
	# skipping the real-mode loader and the decompressor saves ~3.4 s.
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$OUT/vmlinuz" | head -1 | cut -d: -f1)
	[ -n "$off" ] || die "no xz stream in $OUT/vmlinuz"
	tail -c +$((off + 1)) "$OUT/vmlinuz" | xz -dc --single-stream >"$OUT/vmlinux"

	# modules-fs.txt: each line's first word is a file system type.
	mods="$(sed -e 's/#.*//' image/modules.txt) $(sed -e 's/#.*//' -e 's/^ *[^ ]*//' image/modules-fs.txt)"
	kdir=$OUT/stage/lib/modules/$KERNEL_RELEASE
	mkdir -p "$kdir" "$OUT/stage/bin"
	for m in $mods; do
		modprobe -d "$OUT/kernel" -S "$KERNEL_RELEASE" --show-depends "$m" >/dev/null ||
			die "module $m (image/modules*.txt) is not in $KERNEL_PKG"
		modprobe -d "$OUT/kernel" -S "$KERNEL_RELEASE" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
	done | sort -u | while read -r ko; do
		rel=${ko#*/lib/modules/$KERNEL_RELEASE/}
		mkdir -p "$kdir/$(dirname "$rel")"
		cp "$ko" "$kdir/$rel"
	done
	cp "$OUT/kernel/lib/modules/$KERNEL_RELEASE/modules.order" "$OUT/kernel/lib/modules/$KERNEL_RELEASE/modules.builtin"* "$kdir/"
	depmod -b "$OUT/stage" "$KERNEL_RELEASE"
	# boxinit reads modules.dep and modules.alias alone. There is no
	# modules-load.d: u-root's init would load every module it names.
	find "$kdir" -maxdepth 1 -type f ! -name modules.dep ! -name modules.alias -delete
	sed -e 's/#.*//' -e '/^ *$/d' image/modules-fs.txt >"$OUT/stage/lib/modules-fs.conf"
	rm -rf "$OUT/kernel"
	echo "$want" >"$stamp"
fi

# 3. branchbox itself, a static binary beside the busybox. GOAMD64=v1: QEMU's
# default CPU model and older branch hardware lack v2+ instructions.
export CGO_ENABLED=0 GOAMD64=v1 GOOS=linux GOARCH=amd64 GOFLAGS=-buildvcs=false
$GO build -trimpath -ldflags '-s -w' -o "$OUT/stage/bin/branchbox" ./appliance/cmd/branchbox

# 4. The initramfs: init, the console commands and boxinit in one busybox.
# (u-root warns that Go 1.26 is not a version it tested; it builds fine.)
$GO tool mkuimage -config-file image/uimage.yaml -config branchbox -o "$OUT/initramfs.cpio" 2>"$OUT/mkuimage.log" ||
	{ cat "$OUT/mkuimage.log" >&2; die "mkuimage failed"; }
gzip -9 -n -c "$OUT/initramfs.cpio" >"$OUT/initramfs.cpio.gz"
# The same archive for a fast boot under TCG: the kernel inflates gzip at
# ~50 MB/s there, ~0.5 s of every boot, and unpacks LZ4 in a fraction of
# that. The kernel's LZ4 loader wants the legacy frame format (-l).
lz4 -l -9 -q -f "$OUT/initramfs.cpio" "$OUT/initramfs.cpio.lz4"

# The kernel command line the boot loader should pass (vm.sh and the VM
# tests do). cryptomgr.notests skips the kernel's crypto self-tests, ~0.5 s
# of a TCG boot: branchbox does its cryptography in Go, and the kernel's own
# algorithms are still the stock, tested Debian build.
cp image/cmdline "$OUT/cmdline"

size() { stat -c %s "$1"; }
echo "image: $OUT/vmlinuz $(size "$OUT/vmlinuz") B, $OUT/vmlinux $(size "$OUT/vmlinux") B"
echo "image: $OUT/initramfs.cpio.gz $(size "$OUT/initramfs.cpio.gz") B, $OUT/initramfs.cpio.lz4 $(size "$OUT/initramfs.cpio.lz4") B ($(size "$OUT/initramfs.cpio") B uncompressed)"
echo "image: sha256 $(sha256sum "$OUT/initramfs.cpio.gz" | cut -d' ' -f1) initramfs.cpio.gz"
echo "image: built in $(($(date +%s) - start)) s"
