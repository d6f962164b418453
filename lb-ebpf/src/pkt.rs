//! Packet memory access in 16-bit words.
//!
//! The BPF backend turns every unaligned access into single bytes, and the
//! verifier refuses unaligned stack slots, so the program reads and writes
//! packets as *aligned* 16-bit words instead: XDP packet data starts 2-byte
//! aligned (frames sit behind a 256-byte headroom in page buffers, and
//! `bpf_xdp_adjust_head` is only called with even deltas here), and every
//! header field this program touches is at an even offset (Ethernet 14/18,
//! IPv4 options in 4-byte units, IPv6 extension headers in 8-byte units).
//!
//! Words are "raw": the two wire bytes in memory order, i.e. `from_ne_bytes`
//! on this little-endian target. Raw words are compared against constants
//! converted with `to_be`, and the ones'-complement checksum is summed and
//! stored raw (RFC 1071 §2(B): the sum is byte-order independent).
//!
//! # Safety
//! Every function here requires `addr` (and the bytes it touches) to lie
//! inside the packet, checked against `data_end` by the caller, and `addr`
//! to be even.

#[cfg(target_endian = "big")]
compile_error!("lb-ebpf's raw packet words assume a little-endian BPF target (bpfel)");

/// Raw 16-bit word at `addr`.
#[inline(always)]
pub unsafe fn ld16(addr: usize) -> u16 {
    // SAFETY: in bounds and 2-aligned (module contract).
    unsafe { core::ptr::read(addr as *const u16) }
}

/// The big-endian 16-bit length at `addr`, as a value the verifier can
/// bound. Kernels before 6.6 forget all bounds of a register after a byte
/// swap (`BPF_END`), and after an OR with an unknown register; only an AND
/// with a constant brings them back. The compiler knows the swapped value
/// fits in 16 bits and would drop that AND: `black_box` hides the value
/// from it (one stack store and load). Without this, a length added to a
/// packet pointer fails verification there ("math between pkt pointer and
/// register with unbounded min value").
///
/// # Safety
/// `addr + 2 <= data_end` was checked.
#[inline(always)]
pub unsafe fn ld_be16(addr: usize) -> u32 {
    // SAFETY: in bounds and 2-aligned (the caller's contract).
    let w = u16::from_be(unsafe { core::ptr::read(addr as *const u16) }) as u32;
    core::hint::black_box(w) & 0xffff
}

/// Writes a raw 16-bit word at `addr`.
#[inline(always)]
pub unsafe fn st16(addr: usize, v: u16) {
    // SAFETY: in bounds and 2-aligned (module contract).
    unsafe { core::ptr::write(addr as *mut u16, v) }
}

/// Raw 32-bit value at `addr` (its bytes are the four wire bytes).
#[inline(always)]
pub unsafe fn ld32(addr: usize) -> u32 {
    // SAFETY: module contract, 4 bytes.
    unsafe { (ld16(addr) as u32) | ((ld16(addr + 2) as u32) << 16) }
}

/// Writes a raw 32-bit value at `addr`.
#[inline(always)]
pub unsafe fn st32(addr: usize, v: u32) {
    // SAFETY: module contract, 4 bytes.
    unsafe {
        st16(addr, v as u16);
        st16(addr + 2, (v >> 16) as u16);
    }
}

/// Reads 16 bytes (an IPv6 address) at `addr` as raw words.
#[inline(always)]
pub unsafe fn ldw128(addr: usize) -> [u32; 4] {
    // SAFETY: module contract, 16 bytes.
    unsafe { [ld32(addr), ld32(addr + 4), ld32(addr + 8), ld32(addr + 12)] }
}

/// Reads 16 bytes (an IPv6 address) at `addr` into `out`.
#[inline(always)]
pub unsafe fn ld128(addr: usize, out: &mut [u8; 16]) {
    // SAFETY: module contract, 16 bytes.
    unsafe {
        set32(out, 0, ld32(addr));
        set32(out, 1, ld32(addr + 4));
        set32(out, 2, ld32(addr + 8));
        set32(out, 3, ld32(addr + 12));
    }
}

/// Writes a MAC address at `addr`, read from `m` as three 16-bit words
/// (assembled from bytes, LLVM would load single bytes: it cannot always
/// see the field's alignment).
///
/// # Safety
/// The module contract for `addr`, and `m` is 2-aligned: a field at an even
/// offset in a struct aligned to at least 2 (asserted where the types are
/// used).
#[inline(always)]
pub unsafe fn st_mac(addr: usize, m: &[u8; 6]) {
    let w = m.as_ptr().cast::<u16>();
    // SAFETY: module contract, 6 bytes; `m` is 2-aligned (the caller's contract).
    unsafe {
        st16(addr, core::ptr::read(w));
        st16(addr + 2, core::ptr::read(w.add(1)));
        st16(addr + 4, core::ptr::read(w.add(2)));
    }
}

/// Copies a 6-byte MAC address inside the packet (non-overlapping).
#[inline(always)]
pub unsafe fn copy_mac(dst: usize, src: usize) {
    // SAFETY: module contract, 6 bytes each.
    unsafe {
        st16(dst, ld16(src));
        st16(dst + 2, ld16(src + 2));
        st16(dst + 4, ld16(src + 4));
    }
}

/// The four raw words of a 16-byte address field in a map value, with one
/// load each (reading the bytes makes LLVM assemble single bytes: it cannot see
/// the field's alignment).
///
/// # Safety
/// `a` is 4-byte aligned: a field at an offset that is a multiple of 4 in an
/// `align(4)` struct (asserted at compile time where the types are used).
#[inline(always)]
pub unsafe fn words16(a: &[u8; 16]) -> [u32; 4] {
    // SAFETY: 16 readable bytes, 4-aligned per the caller; any bits are a valid u32.
    unsafe { core::ptr::read(a.as_ptr().cast::<[u32; 4]>()) }
}

/// The raw word of a 4-byte field in a map value, with one load.
///
/// # Safety
/// As [`words16`].
#[inline(always)]
pub unsafe fn word4(a: &[u8; 4]) -> u32 {
    // SAFETY: 4 readable bytes, 4-aligned per the caller.
    unsafe { core::ptr::read(a.as_ptr().cast::<u32>()) }
}

/// Sets raw 32-bit word `i` of a byte array.
#[inline(always)]
pub fn set32(a: &mut [u8; 16], i: usize, v: u32) {
    let b = v.to_ne_bytes();
    a[4 * i] = b[0];
    a[4 * i + 1] = b[1];
    a[4 * i + 2] = b[2];
    a[4 * i + 3] = b[3];
}

/// Adds `WORDS` raw 16-bit words at `addr` to a ones'-complement sum.
#[inline(always)]
pub unsafe fn sum16<const WORDS: usize>(addr: usize, init: u32) -> u32 {
    let mut s = init;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: module contract, 2 * WORDS bytes.
        s += unsafe { ld16(addr + 2 * i) } as u32;
        i += 1;
    }
    s
}

/// Folds a ones'-complement sum and complements it (the checksum field value, raw).
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
