//! Traffic templates and the per-packet flow rewrite.
//!
//! The generator (`bench_gen` in `lb-ebpf/src/bench.rs`) and the
//! per-packet-cost wrapper (`bench_wrap`) rewrite every frame from one of
//! these templates; this module builds the templates and mirrors the eBPF
//! rewrite ([`apply_flow`]) so its logic can be unit-tested. Keep the two in
//! step: template lengths, field offsets and the flow formula.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;

/// Frame length of IPv4 templates (TCP SYN padded, or UDP with 18 bytes of payload).
pub const LEN_V4: usize = 60;
/// Frame length of IPv6 templates (TCP SYN, or UDP with 12 bytes of payload).
pub const LEN_V6: usize = 74;
/// Template kind bit: IPv6.
pub const KIND_V6: u32 = 1;
/// Template kind bit: UDP (else TCP SYN).
pub const KIND_UDP: u32 = 2;
/// Bytes reserved per template in the map.
pub const TEMPLATE_BYTES: usize = 80;
/// Slots of `BENCH_FRAMES`, the cost wrapper's precomputed frames.
pub const MAX_FRAMES: usize = 4096;
/// Template slots in the map.
pub const MAX_TEMPLATES: usize = 4;
/// Lowest client source port; ports cover `PORT_BASE..PORT_BASE + 0x8000`.
pub const PORT_BASE: u16 = 1024;

/// Base IPv4 client address (the low 16 bits come from the flow).
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Base IPv6 client address (the low 16 bits come from the flow).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0);

/// Map value of `BENCH_TEMPLATES` (layout shared with the eBPF side).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateValue {
    /// Frame length ([`LEN_V4`] or [`LEN_V6`]).
    pub len: u32,
    /// `KIND_*` bits.
    pub kind: u32,
    /// The frame, zero-padded, as native-endian words.
    pub bytes: [u64; TEMPLATE_BYTES / 8],
}

/// Map value of `BENCH_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GenConfig {
    /// log2 of the number of templates in use (0..=2).
    pub templates_log2: u32,
    /// Flows per template minus one.
    pub flow_mask: u32,
    /// Frames in `BENCH_FRAMES` (a power of two; 0 when they do not fit).
    pub frames: u32,
}

// SAFETY: both are #[repr(C)], made of integers only, without padding
// (4 + 4 + 80 and 3 * 4 bytes); every bit pattern is valid.
unsafe impl aya::Pod for TemplateValue {}
// SAFETY: as above.
unsafe impl aya::Pod for GenConfig {}

/// Transport of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    /// A TCP SYN.
    Tcp,
    /// UDP with a small payload.
    Udp,
}

/// One packet shape: a client (base address, varied per flow) to `dst:dport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Transport.
    pub l4: L4,
    /// Destination address (its family picks IPv4 or IPv6).
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// The frame, with source port and low client-address bits zero.
    pub frame: Vec<u8>,
}

impl Template {
    /// Builds the frame `src_mac -> dst_mac`, client base address, source port 0.
    ///
    /// # Errors
    /// When etherparse fails to serialise (not expected for these shapes).
    pub fn new(
        l4: L4,
        dst: IpAddr,
        dport: u16,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
    ) -> anyhow::Result<Self> {
        let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
        let mut frame = Vec::with_capacity(LEN_V6);
        let r = match (dst, l4) {
            (IpAddr::V4(d), L4::Tcp) => eth
                .ipv4(CLIENT_V4.octets(), d.octets(), 64)
                .tcp(0, dport, 1, 65535)
                .syn()
                .write(&mut frame, &[]),
            (IpAddr::V4(d), L4::Udp) => eth
                .ipv4(CLIENT_V4.octets(), d.octets(), 64)
                .udp(0, dport)
                .write(&mut frame, &[0x5a; 18]),
            (IpAddr::V6(d), L4::Tcp) => eth
                .ipv6(CLIENT_V6.octets(), d.octets(), 64)
                .tcp(0, dport, 1, 65535)
                .syn()
                .write(&mut frame, &[]),
            (IpAddr::V6(d), L4::Udp) => eth
                .ipv6(CLIENT_V6.octets(), d.octets(), 64)
                .udp(0, dport)
                .write(&mut frame, &[0x5a; 12]),
        };
        r.context("building a template frame")?;
        let len = if dst.is_ipv4() { LEN_V4 } else { LEN_V6 };
        if frame.len() > len {
            bail!("template frame of {} bytes exceeds {len}", frame.len());
        }
        // Ethernet padding (the IPv4 TCP SYN is 54 bytes).
        frame.resize(len, 0);
        Ok(Self {
            l4,
            dst,
            dport,
            frame,
        })
    }

    /// `KIND_*` bits.
    pub fn kind(&self) -> u32 {
        let mut k = 0;
        if self.dst.is_ipv6() {
            k |= KIND_V6;
        }
        if self.l4 == L4::Udp {
            k |= KIND_UDP;
        }
        k
    }

    /// The map value.
    pub fn value(&self) -> TemplateValue {
        self.value_of(&self.frame)
    }

    /// The map value of this template with `flow` applied: what the
    /// generator sends for that flow, and what the cost wrapper restores.
    pub fn flow_value(&self, flow: u32) -> TemplateValue {
        let mut f = self.frame.clone();
        apply_flow(&mut f, self.kind(), flow);
        self.value_of(&f)
    }

    fn value_of(&self, frame: &[u8]) -> TemplateValue {
        let mut bytes = [0u8; TEMPLATE_BYTES];
        bytes[..frame.len()].copy_from_slice(frame);
        let mut words = [0u64; TEMPLATE_BYTES / 8];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        TemplateValue {
            len: self.frame.len() as u32,
            kind: self.kind(),
            bytes: words,
        }
    }

    /// Short name, e.g. `v4-tcp`.
    pub fn name(&self) -> String {
        let fam = if self.dst.is_ipv4() { "v4" } else { "v6" };
        let l4 = match self.l4 {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        };
        format!("{fam}-{l4}")
    }
}

/// The cost wrapper's frames for `templates` with `flow_mask`: frame `i` is
/// the generator's `i`-th packet. `None` when they do not fit [`MAX_FRAMES`].
pub fn precomputed_frames(
    templates: &[Template],
    templates_log2: u32,
    flow_mask: u32,
) -> Option<Vec<TemplateValue>> {
    let n = (flow_mask as usize + 1) << templates_log2;
    if n > MAX_FRAMES || templates.len() != 1 << templates_log2 {
        return None;
    }
    (0..n as u64)
        .map(|i| {
            let (t, flow) = pick(i, templates_log2, flow_mask);
            templates.get(t as usize).map(|t| t.flow_value(flow))
        })
        .collect()
}

/// Which template and which flow the `counter`-th packet uses.
pub fn pick(counter: u64, templates_log2: u32, flow_mask: u32) -> (u32, u32) {
    let log2 = templates_log2 & 3;
    let t = (counter as u32) & ((1u32 << log2) - 1);
    let flow = ((counter >> log2) as u32) & flow_mask;
    (t, flow)
}

/// Source port and low 16 client-address bits of a flow.
pub fn flow_fields(flow: u32) -> (u16, u16) {
    (
        PORT_BASE + (flow & 0x7fff) as u16,
        ((flow >> 15) & 0xffff) as u16,
    )
}

/// Flow count rounded to a power of two and its mask (at least 1 flow, at
/// most 2^31: 15 bits of port, 16 bits of address).
pub fn flow_mask(flows: u32) -> u32 {
    flows.clamp(1, 1 << 31).next_power_of_two() - 1
}

fn csum_update(old: u16, a: u16, b: u16) -> u16 {
    let mut s = u32::from(!old) + u32::from(a) + u32::from(b);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

fn get16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// The eBPF rewrite, in user space: writes `flow` into a copy of a template
/// frame (`kind` bits) and updates the checksums incrementally.
///
/// # Panics
/// When `frame` is shorter than its kind's length.
pub fn apply_flow(frame: &mut [u8], kind: u32, flow: u32) {
    let (sport, addr_lo) = flow_fields(flow);
    let udp = kind & KIND_UDP != 0;
    let (addr_off, sport_off, l4c_off) = if kind & KIND_V6 == 0 {
        let ipc = get16(frame, 24);
        put16(frame, 24, csum_update(ipc, addr_lo, 0));
        (28, 34, if udp { 40 } else { 50 })
    } else {
        (36, 54, if udp { 60 } else { 70 })
    };
    put16(frame, addr_off, addr_lo);
    put16(frame, sport_off, sport);
    let mut c = csum_update(get16(frame, l4c_off), addr_lo, sport);
    if udp && c == 0 {
        c = 0xffff;
    }
    put16(frame, l4c_off, c);
}

/// Parses a generated frame and checks its IPv4 header and TCP/UDP
/// checksums; returns the client address and source port.
///
/// # Errors
/// When the frame does not parse as Ethernet/IP/TCP-or-UDP or a checksum is wrong.
pub fn verify_frame(f: &[u8]) -> anyhow::Result<(IpAddr, u16)> {
    use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice, NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f).context("parsing the frame")?;
    let ip = &f[14..];
    let (src, v4) = match p.net.context("no IP header")? {
        NetSlice::Ipv4(h) => {
            let h = h.header().to_header();
            if h.header_checksum != h.calc_header_checksum() {
                bail!("bad IPv4 header checksum");
            }
            (IpAddr::V4(h.source.into()), true)
        }
        NetSlice::Ipv6(h) => (IpAddr::V6(h.header().source_addr()), false),
        NetSlice::Arp(_) => bail!("ARP"),
    };
    let (got, want, sport) = match p.transport.context("no transport header")? {
        TransportSlice::Tcp(t) => {
            let want = if v4 {
                let h = Ipv4HeaderSlice::from_slice(ip)?;
                t.calc_checksum_ipv4(h.source(), h.destination())?
            } else {
                let h = Ipv6HeaderSlice::from_slice(ip)?;
                t.calc_checksum_ipv6(h.source(), h.destination())?
            };
            (t.checksum(), want, t.source_port())
        }
        TransportSlice::Udp(u) => {
            let hdr = u.to_header();
            let want = if v4 {
                let h = Ipv4HeaderSlice::from_slice(ip)?;
                hdr.calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload())?
            } else {
                let h = Ipv6HeaderSlice::from_slice(ip)?;
                hdr.calc_checksum_ipv6_raw(h.source(), h.destination(), u.payload())?
            };
            (u.checksum(), want, u.source_port())
        }
        _ => bail!("not TCP or UDP"),
    };
    if got != want {
        bail!("bad L4 checksum {got:#06x}, want {want:#06x}");
    }
    Ok((src, sport))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SRC: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
    const DST: [u8; 6] = [2, 0, 0, 0, 0x0b, 2];

    fn all() -> Vec<Template> {
        let v4: IpAddr = "10.100.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        vec![
            Template::new(L4::Tcp, v4, 80, SRC, DST).unwrap(),
            Template::new(L4::Udp, v4, 53, SRC, DST).unwrap(),
            Template::new(L4::Tcp, v6, 80, SRC, DST).unwrap(),
            Template::new(L4::Udp, v6, 53, SRC, DST).unwrap(),
        ]
    }

    #[test]
    fn precomputed_frames_are_the_generators_packets_in_order() {
        let t = all();
        let mask = flow_mask(1024);
        let frames = precomputed_frames(&t, 2, mask).unwrap();
        assert_eq!(frames.len(), 4 * 1024);
        for (i, f) in frames.iter().enumerate() {
            let (ti, flow) = pick(i as u64, 2, mask);
            let tpl = &t[ti as usize];
            let mut want = tpl.frame.clone();
            apply_flow(&mut want, tpl.kind(), flow);
            let got: Vec<u8> = f.bytes.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert_eq!(&got[..want.len()], &want[..], "frame {i}");
            assert!(
                got[want.len()..].iter().all(|b| *b == 0),
                "frame {i} padding"
            );
            assert_eq!((f.len, f.kind), (want.len() as u32, tpl.kind()));
        }
        // More than MAX_FRAMES, or a template count that is not 2^log2: none.
        assert!(precomputed_frames(&t, 2, flow_mask(2048)).is_none());
        assert!(precomputed_frames(&t[..3], 2, mask).is_none());
    }

    #[test]
    fn templates_have_the_fixed_lengths_and_kinds() {
        let t = all();
        let lens: Vec<usize> = t.iter().map(|t| t.frame.len()).collect();
        assert_eq!(lens, [LEN_V4, LEN_V4, LEN_V6, LEN_V6]);
        let kinds: Vec<u32> = t.iter().map(Template::kind).collect();
        assert_eq!(kinds, [0, KIND_UDP, KIND_V6, KIND_V6 | KIND_UDP]);
        for t in &t {
            let v = t.value();
            assert_eq!(v.len as usize, t.frame.len());
            let bytes: Vec<u8> = v.bytes.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert_eq!(&bytes[..t.frame.len()], &t.frame[..]);
            verify_frame(&t.frame).unwrap();
        }
    }

    #[test]
    fn rewritten_frames_keep_valid_checksums() {
        for t in all() {
            for flow in [0u32, 1, 0x7fff, 0x8000, 0x1234_5678, 0x7fff_ffff, 65535 * 3] {
                let mut f = t.frame.clone();
                apply_flow(&mut f, t.kind(), flow);
                let (src, sport) = verify_frame(&f).unwrap();
                let (want_port, want_lo) = flow_fields(flow);
                assert_eq!(sport, want_port, "{} flow {flow}", t.name());
                let lo = match src {
                    IpAddr::V4(a) => u16::from_be_bytes([a.octets()[2], a.octets()[3]]),
                    IpAddr::V6(a) => u16::from_be_bytes([a.octets()[14], a.octets()[15]]),
                };
                assert_eq!(lo, want_lo);
            }
        }
    }

    #[test]
    fn one_cycle_of_the_counter_gives_every_flow_of_every_template_once() {
        let log2 = 2;
        let mask = flow_mask(1000);
        assert_eq!(mask, 1023);
        let t = all();
        let mut seen = HashSet::new();
        for c in 0..(4u64 * 1024) {
            let (ti, flow) = pick(c, log2, mask);
            let mut f = t[ti as usize].frame.clone();
            apply_flow(&mut f, t[ti as usize].kind(), flow);
            let (src, sport) = verify_frame(&f).unwrap();
            assert!(seen.insert((ti, src, sport)), "duplicate at counter {c}");
        }
        assert_eq!(seen.len(), 4 * 1024);
        // The next cycle repeats the first.
        assert_eq!(pick(4 * 1024, log2, mask), pick(0, log2, mask));
    }

    #[test]
    fn flows_beyond_the_port_range_vary_the_address() {
        let a = flow_fields(0x7fff);
        let b = flow_fields(0x8000);
        assert_eq!(a, (PORT_BASE + 0x7fff, 0));
        assert_eq!(b, (PORT_BASE, 1));
        assert_eq!(flow_mask(0), 0);
        assert_eq!(flow_mask(u32::MAX), (1 << 31) - 1);
    }
}
