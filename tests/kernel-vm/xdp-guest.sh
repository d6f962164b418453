#!/bin/sh
# The guest half of the kernel-VM XDP test (tests/tests/xdp_vm.rs is the host
# half). Debian 12's own kernel (6.1) has an older BPF verifier than the
# machines the project is built on: the programs must load, attach and
# forward there too. Prints XDP-VM: markers on the serial console.
#   1. lbctl run attaches `lb` to a veth in driver mode and reports it;
#   2. `lb`, `lb_rare` and `lb_too_big` verified within 90% of the
#      verifier's 1M-instruction limit here
#      (this verifier needs more than newer ones: a change that eats the
#      rest fails here, before a kernel refuses it);
#   3. lbctl decap attaches `decap`;
#   4. every packet fixture (tests/tests/xdp_fixtures.rs, exact bytes and
#      verdicts through BPF_PROG_TEST_RUN) passes on this kernel.
set -u
failed=0
pass() { echo "XDP-VM: PASS $1"; }
fail() { echo "XDP-VM: FAIL $1"; failed=1; }
# Waits up to $2 seconds for command $1 (a string) to succeed.
wait_for() {
  i=0
  while [ "$i" -lt "$2" ]; do
    if sh -c "$1" >/dev/null 2>&1; then return 0; fi
    sleep 1; i=$((i + 1))
  done
  return 1
}
# Step $1 passes when command $2 succeeds within $3 seconds; otherwise it
# fails and the end of log $4 is shown.
expect_within() {
  if wait_for "$2" "$3"; then pass "$1"; else fail "$1"; tail -c 4000 "$4"; fi
}
# Stops background process $2 with SIGTERM: step $1 passes when it exits 0;
# otherwise it fails and the end of log $3 is shown.
stop_step() {
  kill -TERM "$2"
  if wait "$2"; then pass "$1"; else fail "$1"; tail -c 2000 "$3"; fi
}

mkdir -p /run/lock && mount -t bpf bpf /sys/fs/bpf
modprobe veth || echo "XDP-VM: MODPROBE veth FAILED"
ip link add v0 type veth   # busybox names the peer veth0
ip addr add 10.9.0.1/24 dev v0
ip link set v0 up
ip link set veth0 up

cat > /tmp/lb.toml <<'T'
[node]
interface = "v0"
state_dir = "/tmp/st"
xdp_mode = "driver"
[[vip]]
name = "web"
address = "10.9.1.100"
port = 80
forwarding = "dr"
[[vip.backend]]
address = "10.9.0.2"
T
LBCTL_LOG=info,lbctl::dataplane::xdp=debug /bin/lbctl run --config /tmp/lb.toml > /tmp/run.log 2>&1 &
pid=$!
# Verification alone takes several seconds under software emulation.
expect_within attach-driver \
  "/bin/lbctl status --config /tmp/lb.toml | grep -q 'dataplane xdp driver'" 120 /tmp/run.log
headroom=ok
for prog in lb lb_rare lb_too_big; do
  insns=$(grep 'eBPF program verified' /tmp/run.log | grep "program=\"$prog\"" |
    sed -n 's/.*verified_insns=Some(\([0-9]*\)).*/\1/p' | head -n 1)
  echo "XDP-VM: $prog verified in ${insns:-?} instructions (limit 1000000)"
  if [ -z "$insns" ] || [ "$insns" -gt 900000 ]; then headroom=no; fi
done
if [ "$headroom" = ok ]; then pass verifier-headroom; else fail verifier-headroom; fi
stop_step daemon-stop "$pid" /tmp/run.log

/bin/lbctl decap --iface veth0 --addr 10.9.0.2 > /tmp/decap.log 2>&1 &
dpid=$!
expect_within decap-attach "grep -q 'decap running' /tmp/decap.log" 120 /tmp/decap.log
stop_step decap-stop "$dpid" /tmp/decap.log

if /bin/xdp_fixtures --test-threads=1 > /tmp/fixtures.log 2>&1; then
  grep '^test result' /tmp/fixtures.log
  pass fixtures
else
  fail fixtures
  tail -c 6000 /tmp/fixtures.log
fi

[ "$failed" = 0 ] && echo "XDP-VM: ALL PASS"
exit "$failed"
