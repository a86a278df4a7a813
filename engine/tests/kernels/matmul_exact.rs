//! genq's Q8_0 matrix kernel (`engine/ggml/q8_0_matmul.cpp`) called directly on every matrix shape
//! of GPT-2 small, against the exact product, and against itself with other batch sizes and
//! thread splits. Through a model, rounding differences grow with each layer (2 layers of width
//! 768 turn them into 1% of a logit), so only here can a wrong block, scale or row be told from
//! rounding at these widths.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BLOCK_VALUES: usize = 32;
/// A Q8_0 block: an f16 scale, then 32 signed bytes.
const BLOCK_BYTES: usize = 2 + BLOCK_VALUES;

unsafe extern "C" {
    /// Defined in `engine/ggml/q8_0_matmul.cpp`: C (n rows of m) = B (n rows) x A (m rows), all
    /// packed, `nth` thread shares computed in turn.
    fn genq_q8_0_matmul_for_tests(
        m: i64,
        n: i64,
        k: i64,
        a: *const u8,
        b: *const u8,
        c: *mut f32,
        nth: i32,
    ) -> bool;
}

/// Rows of Q8_0 blocks, as ggml stores a weight matrix or the quantized activations.
struct Matrix {
    rows: usize,
    blocks: usize,
    bytes: Vec<u8>,
}

impl Matrix {
    /// Random values and scales; activations stay within -127..=127, as ggml quantizes them,
    /// weights use -128 too.
    fn random(rows: usize, blocks: usize, rng: &mut ChaCha8Rng, activations: bool) -> Matrix {
        let lowest = if activations { -127 } else { -128 };
        let mut bytes = Vec::with_capacity(rows * blocks * BLOCK_BYTES);
        for _ in 0..rows * blocks {
            // A normal f16 between 2^-8 and 2^-2.
            let scale: u16 = (rng.random_range(7u16..=12) << 10) | rng.random_range(0u16..1024);
            bytes.extend_from_slice(&scale.to_le_bytes());
            bytes.extend((0..BLOCK_VALUES).map(|_| rng.random_range(lowest..=127i8) as u8));
        }
        Matrix {
            rows,
            blocks,
            bytes,
        }
    }

    fn block(&self, row: usize, block: usize) -> (f64, &[u8]) {
        let at = (row * self.blocks + block) * BLOCK_BYTES;
        let bits = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
        (f16_to_f64(bits), &self.bytes[at + 2..at + BLOCK_BYTES])
    }

    /// The first `rows` rows.
    fn head(&self, rows: usize) -> &[u8] {
        &self.bytes[..rows * self.blocks * BLOCK_BYTES]
    }
}

/// Normal, positive f16 values only (what `Matrix::random` makes).
fn f16_to_f64(bits: u16) -> f64 {
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15)
}

/// Row `j` of B times row `i` of A: the exact value (f64 holds every term exactly) and the sum
/// of the terms' magnitudes, which bounds f32 rounding.
fn exact(a: &Matrix, i: usize, b: &Matrix, j: usize) -> (f64, f64) {
    (0..a.blocks).fold((0.0, 0.0), |(sum, magnitude), block| {
        let (wa, qa) = a.block(i, block);
        let (wb, qb) = b.block(j, block);
        let dot: i32 = qa
            .iter()
            .zip(qb)
            .map(|(&x, &y)| i32::from(x as i8) * i32::from(y as i8))
            .sum();
        let term = f64::from(dot) * wa * wb;
        (sum + term, magnitude + term.abs())
    })
}

fn genq_product(a: &Matrix, b: &Matrix, n: usize, nth: i32) -> Vec<f32> {
    assert_eq!(a.blocks, b.blocks);
    let mut c = vec![f32::NAN; n * a.rows];
    // SAFETY: A holds a.rows packed rows and B at least n, each of a.blocks blocks; C holds n
    // rows of a.rows floats.
    let ran = unsafe {
        genq_q8_0_matmul_for_tests(
            a.rows as i64,
            n as i64,
            a.blocks as i64,
            a.bytes.as_ptr(),
            b.head(n).as_ptr(),
            c.as_mut_ptr(),
            nth,
        )
    };
    assert!(ran, "this build has no genq matrix kernel");
    c
}

/// (rows, blocks per row) of GPT-2 small's weight matrices: attention's QKV and output, the
/// MLP's two, and the output layer (50,257 rows: the last group of eight has one row).
const GPT2_SHAPES: [(usize, usize); 5] =
    [(2304, 24), (768, 24), (3072, 24), (768, 96), (50257, 24)];

/// 65 activation rows: past the 64 the kernel widens at a time.
const MOST_ROWS: usize = 65;

/// For each of GPT-2's shapes: random weights, MOST_ROWS rows of activations, and genq's product
/// of the two in two thread shares.
fn products(seed: u64) -> impl Iterator<Item = (Matrix, Matrix, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    GPT2_SHAPES.into_iter().map(move |(rows, blocks)| {
        let a = Matrix::random(rows, blocks, &mut rng, false);
        let b = Matrix::random(MOST_ROWS, blocks, &mut rng, true);
        let c = genq_product(&a, &b, MOST_ROWS, 2);
        (a, b, c)
    })
}

#[test]
fn genq_matmul_kernel_computes_the_exact_product_within_rounding_on_gpt2s_matrix_shapes() {
    for (a, b, c) in products(7) {
        let (rows, blocks) = (a.rows, a.blocks);
        // Every weight row against activation rows from each tile and path.
        for j in [0, 11, 12, 63, 64] {
            for i in 0..rows {
                let (value, magnitude) = exact(&a, i, &b, j);
                let got = f64::from(c[j * rows + i]);
                // Each of the (blocks + 1) f32 roundings is within 2^-24 of the running sum.
                let bound = (blocks + 1) as f64 * magnitude * 2f64.powi(-24);
                assert!(
                    (got - value).abs() <= bound,
                    "{rows}x{blocks} blocks, activation row {j}, weight row {i}: {got}, exact \
                     {value} (allowed {bound})"
                );
            }
        }
    }
}

#[test]
fn genq_matmul_kernel_gives_each_row_the_same_bits_whatever_the_batch_and_thread_split() {
    for (a, b, full) in products(8) {
        let (rows, blocks) = (a.rows, a.blocks);
        // 1 and 11 rows take the direct path, 12 and more the repacked one.
        for n in [1, 2, 11, 12, 16] {
            for nth in [1, 3] {
                let part = genq_product(&a, &b, n, nth);
                let differing = part
                    .iter()
                    .zip(&full)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
                assert_eq!(
                    differing,
                    0,
                    "{rows}x{blocks} blocks: {differing} of the {n} activation rows' {} values \
                     differ from those of the batch of {MOST_ROWS}, with {nth} thread share(s)",
                    n * rows
                );
            }
        }
    }
}
