// genq's Q8_0 matrix kernel beside ggml's (llamafile's tinyBLAS, and ggml_vec_dot_q8_0_q8_0 for a
// single row), on GPT-2 124M's matrix shapes, through ggml's own graph API: each timed operation
// is the whole mul_mat node a decode step runs (ggml quantizes the activations to Q8_0, then
// multiplies), linked against the llama.cpp libraries cargo built with genq's kernels in them.
// Both kernels run in the same process, interleaved; genq_set_upstream_matmul switches them.
// Built and run by bench/kernels/run.sh.
//
// Before timing it checks what the kernel promises: every output within rounding of an exact
// reference (the same quantized values multiplied in 64-bit arithmetic), and every activation
// row's outputs bit-identical whether multiplied alone or among others (batch sizes 1 to 130: both
// of the kernel's paths, and activation tiles). It exits 1 if either fails.

#include "ggml.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <cinttypes>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

extern "C" void genq_set_upstream_matmul(bool upstream);

namespace {

// One pool for every run, as in the worker: a pool per computation would time thread start-ups.
ggml_threadpool * pool(int threads) {
    static ggml_threadpool * pools[64] = {};
    if (pools[threads] == nullptr) {
        ggml_threadpool_params params = ggml_threadpool_params_default(threads);
        pools[threads] = ggml_threadpool_new(&params);
    }
    return pools[threads];
}

struct Matmul {
    ggml_context * ctx;
    ggml_tensor * weights; // Q8_0, k x m
    ggml_tensor * acts;    // F32, k x n
    ggml_tensor * out;     // F32, m x n
    ggml_cgraph * graph;
};

Matmul make(int64_t m, int64_t k, int64_t n) {
    const size_t bytes = ggml_row_size(GGML_TYPE_Q8_0, k) * m + sizeof(float) * (k + m) * n +
                         3 * (ggml_tensor_overhead() + GGML_MEM_ALIGN) + ggml_graph_overhead();
    ggml_init_params params{bytes, nullptr, false};
    Matmul mm{};
    mm.ctx     = ggml_init(params);
    mm.weights = ggml_new_tensor_2d(mm.ctx, GGML_TYPE_Q8_0, k, m);
    mm.acts    = ggml_new_tensor_2d(mm.ctx, GGML_TYPE_F32, k, n);
    mm.out     = ggml_mul_mat(mm.ctx, mm.weights, mm.acts);
    mm.graph   = ggml_new_graph(mm.ctx);
    ggml_build_forward_expand(mm.graph, mm.out);
    return mm;
}

void fill(Matmul & mm, std::mt19937 & rng) {
    const int64_t k = mm.weights->ne[0], m = mm.weights->ne[1];
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> w(k * m);
    for (float & x : w) {
        x = normal(rng);
    }
    ggml_quantize_chunk(GGML_TYPE_Q8_0, w.data(), mm.weights->data, 0, m, k, nullptr);
    std::normal_distribution<float> act(0.0f, 1.0f);
    auto * a = static_cast<float *>(mm.acts->data);
    for (int64_t i = 0; i < ggml_nelements(mm.acts); ++i) {
        a[i] = act(rng);
    }
}

void compute(Matmul & mm, int threads) {
    ggml_cplan plan = ggml_graph_plan(mm.graph, threads, pool(threads));
    thread_local std::vector<uint8_t> work; // the activations quantized, among others
    work.resize(plan.work_size);
    plan.work_data = work.data();
    if (ggml_graph_compute(mm.graph, &plan) != GGML_STATUS_SUCCESS) {
        std::fprintf(stderr, "ggml_graph_compute failed\n");
        std::exit(2);
    }
}

// Outputs against the same quantized values multiplied exactly: an error relative to the sum of
// the terms' magnitudes (cancellation would make plain relative error meaningless).
double worst_error(const Matmul & mm) {
    const int64_t k = mm.weights->ne[0], m = mm.weights->ne[1], n = mm.acts->ne[1];
    // Quantized as mul_mat does (the CPU backend's routine, which may round differently from
    // ggml_quantize_chunk's reference one).
    const size_t row_size = ggml_row_size(GGML_TYPE_Q8_0, k);
    std::vector<uint8_t> quantized(row_size * n);
    const auto from_float = ggml_get_type_traits_cpu(GGML_TYPE_Q8_0)->from_float;
    for (int64_t j = 0; j < n; ++j) {
        from_float(static_cast<const float *>(mm.acts->data) + k * j, quantized.data() + row_size * j, k);
    }
    const size_t block = ggml_row_size(GGML_TYPE_Q8_0, 32);
    auto scale = [&](const uint8_t * b) { return ggml_fp16_to_fp32(*reinterpret_cast<const ggml_fp16_t *>(b)); };
    auto quant = [&](const uint8_t * b, int e) { return static_cast<int>(reinterpret_cast<const int8_t *>(b + 2)[e]); };
    double worst = 0;
    for (int64_t j = 0; j < n; ++j) {
        for (int64_t i = 0; i < m; ++i) {
            double sum = 0, magnitude = 0;
            for (int64_t b = 0; b < k / 32; ++b) {
                const uint8_t * w = static_cast<const uint8_t *>(mm.weights->data) + mm.weights->nb[1] * i + block * b;
                const uint8_t * a = quantized.data() + row_size * j + block * b;
                long dot = 0;
                for (int e = 0; e < 32; ++e) {
                    dot += quant(w, e) * quant(a, e);
                }
                const double term = static_cast<double>(dot) * scale(w) * scale(a);
                sum += term;
                magnitude += std::fabs(term);
            }
            const float got = static_cast<const float *>(mm.out->data)[j * m + i];
            if (magnitude > 0) {
                worst = std::max(worst, std::fabs(got - sum) / magnitude);
            }
        }
    }
    return worst;
}

bool check(std::mt19937 & rng) {
    bool ok = true;
    for (const auto [m, k] : {std::pair<int64_t, int64_t>{67, 64}, {24, 768}, {13, 3072}}) {
        Matmul all = make(m, k, 130);
        fill(all, rng);
        compute(all, 2);
        const double error = worst_error(all);
        if (error > 1e-6) {
            std::printf("FAIL m=%" PRId64 " k=%" PRId64 ": off the exact products by %.3g of their magnitude\n", m, k, error);
            ok = false;
        }
        for (const int64_t n : {1, 2, 3, 5, 8, 11, 12, 13, 16, 31, 64, 65, 100, 129}) {
            Matmul some = make(m, k, n);
            std::memcpy(some.weights->data, all.weights->data, ggml_nbytes(all.weights));
            std::memcpy(some.acts->data, all.acts->data, ggml_nbytes(some.acts));
            compute(some, 2);
            if (std::memcmp(some.out->data, all.out->data, ggml_nbytes(some.out)) != 0) {
                std::printf("FAIL m=%" PRId64 " k=%" PRId64 ": the first %" PRId64 " rows' outputs differ from a batch of 130\n", m, k, n);
                ok = false;
            }
            ggml_free(some.ctx);
        }
        ggml_free(all.ctx);
    }
    return ok;
}

double seconds_per_op(Matmul & mm, int threads, bool upstream) {
    genq_set_upstream_matmul(upstream);
    compute(mm, threads); // warm caches and the work buffer
    const auto start = std::chrono::steady_clock::now();
    int ops = 0;
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(200)) {
        compute(mm, threads);
        ++ops;
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / ops;
}

} // namespace

int main(int argc, char ** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
    if (threads < 1 || threads > 64) {
        std::fprintf(stderr, "usage: %s [threads, 1 to 64]\n", argv[0]);
        return 2;
    }
    ggml_cpu_init();
    std::mt19937 rng(20261127);
    genq_set_upstream_matmul(false);
    if (!check(rng)) {
        return 1;
    }
    std::printf("checks passed: outputs within 1e-6 of exact, identical alone and in batches of 1..130\n\n");
    std::printf("%d thread(s); GMAC/s (higher is better), the two kernels alternated, best of 3 each\n", threads);
    std::printf("| matrix (m x k) | rows n | ggml | genq | genq / ggml |\n| --- | ---: | ---: | ---: | ---: |\n");
    const struct { const char * name; int64_t m, k; } shapes[] = {
        {"attn_qkv 2304 x 768", 2304, 768}, {"attn_output 768 x 768", 768, 768},
        {"ffn_up 3072 x 768", 3072, 768},   {"ffn_down 768 x 3072", 768, 3072},
        {"output 50257 x 768", 50257, 768},
    };
    for (const auto & shape : shapes) {
        for (const int64_t n : {1, 4, 10, 32, 128, 512}) {
            Matmul mm = make(shape.m, shape.k, n);
            fill(mm, rng);
            double best[2] = {1e9, 1e9};
            for (int rep = 0; rep < 3; ++rep) {
                for (int upstream = 1; upstream >= 0; --upstream) {
                    best[upstream] = std::min(best[upstream], seconds_per_op(mm, threads, upstream));
                }
            }
            const double macs = static_cast<double>(shape.m) * shape.k * n;
            std::printf("| %s | %" PRId64 " | %.1f | %.1f | %.2f |\n", shape.name, n, macs / best[1] / 1e9,
                        macs / best[0] / 1e9, best[1] / best[0]);
            ggml_free(mm.ctx);
        }
    }
    genq_set_upstream_matmul(false);
    return 0;
}
