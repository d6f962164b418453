//! Bench-only XDP programs (`lb-bench` object); never attached by lbctl itself.
//!
//! - `bench_gen`: the live-traffic generator, run with BPF_PROG_TEST_RUN and
//!   BPF_F_TEST_XDP_LIVE_FRAMES. On every run it rewrites the whole frame
//!   from a template (live-frame pages are recycled without being reset, and
//!   whatever runs downstream may have edited them in place: the kernel's
//!   forwarding rewrites MACs and TTL, IPIP overwrites the Ethernet header),
//!   picks the template and the flow from a per-CPU counter, and returns
//!   XDP_TX (the kernel turns it into a redirect out of the ingress device).
//! - `bench_wrap`: the per-packet-cost wrapper for BPF_PROG_TEST_RUN with a
//!   large repeat count. The kernel does not reset the packet between
//!   repeats, so an encapsulating program would see its own output; this
//!   program undoes any head growth, turns the packet into the next of the
//!   frames user space precomputed (`BENCH_FRAMES`: the templates with the
//!   generator's flow rewrite applied, in the generator's order) by writing
//!   the words that differ, and tail-calls slot 0 of `BENCH_JUMP` (the
//!   program under test). Its own cost is measured by tail-calling the
//!   trivial programs.
//! - `bench_grow`: grows the head by 20 bytes and returns XDP_TX: behind
//!   `bench_wrap`, the floor of an IPv4 encapsulating path (two helper
//!   calls: its growth and the wrapper's undo).
//! - `bench_sink`: counts frames in a per-CPU counter and drops them.
//!
//! Template layout and flow rewrite (mirrored in `bench/src/flows.rs`):
//! frames are Ethernet + IPv4 (60 bytes) or IPv6 (74 bytes) + TCP or UDP,
//! built with the client source port and the low 16 bits of the client
//! address set to zero and the checksums valid for that; each packet writes
//! `sport = 1024 + (flow & 0x7fff)` and `addr_lo = (flow >> 15) & 0xffff`
//! and updates the checksums incrementally (RFC 1624).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

/// Frame length of IPv4 templates.
const LEN_V4: u32 = 60;
/// Frame length of IPv6 templates.
const LEN_V6: u32 = 74;
/// Template kind bits.
const KIND_V6: u32 = 1;
const KIND_UDP: u32 = 2;
/// Largest template.
const TEMPLATE_BYTES: usize = 80;
/// Number of template slots.
const MAX_TEMPLATES: u32 = 4;
/// Number of precomputed frame slots (mirrored in `bench/src/flows.rs`).
const MAX_FRAMES: u32 = 4096;

/// One frame template.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Template {
    /// Frame length: `LEN_V4` or `LEN_V6`.
    pub len: u32,
    /// `KIND_*` bits.
    pub kind: u32,
    /// The frame, zero-padded.
    pub bytes: [u64; TEMPLATE_BYTES / 8],
}

/// Generator settings.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    /// log2 of the number of templates in use (0..=2).
    pub templates_log2: u32,
    /// Number of flows per template minus one (a power of two minus one).
    pub flow_mask: u32,
    /// Number of frames in `BENCH_FRAMES` (a power of two; 0: none).
    pub frames: u32,
}

#[map]
static BENCH_TEMPLATES: Array<Template> = Array::with_max_entries(MAX_TEMPLATES, 0);
#[map]
static BENCH_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);
/// Frames for `bench_wrap`: frame `i` is what the generator would send as its
/// `i`-th packet (template and flow applied).
#[map]
static BENCH_FRAMES: Array<Template> = Array::with_max_entries(MAX_FRAMES, 0);
/// Packets generated (drives the template and flow choice).
#[map]
static BENCH_CTR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// Frames counted by `bench_sink`.
#[map]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// Slot 0: the program under test for `bench_wrap`.
#[map]
static BENCH_JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[inline(always)]
fn csum_update(old: u16, a: u16, b: u16) -> u16 {
    let mut s = (!old) as u32 + a as u32 + b as u32;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Writes `N` 8-byte words of the template at `data`.
///
/// # Safety
/// `data + 8 * N <= data_end` was checked by the caller.
#[inline(always)]
unsafe fn copy_words<const N: usize>(data: usize, src: &[u64; TEMPLATE_BYTES / 8]) {
    let mut i = 0;
    while i < N {
        // SAFETY: in bounds per the caller; x86-64 and arm64 BPF JITs accept
        // unaligned packet stores, and word stores keep this to N instructions.
        unsafe { core::ptr::write((data + 8 * i) as *mut u64, src[i]) };
        i += 1;
    }
}

/// Reads a big-endian u16 at `addr`.
///
/// # Safety
/// Two bytes at `addr` are in bounds, and `addr` is even (frames start
/// 2-aligned and every field written here is at an even offset).
#[inline(always)]
unsafe fn get16(addr: usize) -> u16 {
    // SAFETY: caller's contract.
    u16::from_be(unsafe { core::ptr::read(addr as *const u16) })
}

/// Writes a big-endian u16 at `addr` in one 16-bit store. An unaligned
/// write would become two byte stores, and the program under test reads
/// the field back as one 16-bit word: a load that spans two stores still in
/// the store buffer cannot be forwarded from them and waits for them to
/// reach the cache, a stall that a packet arriving from a NIC never has.
///
/// # Safety
/// As for [`get16`].
#[inline(always)]
unsafe fn put16(addr: usize, v: u16) {
    // SAFETY: caller's contract.
    unsafe { core::ptr::write(addr as *mut u16, v.to_be()) }
}

/// How many bytes the frame has to lose (negative: gain) to be `v6`'s
/// template length again. The usual outcomes (unchanged, one IPv4 or IPv6
/// encapsulation) are told by comparing packet pointers, without a helper
/// call; anything else asks for the buffer length.
#[inline(always)]
fn length_change(ctx: &XdpContext, v6: bool) -> i32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let len = if v6 { LEN_V6 } else { LEN_V4 } as usize;
    if data + len == end {
        return 0;
    }
    if data + len + 20 == end {
        return -20;
    }
    if data + len + 40 == end {
        return -40;
    }
    // SAFETY: helper call on the program's own context.
    let cur = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    len as i32 - cur
}

/// This CPU's packet counter, incremented (drives the template and flow choice).
#[inline(always)]
fn next_packet() -> Option<u64> {
    let ctr = BENCH_CTR.get_ptr_mut(0)?;
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    unsafe {
        let c = *ctr;
        *ctr = c + 1;
        Some(c)
    }
}

/// Live generator: rewrites the frame from a template and applies this
/// packet's flow, after fixing the length at the tail (live frames are reset
/// to the input length each run).
#[inline(always)]
fn prepare(ctx: &XdpContext) -> bool {
    let Some(cfg) = BENCH_CONFIG.get(0) else {
        return false;
    };
    let Some(c) = next_packet() else {
        return false;
    };
    let log2 = cfg.templates_log2 & 3;
    let t_idx = (c as u32) & ((1u32 << log2) - 1);
    let flow = ((c >> log2) as u32) & cfg.flow_mask;
    let Some(t) = BENCH_TEMPLATES.get(t_idx) else {
        return false;
    };
    let delta = length_change(ctx, t.kind & KIND_V6 != 0);
    if delta != 0 {
        // SAFETY: helper calls on the program's own context.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return false;
        }
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let sport = 1024 + (flow & 0x7fff) as u16;
    let addr_lo = ((flow >> 15) & 0xffff) as u16;
    let udp = t.kind & KIND_UDP != 0;
    if t.kind & KIND_V6 == 0 {
        if data + LEN_V4 as usize > end {
            return false;
        }
        // SAFETY: 60 bytes checked: 7 words (56) + 4 bytes.
        unsafe {
            copy_words::<7>(data, &t.bytes);
            let tail = (t.bytes[7] as u32).to_ne_bytes();
            core::ptr::write_unaligned((data + 56) as *mut [u8; 4], tail);
            put16(data + 28, addr_lo);
            put16(data + 34, sport);
            let ipc = get16(data + 24);
            put16(data + 24, csum_update(ipc, addr_lo, 0));
            let l4c_off = if udp { data + 40 } else { data + 50 };
            let mut l4c = csum_update(get16(l4c_off), addr_lo, sport);
            if udp && l4c == 0 {
                l4c = 0xffff;
            }
            put16(l4c_off, l4c);
        }
    } else {
        if data + LEN_V6 as usize > end {
            return false;
        }
        // SAFETY: 74 bytes checked: 9 words (72) + 2 bytes.
        unsafe {
            copy_words::<9>(data, &t.bytes);
            let tail = (t.bytes[9] as u16).to_ne_bytes();
            core::ptr::write_unaligned((data + 72) as *mut [u8; 2], tail);
            put16(data + 36, addr_lo);
            put16(data + 54, sport);
            let l4c_off = if udp { data + 60 } else { data + 70 };
            let mut l4c = csum_update(get16(l4c_off), addr_lo, sport);
            if udp && l4c == 0 {
                l4c = 0xffff;
            }
            put16(l4c_off, l4c);
        }
    }
    true
}

/// Live-traffic generator: one templated frame per run, sent out of the
/// ingress device.
#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    if prepare(&ctx) { XDP_TX } else { XDP_DROP }
}

/// Byte offsets (even) of the 16-bit words in which the frames of one
/// template differ from flow to flow: for IPv4 the header checksum, the low
/// half of the client address, the source port and the TCP or UDP checksum;
/// for IPv6 the same without a header checksum.
const FLOW_WORDS_V4_TCP: [usize; 4] = [24, 28, 34, 50];
const FLOW_WORDS_V4_UDP: [usize; 4] = [24, 28, 34, 40];
const FLOW_WORDS_V6_TCP: [usize; 3] = [36, 54, 70];
const FLOW_WORDS_V6_UDP: [usize; 3] = [36, 54, 60];

/// The 16-bit word at byte `at` (even) of a frame, in memory order.
#[inline(always)]
fn frame_word(f: &Template, at: usize) -> u16 {
    (f.bytes[(at / 8) % (TEMPLATE_BYTES / 8)] >> (8 * (at % 8))) as u16
}

/// Writes the words at `offsets` of `f` into the packet at `data`.
///
/// # Safety
/// Every offset + 2 is within the packet; `data` is even.
#[inline(always)]
unsafe fn put_words<const N: usize>(data: usize, f: &Template, offsets: &[usize; N]) {
    let mut i = 0;
    while i < N {
        let at = offsets[i];
        // SAFETY: the caller's contract.
        unsafe { core::ptr::write((data + at) as *mut u16, frame_word(f, at)) };
        i += 1;
    }
}

/// Restores the input of a test run with a repeat count: undoes head growth,
/// then writes what differs between the packet the program under test left
/// and the next precomputed frame: the Ethernet header (DR rewrites the
/// MACs; after an encapsulation is undone it holds the end of the outer IP
/// header) and this flow's words. The measured paths write nothing else, so
/// the rest of the frame is still the template the run started with (the
/// test run's input); the bench test `wrapped_repeats_see_fresh_packets`
/// checks that the program's output after thousands of repeats equals a
/// fresh run's.
///
/// The flow's words are written with 16-bit stores at the offsets where the
/// program reads them as 16-bit words, so those loads are served whole from
/// the store buffer. Against copying the whole frame in 8-byte words this
/// measured about 2 ns less on every `lb` path and 1 ns less for the
/// wrapper itself.
#[inline(always)]
fn restore(ctx: &XdpContext) -> bool {
    let Some(cfg) = BENCH_CONFIG.get(0) else {
        return false;
    };
    if cfg.frames == 0 {
        return false;
    }
    let Some(c) = next_packet() else {
        return false;
    };
    let Some(f) = BENCH_FRAMES.get((c as u32) & (cfg.frames - 1)) else {
        return false;
    };
    let v6 = f.kind & KIND_V6 != 0;
    let udp = f.kind & KIND_UDP != 0;
    let delta = length_change(ctx, v6);
    // SAFETY: helper call on the program's own context.
    if delta != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return false;
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let len = if v6 { LEN_V6 } else { LEN_V4 } as usize;
    // The second test is the one the verifier can use on both branches.
    if data + len > end || data + LEN_V4 as usize > end {
        return false;
    }
    // SAFETY: 60 bytes checked (74 for IPv6, the IPv6 words below only in
    // that case); the frame starts 8-aligned (behind the 256-byte headroom).
    unsafe {
        core::ptr::write(data as *mut u64, f.bytes[0]);
        core::ptr::write((data + 8) as *mut u32, f.bytes[1] as u32);
        core::ptr::write((data + 12) as *mut u16, frame_word(f, 12));
        if !v6 {
            let w = if udp {
                &FLOW_WORDS_V4_UDP
            } else {
                &FLOW_WORDS_V4_TCP
            };
            put_words(data, f, w);
        } else if data + LEN_V6 as usize <= end {
            let w = if udp {
                &FLOW_WORDS_V6_UDP
            } else {
                &FLOW_WORDS_V6_TCP
            };
            put_words(data, f, w);
        }
    }
    true
}

/// Per-packet-cost wrapper: restore the input, then run the program under test.
#[xdp]
pub fn bench_wrap(ctx: XdpContext) -> u32 {
    if !restore(&ctx) {
        return XDP_DROP;
    }
    // SAFETY: tail call into a program user space put in slot 0; on failure
    // control returns here.
    unsafe { BENCH_JUMP.tail_call(&ctx, 0) };
    XDP_ABORTED
}

/// The floor of an encapsulating path behind `bench_wrap`: grows the head
/// by an outer IPv4 header's 20 bytes (which the wrapper then undoes, as it
/// does `lb`'s) and returns XDP_TX, doing nothing else.
#[xdp]
pub fn bench_grow(ctx: XdpContext) -> u32 {
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -20) } != 0 {
        return XDP_DROP;
    }
    XDP_TX
}

/// Counting sink.
#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(c) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: per-CPU value owned by this CPU for the program's run.
        unsafe { *c += 1 };
    }
    XDP_DROP
}

/// XDP_PASS, for veth peers in the rig.
#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
