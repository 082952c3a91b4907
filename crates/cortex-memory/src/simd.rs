//! Dot products of 4-bit codes ("nibbles", 0–15) with an int8 query: the inner loop of the embedded
//! index's scan (`embedded.rs`). The only `unsafe` of the crate lives here: an AVX2 kernel chosen at run
//! time (`is_x86_feature_detected!`), with a scalar kernel that gives the same integers elsewhere (the
//! tests compare them on random inputs and the extreme values).
//!
//! Layout of one vector's nibbles (a "plane"): blocks of [`BLOCK_DIMS`] dimensions in 32 bytes, byte `j` of
//! a block holding dimension `j` in its low nibble and dimension `32 + j` in its high nibble; the last block
//! is padded with zero nibbles (and the query with zeros). The AVX2 kernel multiplies 32 unsigned nibbles by
//! 32 signed query bytes with `_mm256_maddubs_epi16` (at most 2 × 15 × 127 per lane: no saturation) and
//! widens with `_mm256_madd_epi16`.
#![allow(unsafe_code)]

/// Dimensions per 32-byte block.
pub(crate) const BLOCK_DIMS: usize = 64;

/// Bytes of one vector's plane for `dim` dimensions.
pub(crate) fn plane_len(dim: usize) -> usize {
    dim.div_ceil(BLOCK_DIMS) * BLOCK_DIMS / 2
}

/// Packs `nibbles` (one value 0–15 per dimension) into `out` (`plane_len(nibbles.len())` bytes).
pub(crate) fn pack(nibbles: &[u8], out: &mut [u8]) {
    out.fill(0);
    for (dim, nibble) in nibbles.iter().enumerate() {
        let (block, within) = (dim / BLOCK_DIMS, dim % BLOCK_DIMS);
        let byte = &mut out[block * 32 + within % 32];
        *byte |= (nibble & 15) << (4 * (within / 32));
    }
}

/// Nibble `dim` of a packed plane (inverse of [`pack`]; the tests read planes back with it).
#[cfg(test)]
pub(crate) fn nibble(plane: &[u8], dim: usize) -> u8 {
    let (block, within) = (dim / BLOCK_DIMS, dim % BLOCK_DIMS);
    (plane[block * 32 + within % 32] >> (4 * (within / 32))) & 15
}

/// For each plane of `planes` (consecutive, `query.len() / 2` bytes each; `query.len()` a multiple of
/// [`BLOCK_DIMS`], zero-padded), `Σ nibble × query` into `out`.
pub(crate) fn dots(planes: &[u8], query: &[i8], out: &mut [i32]) {
    let stride = query.len() / 2;
    assert!(
        query.len().is_multiple_of(BLOCK_DIMS) && planes.len() == out.len() * stride,
        "nibble planes and query of mismatched sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the sizes were checked by the assertion.
        unsafe { avx2::dots(planes, query, out) };
        return;
    }
    scalar_dots(planes, query, out);
}

/// The portable kernel (also the reference the AVX2 one is tested against).
fn scalar_dots(planes: &[u8], query: &[i8], out: &mut [i32]) {
    let stride = query.len() / 2;
    for (plane, out) in planes.chunks_exact(stride).zip(out) {
        let mut sum = 0_i32;
        for (bytes, query) in plane.chunks_exact(32).zip(query.chunks_exact(BLOCK_DIMS)) {
            let (low, high) = query.split_at(32);
            for ((byte, low), high) in bytes.iter().zip(low).zip(high) {
                sum += i32::from(byte & 15) * i32::from(*low) + i32::from(byte >> 4) * i32::from(*high);
            }
        }
        *out = sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_shuffle_epi32, _mm256_add_epi16, _mm256_add_epi32,
        _mm256_and_si256, _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_madd_epi16,
        _mm256_maddubs_epi16, _mm256_set1_epi8, _mm256_set1_epi16, _mm256_setzero_si256, _mm256_srli_epi16,
    };

    /// [`super::dots`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2, `query.len()` must be a multiple of 64 and
    /// `planes.len() == out.len() * query.len() / 2`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots(planes: &[u8], query: &[i8], out: &mut [i32]) {
        let stride = query.len() / 2;
        let blocks = stride / 32;
        let low_mask = _mm256_set1_epi8(15);
        let ones = _mm256_set1_epi16(1);
        let query_ptr = query.as_ptr();
        for (n, out) in out.iter_mut().enumerate() {
            // SAFETY: plane `n` is `stride` bytes inside `planes` (the caller's size contract).
            let plane_ptr = unsafe { planes.as_ptr().add(n * stride) };
            let mut acc = _mm256_setzero_si256();
            for block in 0..blocks {
                // SAFETY: block `block` of the plane (32 bytes) and of the query (64 bytes) are in bounds:
                // `blocks * 32 == stride` and `blocks * 64 == query.len()`. Unaligned loads.
                let (bytes, low_query, high_query) = unsafe {
                    (
                        _mm256_loadu_si256(plane_ptr.add(block * 32).cast::<__m256i>()),
                        _mm256_loadu_si256(query_ptr.add(block * 64).cast::<__m256i>()),
                        _mm256_loadu_si256(query_ptr.add(block * 64 + 32).cast::<__m256i>()),
                    )
                };
                let low = _mm256_and_si256(bytes, low_mask);
                let high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_mask);
                // Each 16-bit lane: two products of a nibble (≤ 15) by a query byte (|q| ≤ 128): ≤ 3 840,
                // and the two planes' lanes summed ≤ 7 680 — no saturation.
                let pairs =
                    _mm256_add_epi16(_mm256_maddubs_epi16(low, low_query), _mm256_maddubs_epi16(high, high_query));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            }
            let sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01_00_11_10>(sum));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b10_11_00_01>(sum));
            *out = _mm_cvtsi128_si32(sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic test inputs.
    fn stream(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    fn plain_dot(nibbles: &[u8], query: &[i8]) -> i32 {
        nibbles.iter().zip(query).map(|(n, q)| i32::from(*n) * i32::from(*q)).sum()
    }

    #[test]
    fn pack_places_each_dimension_and_nibble_reads_it_back() {
        for dim in [1, 31, 32, 33, 63, 64, 65, 384, 385] {
            let nibbles: Vec<u8> = (0..dim).map(|d| (d % 16) as u8).collect();
            let mut plane = vec![0xff; plane_len(dim)];
            pack(&nibbles, &mut plane);
            assert_eq!(plane.len() % 32, 0);
            assert!((0..dim).all(|d| nibble(&plane, d) == nibbles[d]), "dim {dim}");
            assert!((dim..plane.len() * 2).all(|d| nibble(&plane, d) == 0), "padding of dim {dim} is zero");
        }
    }

    #[test]
    fn the_kernel_in_use_and_the_scalar_one_agree_with_the_plain_sum() {
        let mut next = stream(0x9e37_79b9_7f4a_7c15);
        for dim in [1_usize, 7, 64, 100, 384, 768, 1000] {
            let padded = dim.div_ceil(BLOCK_DIMS) * BLOCK_DIMS;
            let count = 37;
            // Random values, then the extremes: all 15 × all 127, all 15 × all −127 (|q| ≤ 127 by contract
            // of the quantiser), zeros, and alternating extremes.
            let mut vectors: Vec<(Vec<u8>, Vec<i8>)> = (0..count - 5)
                .map(|_| {
                    let nibbles = (0..dim).map(|_| (next() % 16) as u8).collect();
                    let query = (0..dim).map(|_| ((next() % 255) as i32 - 127) as i8).collect();
                    (nibbles, query)
                })
                .collect();
            vectors.push((vec![15; dim], vec![127; dim]));
            vectors.push((vec![15; dim], vec![-127; dim]));
            vectors.push((vec![0; dim], vec![-127; dim]));
            vectors.push(((0..dim).map(|d| if d % 2 == 0 { 15 } else { 0 }).collect(), vec![127; dim]));
            vectors.push((
                (0..dim).map(|d| (d % 2 * 15) as u8).collect(),
                (0..dim).map(|d| if d % 3 == 0 { -127 } else { 127 }).collect(),
            ));
            for (nibbles, query) in &vectors {
                let mut plane = vec![0; plane_len(dim)];
                pack(nibbles, &mut plane);
                let mut padded_query = query.clone();
                padded_query.resize(padded, 0);
                // The same plane several times: the kernels loop over vectors too.
                let planes = plane.repeat(3);
                let (mut fast, mut scalar) = ([0; 3], [0; 3]);
                dots(&planes, &padded_query, &mut fast);
                scalar_dots(&planes, &padded_query, &mut scalar);
                let plain = plain_dot(nibbles, query);
                assert_eq!(fast, [plain; 3], "dim {dim}");
                assert_eq!(scalar, [plain; 3], "dim {dim}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "mismatched sizes")]
    fn mismatched_sizes_are_refused() {
        dots(&[0; 32], &[0; 63], &mut [0]);
    }
}
