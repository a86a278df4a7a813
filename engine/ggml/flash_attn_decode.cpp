// genq's replacement for ggml's CPU flash attention on decode steps, compiled into llama.cpp's
// CPU backend by overrides.cmake (see docs/performance.md, "Attention kernel").
//
// ggml's row kernel walks the KV cache one cell at a time: an f16 dot product against a query
// converted to f16, then an online-softmax update that converts the whole f16 accumulator to f32
// and back for every cell, each step waiting on the last. On a decode step (one query row per
// sequence and head) that made attention cost far more than its arithmetic, most of all at long
// contexts. Here a row takes four passes: the cells the mask leaves, their scores four cells at
// a time (query kept in f32), one vectorized softmax, then the weighted sum of values with the
// accumulators in registers. Each row is still computed by one thread, in cell order, from its
// own cells only, so a sequence's result does not depend on what else is in the batch. Every
// other case (prompt chunks of 64 tokens or more, quantized or f32 caches, head sizes other than
// 16, 32, 64 and 128, ALiBi, soft-capping, sinks, non-AVX2 builds) goes to ggml's own code
// unchanged.

#include "ops.h"
#include "common.h"
#include "ggml-cpu-impl.h"
#include "vec.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

extern "C" void ggml_compute_forward_flash_attn_ext_upstream(const ggml_compute_params * params,
                                                             ggml_tensor * dst);

// Selected at run time so one binary can be compared with ggml's kernel (GENQ_ATTENTION_KERNEL).
static std::atomic<bool> genq_use_upstream_attention{false};

extern "C" void genq_set_upstream_attention(bool upstream) {
    genq_use_upstream_attention.store(upstream, std::memory_order_relaxed);
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline __m256 load_f16x8(const ggml_fp16_t * p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

struct row_scratch {
    std::vector<float>   weights; // mask biases, then scores, then softmax numerators
    std::vector<int64_t> cells;   // which KV cell each weight belongs to
};

// Scores of the live cells, four at a time so that their FMA chains overlap. Each cell's dot
// product is summed in the same order however the cells are grouped.
template <int D>
static void score_cells(const char * k_base, size_t k_stride, const int64_t * cells, int64_t count,
                        const float * q, float scale, float * weights) {
    __m256 qv[D / 8];
    for (int c = 0; c < D / 8; ++c) {
        qv[c] = _mm256_loadu_ps(q + 8 * c);
    }
    auto dot = [&](int64_t cell) {
        const auto * k = reinterpret_cast<const ggml_fp16_t *>(k_base + cell * k_stride);
        __m256 even = _mm256_setzero_ps();
        __m256 odd  = _mm256_setzero_ps();
        for (int c = 0; c < D / 8; c += 2) {
            even = _mm256_fmadd_ps(load_f16x8(k + 8 * c),     qv[c],     even);
            odd  = _mm256_fmadd_ps(load_f16x8(k + 8 * c + 8), qv[c + 1], odd);
        }
        return _mm256_add_ps(even, odd);
    };
    int64_t j = 0;
    for (; j + 4 <= count; j += 4) {
        const __m256 s0 = dot(cells[j]), s1 = dot(cells[j + 1]);
        const __m256 s2 = dot(cells[j + 2]), s3 = dot(cells[j + 3]);
        weights[j]     = horizontal_sum(s0) * scale + weights[j];
        weights[j + 1] = horizontal_sum(s1) * scale + weights[j + 1];
        weights[j + 2] = horizontal_sum(s2) * scale + weights[j + 2];
        weights[j + 3] = horizontal_sum(s3) * scale + weights[j + 3];
    }
    for (; j < count; ++j) {
        weights[j] = horizontal_sum(dot(cells[j])) * scale + weights[j];
    }
}

// out = sum of weights[j] * V[cells[j]] * norm, with the D/8 accumulators in registers.
template <int D>
static void weigh_values(const char * v_base, size_t v_stride, const int64_t * cells, int64_t count,
                         const float * weights, float norm, float * out) {
    __m256 acc[D / 8];
    for (int c = 0; c < D / 8; ++c) {
        acc[c] = _mm256_setzero_ps();
    }
    for (int64_t j = 0; j < count; ++j) {
        const auto * v = reinterpret_cast<const ggml_fp16_t *>(v_base + cells[j] * v_stride);
        const __m256 w = _mm256_broadcast_ss(weights + j);
        for (int c = 0; c < D / 8; ++c) {
            acc[c] = _mm256_fmadd_ps(w, load_f16x8(v + 8 * c), acc[c]);
        }
    }
    for (int c = 0; c < D / 8; ++c) {
        _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], _mm256_set1_ps(norm)));
    }
}

template <int D>
static void attend_rows(ggml_tensor * dst, int64_t ir0, int64_t ir1, float scale,
                        row_scratch & scratch) {
    const ggml_tensor * q    = dst->src[0];
    const ggml_tensor * k    = dst->src[1];
    const ggml_tensor * v    = dst->src[2];
    const ggml_tensor * mask = dst->src[3];

    GGML_TENSOR_LOCALS(int64_t, neq, q,   ne)
    GGML_TENSOR_LOCALS(size_t,  nbq, q,   nb)
    GGML_TENSOR_LOCALS(int64_t, nek, k,   ne)
    GGML_TENSOR_LOCALS(size_t,  nbk, k,   nb)
    GGML_TENSOR_LOCALS(int64_t, nev, v,   ne)
    GGML_TENSOR_LOCALS(size_t,  nbv, v,   nb)
    GGML_TENSOR_LOCALS(int64_t, ne,  dst, ne)
    GGML_TENSOR_LOCALS(size_t,  nb,  dst, nb)

    const int64_t n_kv = nek1;
    scratch.weights.resize(n_kv);
    scratch.cells.resize(n_kv);
    float   * weights = scratch.weights.data();
    int64_t * cells   = scratch.cells.data();
    float out[D];

    for (int64_t ir = ir0; ir < ir1; ++ir) {
        const int64_t iq3 = ir / (neq2 * neq1);
        const int64_t iq2 = (ir - iq3 * neq2 * neq1) / neq1;
        const int64_t iq1 = ir - iq3 * neq2 * neq1 - iq2 * neq1;

        const int64_t ik2 = iq2 / (neq2 / nek2), ik3 = iq3 / (neq3 / nek3);
        const int64_t iv2 = iq2 / (neq2 / nev2), iv3 = iq3 / (neq3 / nev3);

        const ggml_fp16_t * mask_row = mask
            ? reinterpret_cast<const ggml_fp16_t *>(static_cast<const char *>(mask->data)
                  + iq1 * mask->nb[1] + (iq2 % mask->ne[2]) * mask->nb[2]
                  + (iq3 % mask->ne[3]) * mask->nb[3])
            : nullptr;
        const float * q_row = reinterpret_cast<const float *>(
            static_cast<const char *>(q->data) + iq1 * nbq1 + iq2 * nbq2 + iq3 * nbq3);
        const char * k_base = static_cast<const char *>(k->data) + ik2 * nbk2 + ik3 * nbk3;
        const char * v_base = static_cast<const char *>(v->data) + iv2 * nbv2 + iv3 * nbv3;

        int64_t live = 0;
        for (int64_t ic = 0; ic < n_kv; ++ic) {
            const float bias = mask_row ? GGML_CPU_FP16_TO_FP32(mask_row[ic]) : 0.0f;
            if (bias != -INFINITY) {
                weights[live] = bias;
                cells[live]   = ic;
                ++live;
            }
        }
        score_cells<D>(k_base, nbk1, cells, live, q_row, scale, weights);

        float max_score = -INFINITY;
        for (int64_t j = 0; j < live; ++j) {
            max_score = std::max(max_score, weights[j]);
        }
        // As ggml's kernel: a row with every cell masked comes out as zeros.
        const ggml_float total = live > 0
            ? ggml_vec_soft_max_f32(static_cast<int>(live), weights, weights, max_score)
            : 0.0;
        const float norm = total == 0.0 ? 0.0f : static_cast<float>(1.0 / total);
        weigh_values<D>(v_base, nbv1, cells, live, weights, norm, out);

        // ggml's output layout: permute(0, 2, 1, 3).
        char * dst_row = static_cast<char *>(dst->data) + (iq3 * ne2 * ne1 + iq2 + iq1 * ne1) * nb1;
        memcpy(dst_row, out, nb1);
    }
}

static bool decode_kernel_applies(const ggml_compute_params * params, const ggml_tensor * dst) {
    const ggml_tensor * q    = dst->src[0];
    const ggml_tensor * k    = dst->src[1];
    const ggml_tensor * v    = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    const ggml_tensor * sinks = dst->src[4];

    float max_bias = 0.0f, softcap = 0.0f;
    memcpy(&max_bias, reinterpret_cast<const float *>(dst->op_params) + 1, sizeof(float));
    memcpy(&softcap,  reinterpret_cast<const float *>(dst->op_params) + 2, sizeof(float));

    return !params->use_ref
        && q->type == GGML_TYPE_F32 && k->type == GGML_TYPE_F16 && v->type == GGML_TYPE_F16
        && (mask == nullptr || mask->type == GGML_TYPE_F16) && sinks == nullptr
        && max_bias == 0.0f && softcap == 0.0f
        && (k->ne[0] == 16 || k->ne[0] == 32 || k->ne[0] == 64 || k->ne[0] == 128)
        && v->ne[0] == k->ne[0]
        && q->nb[0] == sizeof(float) && k->nb[0] == sizeof(ggml_fp16_t)
        && v->nb[0] == sizeof(ggml_fp16_t) && dst->nb[0] == sizeof(float)
        && dst->nb[1] == v->ne[0] * sizeof(float)
        && (mask == nullptr || mask->ne[0] >= k->ne[1])
        // Prompt chunks of this many tokens go to ggml's tiled kernel, as in ggml. Not ggml's
        // split across threads of one long sequence's cells: whether a sequence decodes alone
        // must not change how its attention is summed.
        && q->ne[1] < static_cast<int64_t>(ggml_fa_tile_config::Q);
}

extern "C" void ggml_compute_forward_flash_attn_ext(const ggml_compute_params * params,
                                                    ggml_tensor * dst) {
    // Every thread takes the same branch: the inputs are shared, and the flag is only set
    // while nothing decodes (see genq_engine::use_attention_kernel).
    if (genq_use_upstream_attention.load(std::memory_order_relaxed)
        || !decode_kernel_applies(params, dst)) {
        ggml_compute_forward_flash_attn_ext_upstream(params, dst);
        return;
    }

    float scale = 1.0f;
    memcpy(&scale, reinterpret_cast<const float *>(dst->op_params), sizeof(float));

    const ggml_tensor * q = dst->src[0];
    const int64_t rows = q->ne[1] * q->ne[2] * q->ne[3];

    // Rows differ in length (sequences at different positions), so threads take chunks as they
    // finish, as ggml's kernel does.
    const int     nth        = params->nth;
    const int64_t chunk_rows = std::max<int64_t>(1, (rows + 4 * nth - 1) / (4 * nth));
    const int64_t chunks     = (rows + chunk_rows - 1) / chunk_rows;

    if (params->ith == 0) {
        ggml_threadpool_chunk_set(params->threadpool, nth);
    }
    ggml_barrier(params->threadpool);

    thread_local row_scratch scratch;
    for (int64_t chunk = params->ith; chunk < chunks;
         chunk = ggml_threadpool_chunk_add(params->threadpool, 1)) {
        const int64_t ir0 = chunk * chunk_rows;
        const int64_t ir1 = std::min(ir0 + chunk_rows, rows);
        switch (q->ne[0]) {
            case 16:  attend_rows<16>(dst, ir0, ir1, scale, scratch);  break; // genq's test model
            case 32:  attend_rows<32>(dst, ir0, ir1, scale, scratch);  break;
            case 64:  attend_rows<64>(dst, ir0, ir1, scale, scratch);  break; // GPT-2
            default:  attend_rows<128>(dst, ir0, ir1, scale, scratch); break;
        }
    }
}

#else // no AVX2: ggml's kernel throughout

extern "C" void ggml_compute_forward_flash_attn_ext(const ggml_compute_params * params,
                                                    ggml_tensor * dst) {
    ggml_compute_forward_flash_attn_ext_upstream(params, dst);
}

#endif
