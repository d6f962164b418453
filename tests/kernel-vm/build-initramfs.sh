#!/bin/sh
# Build a tiny initramfs: busybox-static, ipvsadm, iproute2's ip, ethtool
# and keepalived (+ their libraries), the IPVS, scheduler, conntrack, virtio, veth, 8021q
# and bridge modules, /init from this folder, and
# the given static test binaries (copied to /bin).
# Usage: build-initramfs.sh KERNEL_EXTRACT_DIR KVER OUT.cpio.gz [static binary...]
set -eu
KDIR=$(realpath "$1"); KV=$2; OUT=$(realpath -m "$3"); shift 3
W=$(dirname "$(realpath "$0")")
R=$(mktemp -d "${TMPDIR:-/tmp}/rootfs.XXXXXX")
trap 'rm -rf "$R"' EXIT

mkdir -p "$R"/bin "$R"/sbin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/lib/modules/"$KV" "$R"/etc
cp /bin/busybox "$R"/bin/busybox
for a in $("$R"/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
# The kernel's request_module() (autoload, softdeps such as crc32c) runs /sbin/modprobe.
ln -s ../bin/busybox "$R"/sbin/modprobe

# ipvsadm, iproute2's ip (namespaces and VLANs, which busybox's lacks; it
# replaces busybox's) and ethtool, with their shared libraries (+ the
# dynamic loader).
cp /usr/sbin/ipvsadm /usr/sbin/ethtool "$R"/sbin/
rm -f "$R"/bin/ip; cp -L /usr/sbin/ip "$R"/bin/ip
# keepalived, which the IPVS test runs against lbctl import-keepalived, and
# the passwd entry its script_user needs.
cp /usr/sbin/keepalived "$R"/sbin/
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R"/etc/passwd
printf 'root:x:0:\n' > "$R"/etc/group
for exe in /usr/sbin/ipvsadm /usr/sbin/ip /usr/sbin/ethtool /usr/sbin/keepalived; do
  for lib in $(ldd "$exe" | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
  done
done

# Module closure, resolved with the host's kmod against the unpacked kernel.
[ -f "$KDIR/lib/modules/$KV/modules.dep" ] || depmod -b "$KDIR" "$KV"
MODS="ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_mh nf_conntrack ipip ip6_tunnel virtio_net virtio_pci veth dummy 8021q bridge"
for m in $MODS; do modprobe -d "$KDIR" -S "$KV" --show-depends "$m"; done |
  awk '$1=="insmod"{print $2}' | sort -u | while read -r ko; do
    rel=${ko#"$KDIR"/lib/modules/$KV/}
    mkdir -p "$R/lib/modules/$KV/$(dirname "$rel")"; cp "$ko" "$R/lib/modules/$KV/$rel"
  done
cp "$KDIR"/lib/modules/"$KV"/modules.order "$KDIR"/lib/modules/"$KV"/modules.builtin* "$R/lib/modules/$KV/" 2>/dev/null || true
depmod -b "$R" "$KV"

for b in "$@"; do cp "$b" "$R"/bin/; done
cp "$W"/init "$R"/init; chmod +x "$R"/init

(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$OUT"
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
