#!/bin/sh
# Boot the unpacked Debian kernel with an initramfs; the serial console is
# stdout; qemu exits when the guest powers off.
# Usage: run-vm.sh VMLINUZ INITRAMFS [extra kernel args]
# env: KERNEL_VM_DIR (see setup.sh); ACCEL=tcg|kvm (default: kvm only with
# hardware virtualization, since a paravirtual /dev/kvm cannot boot a stock
# kernel).
W=${KERNEL_VM_DIR:-/var/tmp/kernel-vm}
Q=$W/qemu
export LD_LIBRARY_PATH=$Q/usr/lib/x86_64-linux-gnu:$Q/lib/x86_64-linux-gnu
QEMU=$Q/usr/bin/qemu-system-x86_64
[ -x "$QEMU" ] || QEMU=qemu-system-x86_64
FW="-L $Q/usr/share/qemu -L $Q/usr/share/seabios -L $Q/usr/lib/ipxe/qemu"
K=$1; I=$2; shift 2
ACCEL=${ACCEL:-}
if [ -z "$ACCEL" ]; then
  if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then ACCEL=kvm; else ACCEL=tcg; fi
fi
if [ "$ACCEL" = kvm ]; then A="-accel kvm -cpu host"; else A="-accel tcg -cpu max"; fi
echo "accel=$ACCEL" >&2
exec $QEMU $FW -bios qboot.rom $A -m 512 -smp 2 -nographic -no-reboot -serial mon:stdio \
  -kernel "$K" -initrd "$I" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init $*" \
  -nic none
