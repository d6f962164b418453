//! VRRP (RFC 5798 / RFC 9568 version 3, RFC 3768 version 2): the pure parts.
//!
//! - [`codec`]: encode/decode of the VRRP message that follows the IP header
//!   (IP protocol 112), checksums, and every receive-side validity check.
//! - [`machine`]: a sans-IO state machine for one virtual router. It never
//!   reads a clock or touches a socket: the caller passes `now` and inputs,
//!   and gets back [`Action`]s to carry out.
//! - [`counters`]: plain per-instance counters the I/O shell bumps.
//!
//! The I/O shell, driven by these types:
//! - [`shell`]: one tokio task per instance ([`spawn_instance`]): raw
//!   sockets ([`socket`]; one receive socket per interface and family,
//!   shared and dispatched by VRID: [`rx`]), timers, VIPs and link events over rtnetlink
//!   ([`netlink`]), gratuitous ARP / unsolicited NA ([`garp`]), tracking
//!   ([`track`]; `vrrp_script` runners shared across instances:
//!   [`scripts`]), notify scripts ([`notify`]);
//! - [`spec`]: [`InstanceSpec`], built from the `lb.toml` model;
//! - [`run`]: [`run_instances`], what the daemon calls.
//!
//! The pure parts (codec, machine, counters, track) depend on no other
//! lbctl module; the shell uses `health` for `vrrp_script` runners and
//! `config` for the glue.
//!
//! Typical receive path in the shell:
//!
//! ```text
//! let decoded = codec::decode(payload, &RxMeta { src, dst, ttl }, &params.rx_options())?;
//! // (rx.rs) route by the VRID byte to the owning instance (count unknown VRIDs per socket)
//! codec::check(&decoded.advert, &params)?;            // instance-level checks
//! counters.record_received(&decoded, params.checksum_mode);
//! let actions = machine.handle(now, Input::Advertisement(ReceivedAdvert::from_advert(&decoded.advert, src)));
//! for a in &actions { counters.record_action(a); /* carry it out */ }
//! // on error: counters.record_rx_error(&e)
//! ```

pub mod codec;
pub mod counters;
pub mod garp;
pub mod machine;
pub mod netlink;
pub mod notify;
pub mod run;
pub mod rx;
pub mod scripts;
pub mod shell;
pub mod socket;
pub mod spec;
pub mod track;

use std::net::IpAddr;
use std::time::Duration;

pub use codec::{
    Advertisement, Decoded, EncodeError, RxError, RxMeta, RxOptions, check, decode, encode,
};
pub use counters::Counters;
pub use machine::{Action, Input, Machine, ReceivedAdvert, State, Timer};
pub use run::{Instances, run_instances};
pub use shell::{
    HOOK_ACK_TIMEOUT, HookAck, InstanceHandle, RETRY_FIRST, RETRY_MAX, SharedIo, ShellCounters,
    ShellError, StateHook, StateInfo, retry_delay, spawn_instance, spawn_instance_shared,
};
pub use spec::{GarpConfig, InstanceSpec, ScriptSpec, SpecError, VipAddress};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4, RFC 3768 §5.2.4).
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group VRRP advertisements are sent to (224.0.0.18).
pub const MCAST_GROUP_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group VRRP advertisements are sent to (ff02::12).
pub const MCAST_GROUP_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The IPv4 TTL / IPv6 hop limit an advertisement is sent with and must be
/// received with (RFC 5798 §5.1.1.3, §5.1.2.3, §7.1).
pub const REQUIRED_TTL: u8 = 255;
/// Priority of the router that owns the virtual addresses (RFC 5798 §5.2.4).
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a Master sends when it stops being Master (RFC 5798 §5.2.4).
pub const PRIORITY_STOP: u8 = 0;
/// Default priority of a backup router (RFC 5798 §5.2.4, keepalived too).
pub const PRIORITY_DEFAULT: u8 = 100;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// VRRPv2, RFC 3768 (IPv4 only; interval in whole seconds; auth field).
    V2,
    /// VRRPv3, RFC 5798 / RFC 9568 (IPv4 and IPv6; interval in centiseconds).
    V3,
}

impl Version {
    /// The value of the 4-bit version field on the wire.
    pub fn wire(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Address family of a virtual router. IPv4 and IPv6 virtual routers are
/// always separate instances (RFC 5798 §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4: 4-byte addresses, IP TTL, IPv4 pseudo-header (v3).
    V4,
    /// IPv6: 16-byte addresses, hop limit, IPv6 pseudo-header.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Size in bytes of one address of this family in an advertisement.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// VRRPv2 authentication (RFC 3768 §5.3.6, RFC 2338 §5.3.6).
///
/// RFC 3768 marks auth types 1 and 2 "reserved" and says the auth data
/// SHOULD be zero and ignored; keepalived still implements RFC 2338's
/// type 1 (simple text password, `auth_type PASS`), which is what this
/// supports. Type 2 (IPsec AH, keepalived `auth_type AH`) is not supported:
/// an advertisement claiming it is rejected. VRRPv3 has no authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    /// Auth type 0: no authentication; auth data sent as zeros, ignored on receive.
    #[default]
    None,
    /// Auth type 1: the 8-byte auth data field carries a password, zero padded.
    /// Compared byte for byte on receive, as keepalived does.
    Password([u8; 8]),
}

impl Auth {
    /// A simple-text password of 1 to 8 bytes, zero padded to 8.
    ///
    /// keepalived silently truncates longer `auth_pass` values to 8 bytes;
    /// this refuses them so the config layer decides (and can warn).
    pub fn password(pass: &[u8]) -> Result<Auth, ParamsError> {
        if pass.is_empty() || pass.len() > 8 {
            return Err(ParamsError::PasswordLength(pass.len()));
        }
        let mut data = [0u8; 8];
        data[..pass.len()].copy_from_slice(pass);
        Ok(Auth::Password(data))
    }

    /// The auth type byte on the wire (0 or 1).
    pub fn wire_type(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Password(_) => 1,
        }
    }

    /// The 8 auth data bytes on the wire.
    pub fn wire_data(&self) -> [u8; 8] {
        match self {
            Auth::None => [0; 8],
            Auth::Password(d) => *d,
        }
    }
}

/// How the VRRPv3 checksum is computed for **IPv4**. (IPv6 always uses the
/// IPv6 pseudo-header; VRRPv2 always sums the VRRP message alone.)
///
/// RFC 5798 §5.2.8 says the checksum covers the VRRP message and "a
/// pseudo-header as defined in Section 8.1 of [RFC2460]" — an IPv6
/// definition, so it was read two ways for IPv4. RFC 9568 (which obsoletes
/// RFC 5798) §5.2.8 settles it: "For the IPv4 address family, the checksum
/// calculation only includes the VRRP message starting with the Version
/// field and ending after the last IPv4 address", and only IPv6 prepends a
/// pseudo-header (RFC 8200 §8.1). That is the only checksum change; the
/// checksum field position, the one's-complement sum (RFC 1071) and the
/// IPv6 rule are unchanged.
///
/// keepalived (2.2.7 included) sends and requires the IPv4 pseudo-header
/// form (src, dst, zero, protocol 112, VRRP length — with the real
/// destination, i.e. the unicast peer for unicast) unless configured with
/// `v3_checksum_as_v2` (added in keepalived PR #2234, after 2.2.7), which
/// is the RFC 9568 form. FRR calls the switch
/// `checksum-with-ipv4-pseudoheader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumMode {
    /// RFC 5798 as keepalived reads it: IPv4 pseudo-header
    /// (source, destination, zero, protocol 112, VRRP length) + VRRP message.
    #[default]
    PseudoHeader,
    /// RFC 9568 §5.2.8: the VRRP message alone (same as VRRPv2's rule).
    Rfc9568,
}

/// Everything one virtual router needs, independent of the config format.
///
/// The config glue fills this from `lb.toml`; the I/O shell and
/// [`Machine`] consume it. Call [`InstanceParams::validate`] once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceParams {
    /// Virtual router identifier, 1..=255.
    pub vrid: u8,
    /// Configured (base) priority: 1..=254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement interval. v3: a multiple of 10 ms, 10 ms..=40.95 s.
    /// v2: whole seconds, 1..=255 s.
    pub advert_interval: Duration,
    /// Protocol version.
    pub version: Version,
    /// Address family (must match `primary_address` and every VIP).
    pub family: Family,
    /// Preempt_Mode (keepalived: `nopreempt` sets this false).
    pub preempt: bool,
    /// keepalived `preempt_delay`; zero disables. See [`machine`] docs.
    pub preempt_delay: Duration,
    /// VRRPv2 authentication; must be [`Auth::None`] for v3.
    pub auth: Auth,
    /// How to compute the v3 IPv4 checksum on send (and which form to
    /// expect on receive).
    pub checksum_mode: ChecksumMode,
    /// On receive (v3 IPv4 only), also accept the other checksum form.
    pub accept_either_checksum: bool,
    /// Require TTL / hop limit 255 on receive (RFC 5798 §7.1). keepalived
    /// skips this check for unicast peers; set false only for unicast.
    pub require_ttl_255: bool,
    /// Primary address of the interface: source of our advertisements and
    /// the tie-breaker (RFC 5798 §6.4.3). IPv6: the link-local address.
    pub primary_address: IpAddr,
    /// The virtual addresses (1..=255 of them, RFC 5798 §5.2.5).
    pub vips: Vec<IpAddr>,
}

/// Invalid [`InstanceParams`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// VRID 0 is not a valid virtual router id.
    #[error("VRID must be 1..=255, got 0")]
    ZeroVrid,
    /// Priority 0 is reserved for "Master stopping".
    #[error("priority must be 1..=255, got 0")]
    ZeroPriority,
    /// The interval cannot be represented in the packet.
    #[error("advertisement interval {0:?} not representable for this VRRP version")]
    Interval(Duration),
    /// No virtual addresses.
    #[error("at least one virtual address is required")]
    NoVips,
    /// More addresses than the 8-bit count field allows.
    #[error("{0} virtual addresses; at most 255 fit in an advertisement")]
    TooManyVips(usize),
    /// An address of the other family.
    #[error("address {0} does not match the instance's address family")]
    FamilyMismatch(IpAddr),
    /// VRRPv2 is IPv4 only (RFC 3768).
    #[error("VRRPv2 is IPv4 only")]
    V2OverIpv6,
    /// Authentication was removed in VRRPv3 (RFC 5798 §9).
    #[error("authentication is only available with VRRPv2")]
    AuthWithV3,
    /// Password must be 1..=8 bytes.
    #[error("password must be 1 to 8 bytes, got {0}")]
    PasswordLength(usize),
}

impl InstanceParams {
    /// Check the parameters are consistent and representable on the wire.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.vrid == 0 {
            return Err(ParamsError::ZeroVrid);
        }
        if self.priority == 0 {
            return Err(ParamsError::ZeroPriority);
        }
        if codec::interval_to_wire(self.version, self.advert_interval).is_none() {
            return Err(ParamsError::Interval(self.advert_interval));
        }
        if self.vips.is_empty() {
            return Err(ParamsError::NoVips);
        }
        if self.vips.len() > 255 {
            return Err(ParamsError::TooManyVips(self.vips.len()));
        }
        for a in std::iter::once(&self.primary_address).chain(&self.vips) {
            if Family::of(a) != self.family {
                return Err(ParamsError::FamilyMismatch(*a));
            }
        }
        if self.version == Version::V2 && self.family == Family::V6 {
            return Err(ParamsError::V2OverIpv6);
        }
        if self.version == Version::V3 && self.auth != Auth::None {
            return Err(ParamsError::AuthWithV3);
        }
        Ok(())
    }

    /// True when this router owns the virtual addresses (priority 255).
    pub fn is_owner(&self) -> bool {
        self.priority == PRIORITY_OWNER
    }

    /// The advertisement this instance sends with `priority`
    /// (as given by [`Action::SendAdvertisement`]).
    pub fn advertisement(&self, priority: u8) -> Advertisement {
        Advertisement {
            version: self.version,
            vrid: self.vrid,
            priority,
            interval: self.advert_interval,
            auth: self.auth,
            addresses: self.vips.clone(),
        }
    }

    /// Receive options derived from these parameters.
    pub fn rx_options(&self) -> RxOptions {
        RxOptions {
            checksum_mode: self.checksum_mode,
            accept_either_checksum: self.accept_either_checksum,
            require_ttl_255: self.require_ttl_255,
        }
    }

    /// The multicast destination for this family.
    pub fn multicast_group(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(MCAST_GROUP_V4),
            Family::V6 => IpAddr::V6(MCAST_GROUP_V6),
        }
    }

    /// Encode the advertisement to send with `priority` from our primary
    /// address to `dst` (the multicast group, or a unicast peer).
    pub fn encode_advertisement(&self, priority: u8, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
        encode(
            &self.advertisement(priority),
            self.primary_address,
            dst,
            self.checksum_mode,
        )
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub fn v3_v4_params() -> InstanceParams {
        InstanceParams {
            vrid: 51,
            priority: 100,
            advert_interval: Duration::from_secs(1),
            version: Version::V3,
            family: Family::V4,
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth: Auth::None,
            checksum_mode: ChecksumMode::PseudoHeader,
            accept_either_checksum: false,
            require_ttl_255: true,
            primary_address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            vips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))],
        }
    }

    pub fn v3_v6_params() -> InstanceParams {
        InstanceParams {
            family: Family::V6,
            primary_address: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10)),
            vips: vec![
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)),
                IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x100)),
            ],
            ..v3_v4_params()
        }
    }

    pub fn v2_params() -> InstanceParams {
        InstanceParams {
            version: Version::V2,
            auth: Auth::None,
            ..v3_v4_params()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn params_validate() {
        assert_eq!(v3_v4_params().validate(), Ok(()));
        assert_eq!(v3_v6_params().validate(), Ok(()));
        assert_eq!(v2_params().validate(), Ok(()));
        let p = InstanceParams {
            vrid: 0,
            ..v3_v4_params()
        };
        assert_eq!(p.validate(), Err(ParamsError::ZeroVrid));
        let p = InstanceParams {
            priority: 0,
            ..v3_v4_params()
        };
        assert_eq!(p.validate(), Err(ParamsError::ZeroPriority));
        let p = InstanceParams {
            advert_interval: Duration::from_millis(1500),
            ..v2_params()
        };
        assert!(matches!(p.validate(), Err(ParamsError::Interval(_))));
        let p = InstanceParams {
            advert_interval: Duration::from_millis(15),
            ..v3_v4_params()
        };
        assert!(matches!(p.validate(), Err(ParamsError::Interval(_))));
        let p = InstanceParams {
            advert_interval: Duration::from_millis(40_960),
            ..v3_v4_params()
        };
        assert!(matches!(p.validate(), Err(ParamsError::Interval(_))));
        let p = InstanceParams {
            vips: vec![],
            ..v3_v4_params()
        };
        assert_eq!(p.validate(), Err(ParamsError::NoVips));
        let p = InstanceParams {
            family: Family::V6,
            ..v3_v4_params()
        };
        assert!(matches!(p.validate(), Err(ParamsError::FamilyMismatch(_))));
        let p = InstanceParams {
            version: Version::V2,
            ..v3_v6_params()
        };
        assert_eq!(p.validate(), Err(ParamsError::V2OverIpv6));
        let p = InstanceParams {
            auth: Auth::Password(*b"secret\0\0"),
            ..v3_v4_params()
        };
        assert_eq!(p.validate(), Err(ParamsError::AuthWithV3));
    }

    #[test]
    fn password_padding() {
        assert_eq!(
            Auth::password(b"abc"),
            Ok(Auth::Password(*b"abc\0\0\0\0\0"))
        );
        assert_eq!(
            Auth::password(b"12345678"),
            Ok(Auth::Password(*b"12345678"))
        );
        assert_eq!(Auth::password(b""), Err(ParamsError::PasswordLength(0)));
        assert_eq!(
            Auth::password(b"123456789"),
            Err(ParamsError::PasswordLength(9))
        );
    }
}
