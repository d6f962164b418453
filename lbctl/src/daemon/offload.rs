//! Receive VLAN offload of the XDP interface: a driver that has it on may
//! take the 802.1Q tag out of a frame before the XDP program runs, which
//! then cannot tell which VLAN the frame came on. In native (driver) mode
//! forwarded frames still leave on their backend's VLAN (the tag comes from
//! the backend), but the priority bits are lost and too-big replies leave
//! untagged instead of on the client's VLAN. In generic (skb) mode it is
//! worse: the removed tag stays with the packet and the kernel puts it back
//! on transmit, so a forwarded frame leaves on the client's VLAN, or with
//! two tags. The daemon says so when the interface carries VLANs.
//!
//! [`rx_vlan_offload`] asks the kernel (the `SIOCETHTOOL` ioctl);
//! [`vlan_offload_note`] is the pure decision.

use std::io;

/// `ETHTOOL_GFLAGS` (`linux/ethtool.h`): the legacy feature flags.
const ETHTOOL_GFLAGS: u32 = 0x25;
/// `ETH_FLAG_RXVLAN`: receive VLAN offload (`rx-vlan-offload` in `ethtool -k`).
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Whether interface `name` has receive VLAN offload on.
///
/// # Errors
/// The name does not fit an interface name, the interface does not exist,
/// or the ioctl fails.
pub fn rx_vlan_offload(name: &str) -> io::Result<bool> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an interface name: {name:?}"),
        ));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    // SAFETY: an all-zero ifreq is valid (a name of NULs, a null union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL with a NUL-terminated name and `ifru_data`
    // pointing at an `ethtool_value` that outlives the call; the kernel
    // writes only that struct.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCETHTOOL as _,
            &raw mut req,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

/// What to tell the operator about `iface`'s receive VLAN offload
/// (`rx_vlan`) when it carries 802.1Q VLANs (`has_vlans`), the program
/// attached in generic (skb) mode or not (`generic`): nothing without VLANs
/// or with the offload off; otherwise the risk and the fix, or why it could
/// not be checked.
pub fn vlan_offload_note(
    iface: &str,
    has_vlans: bool,
    generic: bool,
    rx_vlan: &io::Result<bool>,
) -> Option<String> {
    if !has_vlans {
        return None;
    }
    match rx_vlan {
        Ok(false) => None,
        Ok(true) if generic => Some(format!(
            "{iface} carries VLANs and has receive VLAN offload on, with XDP in generic mode: \
             a tag the driver removes is put back on transmit, so frames to backends leave \
             on the client's VLAN or with two tags; turn it off with \
             `ethtool -K {iface} rxvlan off`"
        )),
        Ok(true) => Some(format!(
            "{iface} carries VLANs and has receive VLAN offload on: its driver may remove \
             tags before XDP runs (priority bits lost, too-big replies sent untagged); \
             turn it off with `ethtool -K {iface} rxvlan off`"
        )),
        Err(e) => Some(format!(
            "{iface} carries VLANs; its receive VLAN offload could not be read ({e}): \
             it must be off (`ethtool -K {iface} rxvlan off`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_only_for_vlans_with_the_offload_on_or_unknown() {
        for generic in [false, true] {
            assert_eq!(vlan_offload_note("eth0", false, generic, &Ok(true)), None);
            assert_eq!(vlan_offload_note("eth0", true, generic, &Ok(false)), None);
            let on = vlan_offload_note("eth0", true, generic, &Ok(true)).expect("note");
            assert!(on.contains("ethtool -K eth0 rxvlan off"), "{on}");
            assert_eq!(on.contains("two tags"), generic, "{on}");
            let unknown = vlan_offload_note(
                "eth0",
                true,
                generic,
                &Err(io::Error::from_raw_os_error(libc::EPERM)),
            )
            .expect("note");
            assert!(unknown.contains("could not be read"), "{unknown}");
        }
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel_is_asked() {
        for name in ["", "a-name-longer-than-15", "nul\0"] {
            let e = rx_vlan_offload(name).expect_err(name);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn loopback_has_no_vlan_offload() {
        assert!(!rx_vlan_offload("lo").expect("lo"));
    }
}
