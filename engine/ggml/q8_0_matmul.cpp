// genq's replacement for llamafile's Q8_0 matrix kernel (tinyBLAS) in llama.cpp's CPU backend,
// compiled in by overrides.cmake (see docs/performance.md, "Matrix kernel").
//
// Every weight matrix of a Q8_0 model is multiplied by the step's activations, quantized to Q8_0
// by ggml first, and that product is most of a decode step's time. tinyBLAS (AVX2) spends about
// six vector instructions on each 32-element block pair: a sign trick to feed signed bytes to an
// unsigned multiply, the multiply, a widening add, an int to float conversion and a fused
// multiply-add per block, for every weight row and every activation row. Here eight weight rows are repacked once per call into 16-bit pairs, interleaved
// so that one register holds the same two columns of all eight rows; each activation pair is then
// broadcast and a single multiply-add gives eight rows' partial dot products, summed exactly in
// 32-bit integers over the block. A block costs two instructions per 32 elements and activation
// row, plus one conversion and one fused multiply-add per block for eight rows at once.
//
// Results do not depend on the batch. Every output is the exact integer dot product of each block,
// converted to float, times (weight scale * activation scale), added in block order with one
// fused multiply-add, whichever path computes it: the repacked one for 12 activation rows or more,
// or the direct one (no repacking, which would not pay for itself) for fewer, a single row
// included (where llamafile declines and ggml's own vec_dot runs). So a sequence decoded alone gets
// bit-identical logits to the same sequence in a batch.

#include "llamafile/sgemm.h"
#include "ggml-cpu-impl.h"
#include "ggml-quants.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

extern "C" bool llamafile_sgemm_upstream(const ggml_compute_params * params, int64_t m, int64_t n,
                                         int64_t k, const void * A, int64_t lda, const void * B,
                                         int64_t ldb, void * C, int64_t ldc, int Atype, int Btype,
                                         int Ctype);

// Selected at run time so one binary can be compared with tinyBLAS (GENQ_MATMUL_KERNEL).
static std::atomic<bool> genq_use_upstream_matmul{false};

extern "C" void genq_set_upstream_matmul(bool upstream) {
    genq_use_upstream_matmul.store(upstream, std::memory_order_relaxed);
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

namespace {

constexpr int GROUP_ROWS      = 8;         // weight rows per group: one 32-bit lane each
constexpr int PAIRS_PER_BLOCK = QK8_0 / 2; // 16-bit column pairs per Q8_0 block
constexpr int REPACK_MIN_ROWS = 12;        // activation rows from which repacking pays
// Activation rows widened at a time (prompt chunks have up to 512): 64 x 3072 values of 16 bits
// stay in L2 while every weight group of the thread runs over them.
constexpr int64_t ACT_TILE_ROWS = 64;

inline float half_to_float(ggml_half h) {
    return _cvtsh_ss(h);
}

// The outputs of one block: exact integer sums for eight weight rows, scaled and added.
inline __m256 add_block(__m256 acc, __m256i sums, __m256 weight_scales, float act_scale) {
    const __m256 scale = _mm256_mul_ps(weight_scales, _mm256_set1_ps(act_scale));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
}

// The two integer steps, with AVX-512 VNNI's fused forms where the build has them (an AVX-512 build
// for the host, scripts/lib.sh): the same exact sums in fewer instructions, so results do not
// depend on the instruction set either.

// acc + the sums of adjacent 16-bit products of w and a.
inline __m256i add_pair_products(__m256i acc, __m256i w, __m256i a) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, w, a);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, a));
#endif
}

// The sums of four adjacent byte products of unsigned u and signed s, per 32-bit lane.
inline __m256i quad_products(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// out[c] lane r = in[r] lane c.
inline void transpose_8x8(const __m256i in[8], int16_t * out) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm256_castsi256_ps(in[i]);
    }
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    const __m256 c[8] = {
        _mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
        _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
        _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
        _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31),
    };
    for (int i = 0; i < 8; ++i) {
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out) + i, _mm256_castps_si256(c[i]));
    }
}

struct scratch {
    std::vector<int16_t> weights;       // per block, 16 x 16 values: column pair p of the 8 rows
    std::vector<float>   weight_scales; // per block, 8 values
    std::vector<int16_t> acts;          // per activation row, k * 32 values widened to 16 bits
    std::vector<float>   act_scales;    // per activation row and block
};

// Per block, the eight rows' scales (0 for rows past the matrix), shared by every activation row.
// Row by row: the group's rows lie one after another in memory, and reading them in that order is
// one stream the hardware prefetcher follows. Block by block (eight interleaved streams of a few
// cache lines each, missed on every line) a lone sequence's decode step took 1.7x as long.
void convert_weight_scales(const block_q8_0 * const rows[GROUP_ROWS], int64_t k, scratch & s) {
    s.weight_scales.resize(k * GROUP_ROWS);
    for (int r = 0; r < GROUP_ROWS; ++r) {
        for (int64_t b = 0; b < k; ++b) {
            s.weight_scales[b * GROUP_ROWS + r] = rows[r] != nullptr ? half_to_float(rows[r][b].d) : 0.0f;
        }
    }
}

void repack_group(const block_q8_0 * const rows[GROUP_ROWS], int64_t k, scratch & s) {
    s.weights.resize(k * PAIRS_PER_BLOCK * 16);
    for (int64_t b = 0; b < k; ++b) {
        __m256i low[GROUP_ROWS], high[GROUP_ROWS]; // lane c: columns 2c, 2c+1 (and 16 + those)
        for (int r = 0; r < GROUP_ROWS; ++r) {
            if (rows[r] == nullptr) {
                low[r] = high[r] = _mm256_setzero_si256();
                continue;
            }
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[r][b].qs));
            low[r]  = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q));
            high[r] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
        }
        transpose_8x8(low, &s.weights[b * PAIRS_PER_BLOCK * 16]);
        transpose_8x8(high, &s.weights[(b * PAIRS_PER_BLOCK + 8) * 16]);
    }
}

void widen_acts(const block_q8_0 * B, int64_t ldb, int64_t n, int64_t k, scratch & s) {
    s.acts.resize(n * k * QK8_0);
    s.act_scales.resize(n * k);
    for (int64_t j = 0; j < n; ++j) {
        for (int64_t b = 0; b < k; ++b) {
            const block_q8_0 & block = B[ldb * j + b];
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block.qs));
            int16_t * out = &s.acts[(j * k + b) * QK8_0];
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(out),
                                _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + 16),
                                _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1)));
            s.act_scales[j * k + b] = half_to_float(block.d);
        }
    }
}

// NA activation rows (from j0) against the repacked group.
template <int NA>
void multiply_repacked(const scratch & s, int64_t j0, int64_t k, __m256 out[NA]) {
    __m256 acc[NA];
    for (int a = 0; a < NA; ++a) {
        acc[a] = _mm256_setzero_ps();
    }
    const size_t act_stride = k * QK8_0;
    for (int64_t b = 0; b < k; ++b) {
        const auto * w = reinterpret_cast<const __m256i *>(&s.weights[b * PAIRS_PER_BLOCK * 16]);
        const int16_t * act = &s.acts[j0 * act_stride + b * QK8_0];
        __m256i sums[NA];
        for (int a = 0; a < NA; ++a) {
            sums[a] = _mm256_setzero_si256();
        }
        for (int p = 0; p < PAIRS_PER_BLOCK; ++p) {
            const __m256i wp = _mm256_loadu_si256(w + p);
            for (int a = 0; a < NA; ++a) {
                int32_t pair;
                std::memcpy(&pair, act + a * act_stride + 2 * p, sizeof pair);
                sums[a] = add_pair_products(sums[a], wp, _mm256_set1_epi32(pair));
            }
        }
        for (int a = 0; a < NA; ++a) {
            acc[a] = add_block(acc[a], sums[a], _mm256_loadu_ps(&s.weight_scales[b * GROUP_ROWS]),
                               s.act_scales[(j0 + a) * k + b]);
        }
    }
    for (int a = 0; a < NA; ++a) {
        out[a] = acc[a];
    }
}

// Lane r of the result: the sum of v[r]'s lanes.
inline __m256i sum_lanes_8(const __m256i v[8]) {
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

// One activation row against the group's rows as they are stored: the same integer sums as the
// repacked path, reduced across lanes instead.
__m256 multiply_direct(const block_q8_0 * const rows[GROUP_ROWS], const float * weight_scales,
                       const block_q8_0 * act, int64_t k) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < k; ++b) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(act[b].qs));
        __m256i partial[GROUP_ROWS];
        for (int r = 0; r < GROUP_ROWS; ++r) {
            if (rows[r] == nullptr) {
                partial[r] = _mm256_setzero_si256();
                continue;
            }
            const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(rows[r][b].qs));
            // |w| * (a with w's sign): a byte multiply needs one unsigned operand. Exact as long as
            // a != -128, which sign could not negate; ggml quantizes activations to +-127. A weight
            // of -128 is fine (|w| reads as 128 unsigned): a pair sums to at most 2 * 128 * 127.
            partial[r] = quad_products(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        }
        acc = add_block(acc, sum_lanes_8(partial), _mm256_loadu_ps(weight_scales + b * GROUP_ROWS),
                        half_to_float(act[b].d));
    }
    return acc;
}

void store_group(float * C, int64_t ldc, int64_t j, int64_t i0, int rows, __m256 values) {
    float * out = C + ldc * j + i0;
    if (rows == GROUP_ROWS) {
        _mm256_storeu_ps(out, values);
        return;
    }
    alignas(32) float lanes[GROUP_ROWS];
    _mm256_store_ps(lanes, values);
    std::copy(lanes, lanes + rows, out);
}

template <int NA>
void multiply_and_store(const scratch & s, int64_t j0, int64_t k, float * C, int64_t ldc,
                        int64_t i0, int rows) {
    __m256 out[NA];
    multiply_repacked<NA>(s, j0, k, out);
    for (int a = 0; a < NA; ++a) {
        store_group(C, ldc, j0 + a, i0, rows, out[a]);
    }
}

// C (n rows of m) = B (n rows) x A (m rows), in llamafile's terms: k counts Q8_0 blocks per row,
// lda and ldb are in blocks, ldc in floats. Each thread takes a contiguous share of the 8-row
// weight groups, as tinyBLAS shares its tiles.
void q8_0_matmul(int ith, int nth, int64_t m, int64_t n, int64_t k, const block_q8_0 * A,
                 int64_t lda, const block_q8_0 * B, int64_t ldb, float * C, int64_t ldc) {
    thread_local scratch s;
    const int64_t groups = (m + GROUP_ROWS - 1) / GROUP_ROWS;
    const int64_t first  = groups * ith / nth;
    const int64_t last   = groups * (ith + 1) / nth;
    auto group_rows = [&](int64_t g, const block_q8_0 * row_ptrs[GROUP_ROWS]) {
        const int rows = static_cast<int>(std::min<int64_t>(GROUP_ROWS, m - g * GROUP_ROWS));
        for (int r = 0; r < GROUP_ROWS; ++r) {
            row_ptrs[r] = r < rows ? A + lda * (g * GROUP_ROWS + r) : nullptr;
        }
        convert_weight_scales(row_ptrs, k, s);
        return rows;
    };
    if (n < REPACK_MIN_ROWS) {
        for (int64_t g = first; g < last; ++g) {
            const block_q8_0 * row_ptrs[GROUP_ROWS];
            const int rows = group_rows(g, row_ptrs);
            for (int64_t j = 0; j < n; ++j) {
                store_group(C, ldc, j, g * GROUP_ROWS, rows,
                            multiply_direct(row_ptrs, s.weight_scales.data(), B + ldb * j, k));
            }
        }
        return;
    }
    for (int64_t t0 = 0; t0 < n && first < last; t0 += ACT_TILE_ROWS) {
        const int64_t tile = std::min(ACT_TILE_ROWS, n - t0);
        widen_acts(B + ldb * t0, ldb, tile, k, s);
        float * C_tile = C + ldc * t0;
        for (int64_t g = first; g < last; ++g) {
            const block_q8_0 * row_ptrs[GROUP_ROWS];
            const int rows = group_rows(g, row_ptrs);
            const int64_t i0 = g * GROUP_ROWS;
            repack_group(row_ptrs, k, s);
            int64_t j = 0;
            for (; j + 4 <= tile; j += 4) {
                multiply_and_store<4>(s, j, k, C_tile, ldc, i0, rows);
            }
            switch (tile - j) {
                case 3: multiply_and_store<3>(s, j, k, C_tile, ldc, i0, rows); break;
                case 2: multiply_and_store<2>(s, j, k, C_tile, ldc, i0, rows); break;
                case 1: multiply_and_store<1>(s, j, k, C_tile, ldc, i0, rows); break;
                default: break;
            }
        }
    }
}

} // namespace

#define GENQ_KERNELS_COMPILED 1
#endif

// Whether genq's kernels are in this build: they need AVX2, FMA and F16C (flash_attn_decode.cpp
// has the same condition), and elsewhere ggml's run whatever the settings say.
extern "C" bool genq_kernels_compiled() {
#ifdef GENQ_KERNELS_COMPILED
    return true;
#else
    return false;
#endif
}

// The kernel alone, for engine/tests/kernels: C (n rows of m) = B (n rows) x A (m rows), every
// matrix packed (lda = ldb = k blocks, ldc = m), the work split between nth threads run one after
// another. False in a build without the kernel.
extern "C" bool genq_q8_0_matmul_for_tests(int64_t m, int64_t n, int64_t k, const void * A,
                                           const void * B, float * C, int nth) {
#ifdef GENQ_KERNELS_COMPILED
    for (int ith = 0; ith < nth; ++ith) {
        q8_0_matmul(ith, nth, m, n, k, static_cast<const block_q8_0 *>(A), k,
                    static_cast<const block_q8_0 *>(B), k, C, m);
    }
    return true;
#else
    (void) m, (void) n, (void) k, (void) A, (void) B, (void) C, (void) nth;
    return false;
#endif
}

extern "C" bool llamafile_sgemm(const ggml_compute_params * params, int64_t m, int64_t n,
                                int64_t k, const void * A, int64_t lda, const void * B,
                                int64_t ldb, void * C, int64_t ldc, int Atype, int Btype,
                                int Ctype) {
#ifdef GENQ_KERNELS_COMPILED
    if (!genq_use_upstream_matmul.load(std::memory_order_relaxed) && Atype == GGML_TYPE_Q8_0 &&
        Btype == GGML_TYPE_Q8_0 && Ctype == GGML_TYPE_F32) {
        q8_0_matmul(params->ith, params->nth, m, n, k, static_cast<const block_q8_0 *>(A), lda,
                    static_cast<const block_q8_0 *>(B), ldb, static_cast<float *>(C), ldc);
        return true;
    }
#endif
    return llamafile_sgemm_upstream(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}
