//! Internet checksum (RFC 1071) over fixed-size byte arrays, so every loop
//! has a constant trip count the compiler unrolls.

/// Adds `b` as big-endian 16-bit words to `init` (a trailing odd byte is padded with zero).
#[inline(always)]
pub fn sum_bytes<const N: usize>(b: &[u8; N], init: u32) -> u32 {
    let mut s = init;
    let mut i = 0;
    while i + 1 < N {
        s += ((b[i] as u32) << 8) | b[i + 1] as u32;
        i += 2;
    }
    if N % 2 == 1 {
        s += (b[N - 1] as u32) << 8;
    }
    s
}

/// Folds a 32-bit sum to 16 bits and complements it.
#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Checksum of a 20-byte IPv4 header whose checksum field is zero.
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    fold(sum_bytes(h, 0))
}

/// Adds `WORDS` big-endian 16-bit words read from packet memory at `addr`.
///
/// # Safety
/// The caller has checked `addr + 2 * WORDS <= data_end`.
#[inline(always)]
pub unsafe fn sum_packet<const WORDS: usize>(addr: usize, init: u32) -> u32 {
    let mut s = init;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: within the caller's checked range.
        let w: [u8; 2] = unsafe { core::ptr::read_unaligned((addr + 2 * i) as *const [u8; 2]) };
        s += u16::from_be_bytes(w) as u32;
        i += 1;
    }
    s
}
