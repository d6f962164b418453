#!/bin/sh
# One-time, idempotent setup of the kernel VM used by tests/tests/ipvs_vm.rs.
#
# Host tools come from apt (busybox-static, cpio, kmod, ipvsadm). qemu 7.2 and
# Debian's cloud kernel (which has IPVS and ipip as modules) are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into $KERNEL_VM_DIR
# (default /var/tmp/kernel-vm), not installed: installing qemu-system-x86 7.2
# would remove a newer qemu-utils, and a linux-image would write /boot.
# A second run finds everything in place and does nothing.
set -eu
W=${KERNEL_VM_DIR:-/var/tmp/kernel-vm}
mkdir -p "$W"; cd "$W"
# The kernel ABI: given, or the one recorded by an earlier run, or what
# linux-image-cloud-amd64 depends on today (Debian drops superseded ABIs).
if [ -n "${KERNEL_VM_KVER:-}" ]; then KV=$KERNEL_VM_KVER
elif [ -s kver ]; then KV=$(cat kver)
else
  KV=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { sub("linux-image-", "", $2); print $2; exit }')
  if [ -z "$KV" ]; then apt-get update -q; KV=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { sub("linux-image-", "", $2); print $2; exit }'); fi
  [ -n "$KV" ] || { echo "cannot tell which cloud kernel to fetch" >&2; exit 1; }
fi
echo "$KV" > kver

need_tools=0
for t in busybox cpio depmod modprobe ipvsadm; do command -v "$t" >/dev/null 2>&1 || need_tools=1; done
dpkg -s busybox-static >/dev/null 2>&1 || need_tools=1   # the initramfs needs the static busybox
if [ "$need_tools" = 1 ]; then
  apt-get update -q
  apt-get install -y --no-install-recommends busybox-static cpio kmod ipvsadm
fi

if [ -f "kcloud/boot/vmlinuz-$KV" ] && [ -x qemu/usr/bin/qemu-system-x86_64 ] && [ -f "kcloud/lib/modules/$KV/modules.dep" ]; then
  echo "kernel VM ready in $W ($KV)"
  exit 0
fi

[ "$need_tools" = 1 ] || apt-get update -q
mkdir -p debs && cd debs
apt-get download linux-image-$KV \
  qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu \
  libcapstone4 libfdt1 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 libndctl6 libdaxctl1 libnl-route-3-200
cd ..
mkdir -p qemu kcloud
for d in debs/qemu-*.deb debs/seabios_*.deb debs/ipxe-qemu_*.deb debs/lib*.deb; do dpkg-deb -x "$d" qemu; done
dpkg-deb -x debs/linux-image-"${KV}"_*.deb kcloud
depmod -b kcloud "$KV"
LD_LIBRARY_PATH=$W/qemu/usr/lib/x86_64-linux-gnu:$W/qemu/lib/x86_64-linux-gnu qemu/usr/bin/qemu-system-x86_64 --version
echo "kernel VM ready in $W ($KV)"
