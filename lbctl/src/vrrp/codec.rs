//! VRRP advertisement encode/decode: the VRRP message above the IP header.
//!
//! Layouts (all fields big-endian):
//!
//! ```text
//! VRRPv3 (RFC 5798 §5.1, RFC 9568 §5.1)     VRRPv2 (RFC 3768 §5.1)
//!  0: Version=3 | Type=1                     0: Version=2 | Type=1
//!  1: VRID                                   1: VRID
//!  2: Priority                               2: Priority
//!  3: Count IPvX Addrs                       3: Count IP Addrs
//!  4: rsvd(4) | Max Adver Int(12, cs)        4: Auth Type
//!                                            5: Adver Int (s)
//!  6: Checksum                               6: Checksum
//!  8: addresses (4 or 16 bytes each)         8: IPv4 addresses
//!                                            8+4n: Authentication Data (8)
//! ```
//!
//! Checksums (RFC 1071 one's complement sum, checksum field zero while
//! summing):
//! - v2: the whole VRRP message, auth data included (RFC 3768 §5.3.8);
//! - v3 IPv6: IPv6 pseudo-header (RFC 8200 §8.1: src, dst, 32-bit length,
//!   3 zero bytes, next header 112) + message;
//! - v3 IPv4: see [`ChecksumMode`] — keepalived's pseudo-header form by
//!   default, RFC 9568's message-only form on request.
//!
//! [`decode`] does every check that needs only the packet and its IP
//! metadata; [`check`] does the checks that need the instance's
//! configuration. Each failure is its own [`RxError`] variant so the shell
//! can count them. Neither panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::{Auth, ChecksumMode, Family, IPPROTO_VRRP, InstanceParams, REQUIRED_TTL, Version};

/// The fixed header length, both versions.
pub const HEADER_LEN: usize = 8;
/// VRRPv2 authentication data length.
pub const V2_AUTH_LEN: usize = 8;
/// VRRP packet type ADVERTISEMENT, the only one defined.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest VRRPv3 Max Advertise Interval (12 bits of centiseconds).
pub const V3_MAX_INTERVAL_CS: u16 = 0x0fff;

/// One VRRP advertisement, decoded or to be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// Sender's priority (0 = Master stopping, 255 = address owner).
    pub priority: u8,
    /// v3: Max Advertise Interval (centisecond resolution);
    /// v2: Advertisement Interval (whole seconds).
    pub interval: Duration,
    /// v2 authentication; always [`Auth::None`] for v3.
    pub auth: Auth,
    /// The virtual addresses, all of one family.
    pub addresses: Vec<IpAddr>,
}

impl Advertisement {
    /// Address family of the addresses (`None` when there are none).
    pub fn family(&self) -> Option<Family> {
        self.addresses.first().map(Family::of)
    }
}

/// IP-level facts about a received packet, which the shell gets from the
/// IP header (IPv4 raw socket) or ancillary data (IPv6: `IPV6_RECVPKTINFO`
/// for the destination, `IPV6_RECVHOPLIMIT` for the hop limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// IP source address (the sender's primary address).
    pub src: IpAddr,
    /// IP destination address (multicast group, or ours for unicast).
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit as received.
    pub ttl: u8,
}

/// Receive-side options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxOptions {
    /// Expected v3 IPv4 checksum form.
    pub checksum_mode: ChecksumMode,
    /// v3 IPv4: also accept the other form (then [`Decoded::v4_checksum`]
    /// says which one matched).
    pub accept_either_checksum: bool,
    /// Reject TTL / hop limit other than 255 (RFC 5798 §7.1). keepalived
    /// skips this for unicast peers.
    pub require_ttl_255: bool,
}

impl Default for RxOptions {
    fn default() -> Self {
        RxOptions {
            checksum_mode: ChecksumMode::PseudoHeader,
            accept_either_checksum: false,
            require_ttl_255: true,
        }
    }
}

/// A successfully decoded advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The advertisement.
    pub advert: Advertisement,
    /// For v3 over IPv4: which checksum form matched (useful to count
    /// peers using the non-configured form). `None` for v2 and IPv6.
    pub v4_checksum: Option<ChecksumMode>,
}

/// Why a received packet was discarded. One variant per reason so the
/// shell can count each; [`super::Counters::record_rx_error`] does that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// Source and destination (or the instance) are of different families.
    #[error("address family mismatch")]
    AddressFamilyMismatch,
    /// TTL / hop limit was not 255 (RFC 5798 §7.1, RFC 3768 §7.1).
    #[error("TTL/hop limit {0}, expected 255")]
    BadTtl(u8),
    /// Shorter than the 8-byte fixed header.
    #[error("packet too short: {0} bytes")]
    TooShort(usize),
    /// Version field neither 2 nor 3.
    #[error("unknown VRRP version {0}")]
    BadVersion(u8),
    /// Type field not 1 (ADVERTISEMENT).
    #[error("unknown VRRP packet type {0}")]
    BadType(u8),
    /// Count IPvX Addrs is zero (the minimum is 1, RFC 5798 §5.2.5).
    #[error("address count is zero")]
    ZeroAddressCount,
    /// Packet length does not match the address count (RFC 5798 §7.1:
    /// "MUST verify that the received packet contains the complete VRRP
    /// packet"); trailing bytes are rejected too, as keepalived does.
    #[error("length {got} does not match the {expected} bytes implied by the address count")]
    LengthMismatch {
        /// Length implied by version, family and address count.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// Checksum does not verify.
    #[error("bad checksum 0x{0:04x}")]
    BadChecksum(u16),
    /// VRRPv2 over IPv6 (RFC 3768 is IPv4 only).
    #[error("VRRPv2 over IPv6")]
    V2OverIpv6,
    /// v2 auth type 2 (IPsec AH): not supported.
    #[error("unsupported VRRPv2 auth type 2 (IPsec AH)")]
    UnsupportedAuthType,
    /// v2 auth type > 2.
    #[error("invalid VRRPv2 auth type {0}")]
    InvalidAuthType(u8),
    /// Advertisement interval of zero (RFC 9568 §7.1, erratum 8301 on 5798).
    #[error("advertisement interval is zero")]
    ZeroInterval,
    /// Version differs from the instance's (RFC 5798 §7.1 "MUST verify the
    /// VRRP version").
    #[error("VRRP version {got:?}, instance runs {expected:?}")]
    VersionMismatch {
        /// Instance version.
        expected: Version,
        /// Received version.
        got: Version,
    },
    /// No instance with this VRID on the interface (RFC 5798 §7.1).
    #[error("VRID {0} not configured")]
    UnknownVrid(u8),
    /// We own the addresses (priority 255): RFC 5798 / RFC 3768 §7.1 say
    /// the owner discards advertisements for its VRID.
    #[error("local router is the address owner")]
    LocalIsOwner,
    /// v2 auth type differs from ours (RFC 3768 §7.1 via RFC 2338).
    #[error("auth type {got}, expected {expected}")]
    AuthTypeMismatch {
        /// Our auth type.
        expected: u8,
        /// Received auth type.
        got: u8,
    },
    /// v2 password differs from ours.
    #[error("authentication failure (password mismatch)")]
    AuthMismatch,
    /// v2 Adver Int differs from ours (RFC 3768 §7.1 MUST).
    #[error("advertisement interval {got:?}, configured {expected:?}")]
    IntervalMismatch {
        /// Our interval.
        expected: Duration,
        /// Received interval.
        got: Duration,
    },
    /// The addresses differ from our VIPs and the sender is not the owner
    /// (RFC 3768 §7.1; keepalived drops these for v3 too).
    #[error("address list does not match the configured virtual addresses")]
    AddressListMismatch,
}

/// Why an advertisement cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// No addresses (RFC 5798 §5.2.5: at least one).
    #[error("no addresses")]
    NoAddresses,
    /// More than 255 addresses.
    #[error("{0} addresses; the count field holds at most 255")]
    TooManyAddresses(usize),
    /// Addresses, source and destination not all of one family.
    #[error("addresses, source and destination must share one family")]
    FamilyMismatch,
    /// Interval not representable (v3: 10 ms steps up to 40.95 s; v2:
    /// whole seconds 1..=255).
    #[error("interval {0:?} not representable")]
    Interval(Duration),
    /// v2 over IPv6.
    #[error("VRRPv2 over IPv6")]
    V2OverIpv6,
    /// Authentication with v3.
    #[error("authentication is VRRPv2 only")]
    AuthWithV3,
}

/// The interval field value for `interval`, or `None` if it cannot be
/// represented exactly (v3: centiseconds 1..=4095; v2: seconds 1..=255).
pub fn interval_to_wire(version: Version, interval: Duration) -> Option<u16> {
    let nanos = interval.as_nanos();
    match version {
        Version::V3 => {
            const CS: u128 = 10_000_000;
            if !nanos.is_multiple_of(CS) {
                return None;
            }
            let cs = nanos / CS;
            (1..=u128::from(V3_MAX_INTERVAL_CS))
                .contains(&cs)
                .then_some(cs as u16)
        }
        Version::V2 => {
            const S: u128 = 1_000_000_000;
            if !nanos.is_multiple_of(S) {
                return None;
            }
            let s = nanos / S;
            (1..=255).contains(&s).then_some(s as u16)
        }
    }
}

fn interval_from_wire(version: Version, raw: u16) -> Duration {
    match version {
        Version::V3 => Duration::from_millis(u64::from(raw) * 10),
        Version::V2 => Duration::from_secs(u64::from(raw)),
    }
}

/// RFC 1071 sum of `data` (big-endian 16-bit words, odd byte padded) added
/// to `acc`. Not folded.
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The internet checksum of a VRRP message (checksum field included: a
/// correct message sums to 0, a message with a zeroed checksum field yields
/// the value to store) with an optional pseudo-header.
fn checksum(msg: &[u8], src: IpAddr, dst: IpAddr, pseudo: bool) -> u16 {
    let mut acc = 0u64;
    if pseudo {
        // The VRRP message length always fits: at most 8 + 255*16 bytes.
        let len = msg.len() as u64;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                // src, dst, zero, protocol, 16-bit length (keepalived's
                // ipv4_phdr_t, and the UDP/TCP pseudo-header of RFC 768).
                acc = sum_words(&s.octets(), acc);
                acc = sum_words(&d.octets(), acc);
                acc += u64::from(IPPROTO_VRRP);
                acc += len;
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                // RFC 8200 §8.1: src, dst, 32-bit upper-layer length,
                // 3 zero bytes, next header.
                acc = sum_words(&s.octets(), acc);
                acc = sum_words(&d.octets(), acc);
                acc += len >> 16;
                acc += len & 0xffff;
                acc += u64::from(IPPROTO_VRRP);
            }
            // Callers check families first; a mixed pair sums no pseudo-header.
            _ => {}
        }
    }
    !fold(sum_words(msg, acc))
}

fn uses_pseudo_header(version: Version, family: Family, mode: ChecksumMode) -> bool {
    match (version, family) {
        (Version::V2, _) => false,
        (Version::V3, Family::V6) => true,
        (Version::V3, Family::V4) => mode == ChecksumMode::PseudoHeader,
    }
}

/// Encode `adv` as sent from `src` to `dst` (used only for the v3
/// pseudo-header; pass the real destination — the multicast group or the
/// unicast peer — as keepalived ≥ 1.3.6 does). `mode` matters only for
/// v3 over IPv4.
pub fn encode(
    adv: &Advertisement,
    src: IpAddr,
    dst: IpAddr,
    mode: ChecksumMode,
) -> Result<Vec<u8>, EncodeError> {
    let family = adv.family().ok_or(EncodeError::NoAddresses)?;
    let count = u8::try_from(adv.addresses.len())
        .map_err(|_| EncodeError::TooManyAddresses(adv.addresses.len()))?;
    if adv
        .addresses
        .iter()
        .chain([&src, &dst])
        .any(|a| Family::of(a) != family)
    {
        return Err(EncodeError::FamilyMismatch);
    }
    let interval =
        interval_to_wire(adv.version, adv.interval).ok_or(EncodeError::Interval(adv.interval))?;
    match (adv.version, family, adv.auth) {
        (Version::V2, Family::V6, _) => return Err(EncodeError::V2OverIpv6),
        (Version::V3, _, Auth::Password(_)) => return Err(EncodeError::AuthWithV3),
        _ => {}
    }

    let mut out = Vec::with_capacity(expected_len(adv.version, family, count));
    out.push((adv.version.wire() << 4) | TYPE_ADVERTISEMENT);
    out.push(adv.vrid);
    out.push(adv.priority);
    out.push(count);
    match adv.version {
        // rsvd bits are zero: the interval is at most 0x0fff.
        Version::V3 => out.extend_from_slice(&interval.to_be_bytes()),
        Version::V2 => {
            out.push(adv.auth.wire_type());
            out.push(interval as u8); // at most 255, checked above
        }
    }
    out.extend_from_slice(&[0, 0]);
    for a in &adv.addresses {
        match a {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    if adv.version == Version::V2 {
        out.extend_from_slice(&adv.auth.wire_data());
    }
    let sum = checksum(
        &out,
        src,
        dst,
        uses_pseudo_header(adv.version, family, mode),
    );
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    Ok(out)
}

fn expected_len(version: Version, family: Family, count: u8) -> usize {
    let auth = if version == Version::V2 {
        V2_AUTH_LEN
    } else {
        0
    };
    HEADER_LEN + usize::from(count) * family.addr_len() + auth
}

/// Decode and validate a received VRRP message (the IP payload).
///
/// Checks, in this order: source/destination family, TTL (if required),
/// fixed header length, version, type, v2-over-IPv6, address count and
/// length, checksum, v2 auth type, non-zero interval. Instance checks
/// (VRID, version, auth, interval, addresses) are in [`check`].
pub fn decode(buf: &[u8], meta: &RxMeta, opts: &RxOptions) -> Result<Decoded, RxError> {
    let family = Family::of(&meta.src);
    if Family::of(&meta.dst) != family {
        return Err(RxError::AddressFamilyMismatch);
    }
    // RFC 5798 §7.1 / RFC 3768 §7.1: MUST verify that the IP TTL is 255.
    if opts.require_ttl_255 && meta.ttl != REQUIRED_TTL {
        return Err(RxError::BadTtl(meta.ttl));
    }
    let [vt, vrid, priority, count, b4, b5, c0, c1, ..] = *buf else {
        return Err(RxError::TooShort(buf.len()));
    };
    let version = match vt >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        v => return Err(RxError::BadVersion(v)),
    };
    if vt & 0x0f != TYPE_ADVERTISEMENT {
        return Err(RxError::BadType(vt & 0x0f));
    }
    if version == Version::V2 && family == Family::V6 {
        return Err(RxError::V2OverIpv6);
    }
    if count == 0 {
        return Err(RxError::ZeroAddressCount);
    }
    let expected = expected_len(version, family, count);
    if buf.len() != expected {
        return Err(RxError::LengthMismatch {
            expected,
            got: buf.len(),
        });
    }

    // MUST verify the VRRP checksum.
    let received_sum = u16::from_be_bytes([c0, c1]);
    let primary = uses_pseudo_header(version, family, opts.checksum_mode);
    let v4_checksum = if checksum(buf, meta.src, meta.dst, primary) == 0 {
        (version == Version::V3 && family == Family::V4).then_some(opts.checksum_mode)
    } else if version == Version::V3
        && family == Family::V4
        && opts.accept_either_checksum
        && checksum(buf, meta.src, meta.dst, !primary) == 0
    {
        Some(match opts.checksum_mode {
            ChecksumMode::PseudoHeader => ChecksumMode::Rfc9568,
            ChecksumMode::Rfc9568 => ChecksumMode::PseudoHeader,
        })
    } else {
        return Err(RxError::BadChecksum(received_sum));
    };

    let (raw_interval, auth) = match version {
        Version::V3 => (
            u16::from_be_bytes([b4, b5]) & V3_MAX_INTERVAL_CS,
            Auth::None,
        ),
        Version::V2 => {
            let data_at = expected - V2_AUTH_LEN;
            let auth = match b4 {
                0 => Auth::None,
                1 => {
                    let mut d = [0u8; 8];
                    d.copy_from_slice(buf.get(data_at..expected).unwrap_or(&[0; 8]));
                    Auth::Password(d)
                }
                2 => return Err(RxError::UnsupportedAuthType),
                t => return Err(RxError::InvalidAuthType(t)),
            };
            (u16::from(b5), auth)
        }
    };
    if raw_interval == 0 {
        return Err(RxError::ZeroInterval);
    }

    let addr_bytes = buf.get(HEADER_LEN..HEADER_LEN + usize::from(count) * family.addr_len());
    let addresses = addr_bytes
        .unwrap_or(&[])
        .chunks_exact(family.addr_len())
        .filter_map(|c| match family {
            Family::V4 => <[u8; 4]>::try_from(c)
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            Family::V6 => <[u8; 16]>::try_from(c)
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        })
        .collect();

    Ok(Decoded {
        advert: Advertisement {
            version,
            vrid,
            priority,
            interval: interval_from_wire(version, raw_interval),
            auth,
            addresses,
        },
        v4_checksum,
    })
}

/// Instance-level receive checks (RFC 5798 §7.1, RFC 3768 §7.1), after
/// [`decode`] and after the shell picked `params` by VRID.
///
/// Order: family, version, VRID, local-owner, v2 auth type, v2 password,
/// v2 interval, address list.
pub fn check(adv: &Advertisement, params: &InstanceParams) -> Result<(), RxError> {
    if adv.family() != Some(params.family) {
        return Err(RxError::AddressFamilyMismatch);
    }
    if adv.version != params.version {
        return Err(RxError::VersionMismatch {
            expected: params.version,
            got: adv.version,
        });
    }
    // MUST verify that the VRID is configured on the receiving interface
    // and the local router is not the IPvX address owner.
    if adv.vrid != params.vrid {
        return Err(RxError::UnknownVrid(adv.vrid));
    }
    if params.is_owner() {
        return Err(RxError::LocalIsOwner);
    }
    if adv.version == Version::V2 {
        // RFC 3768 §7.1 (RFC 2338 §7.1 for the auth part, as keepalived).
        let (ours, theirs) = (params.auth.wire_type(), adv.auth.wire_type());
        if ours != theirs {
            return Err(RxError::AuthTypeMismatch {
                expected: ours,
                got: theirs,
            });
        }
        if let (Auth::Password(a), Auth::Password(b)) = (params.auth, adv.auth)
            && a != b
        {
            return Err(RxError::AuthMismatch);
        }
        // MUST verify that the Adver Interval in the packet is the same as
        // the locally configured for this virtual router.
        if adv.interval != params.advert_interval {
            return Err(RxError::IntervalMismatch {
                expected: params.advert_interval,
                got: adv.interval,
            });
        }
    }
    // MAY verify the addresses; RFC 3768: if they differ and the sender is
    // not the owner, MUST drop. Compared as sets (order may differ).
    if adv.priority != super::PRIORITY_OWNER {
        let same = adv.addresses.len() == params.vips.len()
            && params.vips.iter().all(|v| adv.addresses.contains(v));
        if !same {
            return Err(RxError::AddressListMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    const G4: IpAddr = IpAddr::V4(super::super::MCAST_GROUP_V4);
    const G6: IpAddr = IpAddr::V6(super::super::MCAST_GROUP_V6);

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn meta(src: IpAddr, dst: IpAddr) -> RxMeta {
        RxMeta { src, dst, ttl: 255 }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }

    fn sample(version: Version, addrs: Vec<IpAddr>) -> Advertisement {
        Advertisement {
            version,
            vrid: 7,
            priority: 150,
            interval: Duration::from_secs(1),
            auth: Auth::None,
            addresses: addrs,
        }
    }

    fn src4() -> IpAddr {
        v4(192, 0, 2, 1)
    }

    fn src6() -> IpAddr {
        "fe80::1".parse().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    fn roundtrip(adv: &Advertisement, src: IpAddr, dst: IpAddr, mode: ChecksumMode) {
        let bytes = encode(adv, src, dst, mode).expect("encode");
        let opts = RxOptions {
            checksum_mode: mode,
            ..RxOptions::default()
        };
        let d = decode(&bytes, &meta(src, dst), &opts).expect("decode");
        assert_eq!(&d.advert, adv);
    }

    #[test]
    fn roundtrip_v3_v4_both_modes() {
        let adv = sample(Version::V3, vec![v4(10, 0, 0, 1), v4(10, 0, 0, 2)]);
        roundtrip(&adv, src4(), G4, ChecksumMode::PseudoHeader);
        roundtrip(&adv, src4(), G4, ChecksumMode::Rfc9568);
        // Unicast destination, sub-second interval.
        let adv = Advertisement {
            interval: Duration::from_millis(350),
            ..adv
        };
        roundtrip(&adv, src4(), v4(192, 0, 2, 2), ChecksumMode::PseudoHeader);
    }

    #[test]
    fn roundtrip_v3_v6() {
        let adv = sample(
            Version::V3,
            vec!["2001:db8::1".parse().expect("addr"), src6()],
        );
        roundtrip(&adv, src6(), G6, ChecksumMode::PseudoHeader);
        let adv = Advertisement {
            interval: Duration::from_millis(40_950),
            ..adv
        };
        roundtrip(&adv, src6(), G6, ChecksumMode::Rfc9568);
    }

    #[test]
    fn roundtrip_v2_v4_with_and_without_password() {
        let adv = sample(Version::V2, vec![v4(10, 0, 0, 1)]);
        roundtrip(&adv, src4(), G4, ChecksumMode::PseudoHeader);
        let adv = Advertisement {
            auth: Auth::password(b"s3cret").expect("pw"),
            interval: Duration::from_secs(255),
            ..adv
        };
        roundtrip(&adv, src4(), G4, ChecksumMode::PseudoHeader);
    }

    #[test]
    fn v2_over_v6_not_encodable_nor_decodable() {
        let adv = sample(Version::V2, vec![src6()]);
        assert_eq!(
            encode(&adv, src6(), G6, ChecksumMode::PseudoHeader),
            Err(EncodeError::V2OverIpv6)
        );
        let mut bytes = encode(
            &sample(Version::V3, vec![src6()]),
            src6(),
            G6,
            ChecksumMode::PseudoHeader,
        )
        .expect("encode");
        bytes[0] = 0x21;
        assert_eq!(
            decode(&bytes, &meta(src6(), G6), &RxOptions::default()),
            Err(RxError::V2OverIpv6)
        );
    }

    /// Byte-exact VRRPv3/IPv4 from a keepalived 2.0.12 debug dump in
    /// keepalived issue #1175: unicast 10.1.0.3 -> 10.1.0.1, VRID 88,
    /// priority 198, 100 cs, VIP 10.195.76.227, pseudo-header
    /// `0a010003 0a010001 0070 000c`, checksum 0x9c19.
    #[test]
    fn byte_exact_keepalived_v3_ipv4_unicast() {
        let wire = hex("3158c601 00649c19 0ac34ce3");
        let adv = Advertisement {
            version: Version::V3,
            vrid: 88,
            priority: 198,
            interval: Duration::from_secs(1),
            auth: Auth::None,
            addresses: vec![v4(10, 195, 76, 227)],
        };
        let (src, dst) = (v4(10, 1, 0, 3), v4(10, 1, 0, 1));
        assert_eq!(
            encode(&adv, src, dst, ChecksumMode::PseudoHeader),
            Ok(wire.clone())
        );
        let d = decode(&wire, &meta(src, dst), &RxOptions::default()).expect("decode");
        assert_eq!(d.advert, adv);
        assert_eq!(d.v4_checksum, Some(ChecksumMode::PseudoHeader));
        // The RFC 9568 form of the same message sums the message alone:
        // 3158+c601+0064+0ac3+4ce3 = 0x14f63 -> fold 0x4f64 -> !0xb09b.
        let rfc = encode(&adv, src, dst, ChecksumMode::Rfc9568).expect("encode");
        assert_eq!(&rfc[..6], &wire[..6]);
        assert_eq!(&rfc[6..8], &[0xb0, 0x9b]);
        // A keepalived 2.2.7 receiver (pseudo-header only) rejects it ...
        assert_eq!(
            decode(&rfc, &meta(src, dst), &RxOptions::default()),
            Err(RxError::BadChecksum(0xb09b))
        );
        // ... unless told to accept either form.
        let either = RxOptions {
            accept_either_checksum: true,
            ..RxOptions::default()
        };
        let d = decode(&rfc, &meta(src, dst), &either).expect("either");
        assert_eq!(d.v4_checksum, Some(ChecksumMode::Rfc9568));
    }

    /// keepalived 2.0.20 multicast advert from keepalived issue #1490:
    /// 10.0.0.3 -> 224.0.0.18, VRID 2, priority 150, 3 addresses, checksum
    /// 0x082d (keepalived's maintainer confirmed it correct there).
    #[test]
    fn byte_exact_keepalived_v3_ipv4_multicast() {
        let adv = Advertisement {
            version: Version::V3,
            vrid: 2,
            priority: 150,
            interval: Duration::from_secs(1),
            auth: Auth::None,
            addresses: vec![v4(185, 203, 112, 1), v4(10, 0, 0, 1), v4(10, 0, 8, 1)],
        };
        let wire = hex("31029603 0064082d b9cb7001 0a000001 0a000801");
        assert_eq!(
            encode(&adv, v4(10, 0, 0, 3), G4, ChecksumMode::PseudoHeader),
            Ok(wire)
        );
    }

    /// VRRPv2 hand-computed: VRID 1, prio 100, 1 addr 192.168.1.1, auth
    /// none, 1 s. Words 2101+6401+0001+c0a8+0101 (auth data zero) =
    /// 0x146ac -> fold 0x46ad -> complement 0xb952.
    #[test]
    fn byte_exact_v2_hand_computed() {
        let adv = Advertisement {
            version: Version::V2,
            vrid: 1,
            priority: 100,
            interval: Duration::from_secs(1),
            auth: Auth::None,
            addresses: vec![v4(192, 168, 1, 1)],
        };
        let wire = hex("21016401 0001b952 c0a80101 00000000 00000000");
        // v2 ignores the pseudo-header whatever the mode.
        for mode in [ChecksumMode::PseudoHeader, ChecksumMode::Rfc9568] {
            assert_eq!(encode(&adv, src4(), G4, mode), Ok(wire.clone()));
        }
    }

    /// VRRPv3/IPv6 hand-computed with the RFC 8200 pseudo-header:
    /// fe80::1 -> ff02::12, VRRP length 24, VRID 1, prio 100, 100 cs, one
    /// address fe80::100. Words: src fe80+0001, dst ff02+0012, length 0018,
    /// next header 0070, message 3101+6401+0064+fe80+0100 = 0x39303 ->
    /// fold 0x9306 -> complement 0x6cf9.
    #[test]
    fn byte_exact_v3_ipv6_hand_computed() {
        let adv = Advertisement {
            version: Version::V3,
            vrid: 1,
            priority: 100,
            interval: Duration::from_secs(1),
            auth: Auth::None,
            addresses: vec!["fe80::100".parse().expect("addr")],
        };
        let wire = hex("31016401 00646cf9 fe800000 00000000 00000000 00000100");
        assert_eq!(
            encode(&adv, src6(), G6, ChecksumMode::PseudoHeader),
            Ok(wire)
        );
    }

    fn good_v3_v4() -> (Vec<u8>, RxMeta) {
        let adv = sample(Version::V3, vec![v4(10, 0, 0, 1)]);
        let bytes = encode(&adv, src4(), G4, ChecksumMode::PseudoHeader).expect("encode");
        (bytes, meta(src4(), G4))
    }

    fn good_v2(auth: Auth) -> Vec<u8> {
        let adv = Advertisement {
            auth,
            ..sample(Version::V2, vec![v4(10, 0, 0, 1)])
        };
        encode(&adv, src4(), G4, ChecksumMode::PseudoHeader).expect("encode")
    }

    /// Recompute the checksum after a deliberate field change.
    fn refix(buf: &mut [u8], m: &RxMeta, pseudo: bool) {
        buf[6] = 0;
        buf[7] = 0;
        let s = checksum(buf, m.src, m.dst, pseudo);
        buf[6..8].copy_from_slice(&s.to_be_bytes());
    }

    #[test]
    fn rejects_each_reason() {
        let o = RxOptions::default();
        let (good, m) = good_v3_v4();
        assert!(decode(&good, &m, &o).is_ok());

        // Family mismatch between src and dst.
        assert_eq!(
            decode(&good, &meta(src4(), G6), &o),
            Err(RxError::AddressFamilyMismatch)
        );
        // RFC 5798 §7.1: TTL must be 255.
        let low = RxMeta { ttl: 254, ..m };
        assert_eq!(decode(&good, &low, &o), Err(RxError::BadTtl(254)));
        let lax = RxOptions {
            require_ttl_255: false,
            ..o
        };
        assert!(decode(&good, &low, &lax).is_ok());
        // Too short.
        assert_eq!(decode(&good[..7], &m, &o), Err(RxError::TooShort(7)));
        assert_eq!(decode(&[], &m, &o), Err(RxError::TooShort(0)));
        // Version.
        let mut b = good.clone();
        b[0] = 0x41;
        assert_eq!(decode(&b, &m, &o), Err(RxError::BadVersion(4)));
        // Type.
        let mut b = good.clone();
        b[0] = 0x32;
        assert_eq!(decode(&b, &m, &o), Err(RxError::BadType(2)));
        // Count zero.
        let mut b = good.clone();
        b[3] = 0;
        assert_eq!(decode(&b, &m, &o), Err(RxError::ZeroAddressCount));
        // Count vs length, both ways.
        let mut b = good.clone();
        b[3] = 2;
        assert_eq!(
            decode(&b, &m, &o),
            Err(RxError::LengthMismatch {
                expected: 16,
                got: 12
            })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            decode(&b, &m, &o),
            Err(RxError::LengthMismatch {
                expected: 12,
                got: 13
            })
        );
        // Checksum.
        let mut b = good.clone();
        b[2] ^= 1;
        assert!(matches!(decode(&b, &m, &o), Err(RxError::BadChecksum(_))));
        // Pseudo-header covers the addresses: another source fails.
        assert!(matches!(
            decode(&good, &meta(v4(192, 0, 2, 99), G4), &o),
            Err(RxError::BadChecksum(_))
        ));
        // Zero interval (with a valid checksum).
        let mut b = good.clone();
        b[4] = 0xf0; // reserved bits are ignored ...
        b[5] = 0;
        refix(&mut b, &m, true);
        assert_eq!(decode(&b, &m, &o), Err(RxError::ZeroInterval));
        // ... and do not leak into the interval.
        let mut b = good.clone();
        b[4] = 0xf0;
        refix(&mut b, &m, true);
        assert_eq!(
            decode(&b, &m, &o).map(|d| d.advert.interval),
            Ok(Duration::from_secs(1))
        );

        // v2 auth types.
        let mut b = good_v2(Auth::None);
        b[4] = 2;
        refix(&mut b, &m, false);
        assert_eq!(decode(&b, &m, &o), Err(RxError::UnsupportedAuthType));
        b[4] = 3;
        refix(&mut b, &m, false);
        assert_eq!(decode(&b, &m, &o), Err(RxError::InvalidAuthType(3)));
        // v2 zero interval.
        let mut b = good_v2(Auth::None);
        b[5] = 0;
        refix(&mut b, &m, false);
        assert_eq!(decode(&b, &m, &o), Err(RxError::ZeroInterval));
        // v2 missing auth data = length mismatch.
        let b = good_v2(Auth::None);
        assert!(matches!(
            decode(&b[..12], &m, &o),
            Err(RxError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn rfc9568_mode_rejects_pseudo_header_form_unless_either() {
        let (good, m) = good_v3_v4();
        let strict = RxOptions {
            checksum_mode: ChecksumMode::Rfc9568,
            ..RxOptions::default()
        };
        assert!(matches!(
            decode(&good, &m, &strict),
            Err(RxError::BadChecksum(_))
        ));
        let either = RxOptions {
            accept_either_checksum: true,
            ..strict
        };
        assert_eq!(
            decode(&good, &m, &either).map(|d| d.v4_checksum),
            Ok(Some(ChecksumMode::PseudoHeader))
        );
    }

    #[test]
    fn ipv6_always_pseudo_header() {
        let adv = sample(Version::V3, vec![src6()]);
        let a = encode(&adv, src6(), G6, ChecksumMode::PseudoHeader).expect("encode");
        let b = encode(&adv, src6(), G6, ChecksumMode::Rfc9568).expect("encode");
        assert_eq!(a, b);
        let d = decode(&a, &meta(src6(), G6), &RxOptions::default()).expect("decode");
        assert_eq!(d.v4_checksum, None);
        let other: IpAddr = "fe80::2".parse().expect("addr");
        assert!(matches!(
            decode(&a, &meta(other, G6), &RxOptions::default()),
            Err(RxError::BadChecksum(_))
        ));
    }

    #[test]
    fn encode_errors() {
        let m = ChecksumMode::PseudoHeader;
        assert_eq!(
            encode(&sample(Version::V3, vec![]), src4(), G4, m),
            Err(EncodeError::NoAddresses)
        );
        assert_eq!(
            encode(
                &sample(Version::V3, vec![v4(1, 1, 1, 1); 256]),
                src4(),
                G4,
                m
            ),
            Err(EncodeError::TooManyAddresses(256))
        );
        assert_eq!(
            encode(
                &sample(Version::V3, vec![v4(1, 1, 1, 1), src6()]),
                src4(),
                G4,
                m
            ),
            Err(EncodeError::FamilyMismatch)
        );
        assert_eq!(
            encode(&sample(Version::V3, vec![v4(1, 1, 1, 1)]), src6(), G4, m),
            Err(EncodeError::FamilyMismatch)
        );
        let adv = Advertisement {
            interval: Duration::from_millis(1500),
            ..sample(Version::V2, vec![v4(1, 1, 1, 1)])
        };
        assert!(matches!(
            encode(&adv, src4(), G4, m),
            Err(EncodeError::Interval(_))
        ));
        let adv = Advertisement {
            interval: Duration::ZERO,
            ..sample(Version::V3, vec![v4(1, 1, 1, 1)])
        };
        assert!(matches!(
            encode(&adv, src4(), G4, m),
            Err(EncodeError::Interval(_))
        ));
        let adv = Advertisement {
            auth: Auth::Password([1; 8]),
            ..sample(Version::V3, vec![v4(1, 1, 1, 1)])
        };
        assert_eq!(encode(&adv, src4(), G4, m), Err(EncodeError::AuthWithV3));
    }

    #[test]
    fn interval_wire_bounds() {
        assert_eq!(
            interval_to_wire(Version::V3, Duration::from_millis(10)),
            Some(1)
        );
        assert_eq!(
            interval_to_wire(Version::V3, Duration::from_millis(40_950)),
            Some(4095)
        );
        assert_eq!(
            interval_to_wire(Version::V3, Duration::from_millis(40_960)),
            None
        );
        assert_eq!(
            interval_to_wire(Version::V3, Duration::from_millis(5)),
            None
        );
        assert_eq!(
            interval_to_wire(Version::V2, Duration::from_secs(255)),
            Some(255)
        );
        assert_eq!(
            interval_to_wire(Version::V2, Duration::from_secs(256)),
            None
        );
        assert_eq!(interval_to_wire(Version::V2, Duration::ZERO), None);
    }

    #[test]
    fn check_instance_rules() {
        // v3: family, version, VRID, owner, addresses.
        let p = v3_v4_params();
        let ok = p.advertisement(100);
        assert_eq!(check(&ok, &p), Ok(()));
        let a = Advertisement {
            vrid: 52,
            ..ok.clone()
        };
        assert_eq!(check(&a, &p), Err(RxError::UnknownVrid(52)));
        let a = Advertisement {
            version: Version::V2,
            ..ok.clone()
        };
        assert_eq!(
            check(&a, &p),
            Err(RxError::VersionMismatch {
                expected: Version::V3,
                got: Version::V2
            })
        );
        let a = Advertisement {
            addresses: vec![src6()],
            ..ok.clone()
        };
        assert_eq!(check(&a, &p), Err(RxError::AddressFamilyMismatch));
        let a = Advertisement {
            addresses: vec![v4(192, 0, 2, 101)],
            ..ok.clone()
        };
        assert_eq!(check(&a, &p), Err(RxError::AddressListMismatch));
        // RFC 3768 §7.1: a mismatching list from the owner (255) is kept.
        let a = Advertisement { priority: 255, ..a };
        assert_eq!(check(&a, &p), Ok(()));
        // RFC 5798 §7.1: the local address owner discards.
        let owner = InstanceParams {
            priority: 255,
            ..p.clone()
        };
        assert_eq!(check(&ok, &owner), Err(RxError::LocalIsOwner));
        // v3 interval differences are fine (the backup learns them).
        let a = Advertisement {
            interval: Duration::from_millis(250),
            ..ok
        };
        assert_eq!(check(&a, &p), Ok(()));

        // v2: auth type, password, interval.
        let p2 = InstanceParams {
            auth: Auth::password(b"pw").expect("pw"),
            ..v2_params()
        };
        let ok2 = p2.advertisement(100);
        assert_eq!(check(&ok2, &p2), Ok(()));
        let a = Advertisement {
            auth: Auth::None,
            ..ok2.clone()
        };
        assert_eq!(
            check(&a, &p2),
            Err(RxError::AuthTypeMismatch {
                expected: 1,
                got: 0
            })
        );
        let a = Advertisement {
            auth: Auth::password(b"px").expect("pw"),
            ..ok2.clone()
        };
        assert_eq!(check(&a, &p2), Err(RxError::AuthMismatch));
        let a = Advertisement {
            interval: Duration::from_secs(2),
            ..ok2
        };
        assert_eq!(
            check(&a, &p2),
            Err(RxError::IntervalMismatch {
                expected: Duration::from_secs(1),
                got: Duration::from_secs(2)
            })
        );
    }

    /// Deterministic xorshift64* so the fuzz test is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % (n as u64).max(1)) as usize
        }
    }

    /// Thousands of random and mutated buffers: decode must never panic,
    /// and anything it accepts must re-encode to the same bytes.
    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<(Vec<u8>, RxMeta, ChecksumMode)> = vec![
            {
                let (b, m) = good_v3_v4();
                (b, m, ChecksumMode::PseudoHeader)
            },
            (
                good_v2(Auth::password(b"pw").unwrap_or_default()),
                meta(src4(), G4),
                ChecksumMode::PseudoHeader,
            ),
            (
                encode(
                    &sample(Version::V3, vec![src6(), "2001:db8::5".parse().expect("a")]),
                    src6(),
                    G6,
                    ChecksumMode::PseudoHeader,
                )
                .expect("encode"),
                meta(src6(), G6),
                ChecksumMode::PseudoHeader,
            ),
            (
                encode(
                    &sample(Version::V3, vec![v4(1, 2, 3, 4)]),
                    src4(),
                    G4,
                    ChecksumMode::Rfc9568,
                )
                .expect("encode"),
                meta(src4(), G4),
                ChecksumMode::Rfc9568,
            ),
        ];
        let mut accepted = 0usize;
        for i in 0..20_000 {
            let (seed, m, mode) = &seeds[i % seeds.len()];
            let mut buf = if rng.below(4) == 0 {
                let n = rng.below(300);
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                let mut b = seed.clone();
                for _ in 0..=rng.below(3) {
                    match rng.below(4) {
                        0 if !b.is_empty() => {
                            let at = rng.below(b.len());
                            b[at] ^= 1 << rng.below(8);
                        }
                        1 => b.truncate(rng.below(b.len() + 1)),
                        2 => b.push(rng.next() as u8),
                        _ if !b.is_empty() => {
                            let at = rng.below(b.len());
                            b[at] = rng.next() as u8;
                        }
                        _ => {}
                    }
                }
                b
            };
            // Sometimes make the version/type plausible for random data.
            if rng.below(3) == 0 && !buf.is_empty() {
                buf[0] = if rng.below(2) == 0 { 0x31 } else { 0x21 };
            }
            // Half the time, give the mutant a valid checksum so the checks
            // after the checksum (auth, interval, addresses) get exercised.
            if rng.below(2) == 0 && buf.len() >= HEADER_LEN {
                let v6 = matches!(m.src, IpAddr::V6(_));
                let pseudo = buf[0] >> 4 == 3 && (v6 || *mode == ChecksumMode::PseudoHeader);
                refix(&mut buf, m, pseudo);
            }
            let mm = RxMeta {
                ttl: if rng.below(8) == 0 {
                    rng.next() as u8
                } else {
                    255
                },
                ..*m
            };
            let opts = RxOptions {
                checksum_mode: *mode,
                accept_either_checksum: rng.below(2) == 0,
                require_ttl_255: rng.below(4) != 0,
            };
            if let Ok(d) = decode(&buf, &mm, &opts) {
                accepted += 1;
                let _ = check(&d.advert, &v3_v4_params());
                let again = encode(&d.advert, mm.src, mm.dst, d.v4_checksum.unwrap_or(*mode))
                    .expect("re-encode of a decoded advert");
                // Reserved bits and v2 auth data (type 0) are not kept.
                if buf[0] >> 4 == 3 && buf[4] & 0xf0 == 0 {
                    assert_eq!(again, buf);
                }
            }
        }
        // Enough mutants pass to make the re-encode property meaningful.
        assert!(accepted > 1_000, "only {accepted} accepted");
    }
}
