/* Host entry points of the CUDA code (kernels/cuda/), callable from C.
 *
 * Nothing here needs the CUDA headers: streams are passed as `void *` (a
 * cudaStream_t; NULL is the default stream) and device buffers as plain
 * pointers. Every function that can fail returns a ql_status; a CUDA error
 * becomes QL_EBACKEND with a message naming the call, file:line and CUDA's
 * own description (kernels/cuda/cuda_util.h, QL_CUDA_TRY), except running
 * out of device memory in ql_cuda_malloc: QL_ENOMEM with the size asked
 * for and the device's figures.
 *
 * The functions exist only in builds with the CUDA backend (QL_HAVE_CUDA=1);
 * code that must also build without it guards its calls with that macro.
 * The exception is the 4-bit path rule (ql_cuda_q4_*path*, *fused_max*,
 * check_env: kernels/cuda_q4_path.c), plain C in every build. */
#ifndef QL_CUDA_API_H
#define QL_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The project's C headers declare C functions: keep their linkage in .cu. */
#include "core/dtype.h"
#include "core/status.h"
#include "kernels/dropout.h"
#include "kernels/quant4.h"

/* Number of visible CUDA devices; 0 (not an error) when there is no driver or
 * no device. Never fails. */
int ql_cuda_device_count(void);

/* Device facts for logs and benchmark results. name gets the marketing name
 * ("NVIDIA H200"); versions are CUDA's integers (13000 = 13.0). */
typedef struct ql_cuda_device_info {
    char name[256];
    int cc_major, cc_minor;
    int sm_count;
    size_t total_mem;
    int l2_bytes;
    int driver_version;
    int runtime_version;
} ql_cuda_device_info;
ql_status ql_cuda_get_device_info(int device, ql_cuda_device_info *info);

ql_status ql_cuda_set_device(int device);

/* --- memory (device pointers) ---------------------------------------------- */
ql_status ql_cuda_malloc(size_t bytes, void **out);
void ql_cuda_free(void *p);
ql_status ql_cuda_upload(void *dev_dst, const void *host_src, size_t bytes);
ql_status ql_cuda_download(void *host_dst, const void *dev_src, size_t bytes);
/* cudaMemcpyAsync device-to-device and cudaMemsetAsync on `stream`. */
ql_status ql_cuda_copy_d2d(void *dev_dst, const void *dev_src, size_t bytes, void *stream);
ql_status ql_cuda_memset(void *dev_dst, int byte, size_t bytes, void *stream);
/* Waits for all work on the device. */
ql_status ql_cuda_sync(void);
/* Bytes held through ql_cuda_malloc (every buffer of the cuda backend: the
 * model, the optimizer, the ops' scratch, the cuBLASLt workspace), now and
 * at most since the last ql_cuda_mem_reset_peak. */
void ql_cuda_mem_counts(size_t *in_use, size_t *peak);
void ql_cuda_mem_reset_peak(void);
/* The current device's used (total - free, as cudaMemGetInfo says: every
 * process and the CUDA context included) and total bytes. */
ql_status ql_cuda_mem_info(size_t *used, size_t *total);

/* --- 4-bit weights ------------------------------------------------------------ */
/* Copies a host ql_q4 to the device: *dev gets the host's shape, options,
 * offset and dynamic map (the struct itself stays in host memory) and device
 * copies of packed / absmax (or absmax_q and nested_absmax). dev->owns is 0 so
 * that ql_q4_free never touches it; release it with ql_cuda_q4_free. */
ql_status ql_cuda_q4_upload(const ql_q4 *host, ql_q4 *dev);
void ql_cuda_q4_free(ql_q4 *dev);

/* Quantizes the float32 row-major [rows, cols] matrix at dev_w (device
 * memory) into *dev_out, byte for byte what ql_q4_quantize gives on the host:
 * packed codes and absmax, or with double quantization absmax codes, nested
 * absmax, the offset and the dynamic map. *dev_out is laid out as
 * ql_cuda_q4_upload leaves it (buffers allocated with ql_cuda_malloc, shape
 * and offset in the struct; release with ql_cuda_q4_free). Enqueued on the
 * default stream; with double quantization it waits for the kernels, since
 * the offset comes back to the host struct. Bad arguments are QL_EINVAL. */
ql_status ql_cuda_q4_quantize(const float *dev_w, int64_t rows, int64_t cols, ql_qtype type,
                              int blocksize, int double_quant, ql_q4 *dev_out);

/* out[rows, cols] = dequantized W in out_dtype (QL_DT_BF16 or QL_DT_F32),
 * bit-identical to ql_q4_dequantize (then round-to-nearest-even for bf16).
 * dev_w's buffers and dev_out are device pointers; asynchronous on `stream`.
 * Any alignment works; 16-byte aligned output and 4-byte aligned packed data
 * take the vectorised path. */
ql_status ql_cuda_q4_dequantize(const ql_q4 *dev_w, ql_dtype out_dtype, void *dev_out,
                                void *stream);
/* The same with output rows ldo >= cols elements apart: W written into the
 * left columns of a wider matrix; the elements between rows are untouched. */
ql_status ql_cuda_q4_dequantize_ld(const ql_q4 *dev_w, ql_dtype out_dtype, void *dev_out,
                                   int64_t ldo, void *stream);
/* The backend's q4_keep_dequantized (kernels/backend.h): W in bf16 into a new
 * buffer at dev_w->dense, in the dequant path's layout for LoRA rank r
 * (kernels/cuda/q4_lora.cu; r = 0 without LoRA), rows and columns beside W
 * left for the ops to fill; a copy kept before is replaced. Asynchronous. */
ql_status ql_cuda_q4_keep_dequantized(ql_q4 *dev_w, int64_t r);
/* The backend's q4_lend_dequantized: W dequantized into dev_buf in that
 * layout and dev_w->dense pointed at it; dev_buf NULL gives it back. */
ql_status ql_cuda_q4_lend_dequantized(ql_q4 *dev_w, int64_t r, void *dev_buf);
/* The backend's dense_upload: the float32 host matrix rounded to bf16 into a
 * new buffer at dst->dense in that layout for LoRA rank r, packed NULL: a
 * weight the 4-bit ops read on the dequant path only. Waits until done. */
ql_status ql_cuda_dense_upload(const float *host_w, int64_t rows, int64_t cols, int64_t r,
                               ql_q4 *dst);

/* --- dense GEMM and the 4-bit linear paths (benchmarks, tests) ------------------ */
/* Row-major C[M,N] = alpha·op(A)·op(B) + beta·C, A and B bf16, fp32
 * accumulation, C bf16 or fp32 (c_dtype). A is stored [M,K] (trans_a = 0) or
 * [K,M] (trans_a = 1), B [K,N] (trans_b = 0) or [N,K] (trans_b = 1); lda, ldb,
 * ldc are row strides in elements. beta = 0 never reads C. cuBLASLt, with the
 * algorithm chosen once per shape and alignment and then reused, so repeated
 * calls give the same bits; a plain tiled kernel where cuBLASLt has no
 * algorithm for the shape. On the backend's stream (the default stream). */
ql_status ql_cuda_gemm_bf16(int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                            int64_t lda, int trans_a, const void *B, int64_t ldb, int trans_b,
                            float beta, void *C, ql_dtype c_dtype, int64_t ldc);
/* 1: every ql_cuda_gemm_bf16 takes the plain tiled kernel (tests). */
void ql_cuda_gemm_force_fallback(int on);
/* Calls since program start that took the plain tiled kernel because
 * cuBLASLt had no algorithm for them (not those forced above, nor K = 0):
 * slow on a GPU, so `qlora train` and bench_cuda_train report them. `first`
 * (n bytes; may be NULL) gets the first such call's shape, strides, output
 * type and alignment as text, "" when there was none. */
int64_t ql_cuda_gemm_fallbacks(char *first, size_t n);
/* out[e] = x[e] (bf16 bits) where the dropout mask d keeps element e, else 0;
 * d->scale is not applied (the products that read out take it as alpha).
 * d->on must be set. The LoRA input x' of kernels/cuda/q4_lora.cu. */
ql_status ql_cuda_dropout_bf16(const uint16_t *x, const ql_dropout *d, int64_t n, uint16_t *out);

/* Which implementation the cuda backend's q4_lora_fwd/bwd use:
 *   FUSED    NF4 decoded in the GEMM main loop, LoRA as extra K columns
 *            (kernels/cuda/q4_gemm.cu): W is read once, as 4 bits;
 *   DEQUANT  W dequantized whole to bf16, then one cuBLASLt GEMM with the
 *            LoRA term as extra K columns (its wgmma kernels);
 *   AUTO     (the default) FUSED below ql_cuda_q4_fused_max_tokens() tokens
 *            in the call, DEQUANT from there on: a rule on T alone, so the
 *            same micro-batch always takes the same path (resume is bit-exact).
 * Environment, read once: QL_CUDA_Q4_PATH=fused|dequant|auto,
 * QL_CUDA_Q4_FUSED_MAX_T=N (default 512; kernels/cuda_q4_path.c says why).
 * These live in kernels/cuda_q4_path.c, plain C in every build, so the
 * memory estimate follows the same rule. */
typedef enum ql_cuda_q4_path {
    QL_CUDA_Q4_FUSED = 0,
    QL_CUDA_Q4_DEQUANT_BLAS = 1,
    QL_CUDA_Q4_AUTO = 2
} ql_cuda_q4_path;
void ql_cuda_q4_set_path(ql_cuda_q4_path p);
ql_cuda_q4_path ql_cuda_q4_get_path(void);
int64_t ql_cuda_q4_fused_max_tokens(void);
void ql_cuda_q4_set_fused_max_tokens(int64_t t); /* tests, benchmarks; < 0: the environment's */
/* FUSED or DEQUANT_BLAS: what a call with T tokens runs. */
ql_cuda_q4_path ql_cuda_q4_path_for(int64_t T);
/* The LoRA products that read the dropout-masked input, x'·Aᵀ and Eᵀ·x'
 * (kernels/cuda/lora_skinny.cu), and how they split their reductions;
 * plain C in kernels/cuda_lora_plan.c so that the memory estimate sizes
 * their scratch by the same rule.
 *   _skinny_ok       whether the kernels take in (a multiple of 8) and rpad
 *                    (16..64); where not, q4_lora writes x' and uses cuBLASLt
 *   _skinny_scratch  bytes of partial sums a call with T tokens asks for:
 *                    at least what it needs, and growing with T
 *   _split           a reduction of len in steps of `step` beside `tiles`
 *                    independent tiles: the length of a split (a multiple
 *                    of step), their number in *splits */
#define QL_LORA_SKINNY_WARPS 8
#define QL_LORA_SKINNY_XA_ROWS 32 /* rows of x a block of x'·Aᵀ takes */
int ql_cuda_lora_skinny_ok(int64_t in, int64_t rpad);
size_t ql_cuda_lora_skinny_scratch(int64_t T, int64_t in, int64_t rpad);
int64_t ql_cuda_lora_split(int64_t tiles, int64_t len, int64_t step, int64_t *splits);
/* The kernels, d NULL or off: x' = x. A, E: bf16, rpad columns (rows of
 * A), padding zero; r ≤ rpad of them stored. On the backend's stream.
 *   ql_cuda_lora_xa:  xa[T, r] = alpha · x'·Aᵀ, A [rpad, in]
 *   ql_cuda_lora_dA:  dA[r, in] += alpha · Eᵀ·x', E [T, lde]
 * QL_EUNSUPPORTED unless ql_cuda_lora_skinny_ok(in, rpad) and x (and A)
 * are 16-byte aligned. Deterministic: the same shapes give the same bits. */
ql_status ql_cuda_lora_xa(const uint16_t *x, const uint16_t *A, int64_t rpad, int64_t r,
                          const ql_dropout *d, float alpha, int64_t T, int64_t in, float *xa);
ql_status ql_cuda_lora_dA(const uint16_t *E, int64_t lde, const uint16_t *x, const ql_dropout *d,
                          float alpha, int64_t r, int64_t rpad, int64_t T, int64_t in, float *dA);
/* The path the backend's last q4_lora_fwd/bwd call ran (-1 before any):
 * tests check the rule by it, since the two paths may give the same bits. */
int ql_cuda_q4_last_path(void);
void ql_cuda_q4_note_path(ql_cuda_q4_path p); /* kernels/cuda/q4_lora.cu, per call */
/* QL_EINVAL naming the variable when one of the two is set to something
 * else than the values above (they would otherwise mean the default). */
ql_status ql_cuda_q4_check_env(void);

/* Device time inside q4_lora_fwd/bwd by phase (kernels/cuda/q4_phases.cu),
 * for the benchmarks' profiles: with it on, every call brackets its phases
 * with CUDA events and waits for them at its end (so it slows what it times;
 * off, the default, it costs nothing). _enable zeroes the sums. */
enum {
    QL_Q4_PHASE_DEQUANT,   /* W to bf16 (the dequant path) */
    QL_Q4_PHASE_BASE_GEMM, /* y = [x | E]·[W | B]ᵀ, dx = [dy | E]·[W ; A]: fused or cuBLASLt */
    QL_Q4_PHASE_LORA_GEMM, /* x'·Aᵀ, dy·B, dA, dB (cuBLASLt, r columns) */
    QL_Q4_PHASE_CONVERT,   /* bf16 copies of A, B, xa and s·xa or s·dy·B */
    QL_Q4_PHASE_CONCAT,    /* x or dy copied beside E (the dequant path) */
    QL_Q4_PHASE_DROPOUT,   /* x ⊙ mask, and dx's masked LoRA term (dequant path) */
    QL_Q4_PHASES
};
void ql_cuda_q4_phases_enable(int on);
/* Milliseconds and calls per phase since the last _enable (either may be NULL). */
void ql_cuda_q4_phases_get(double ms[QL_Q4_PHASES], int64_t calls[QL_Q4_PHASES]);
const char *ql_cuda_q4_phase_name(int phase);

/* Frees the CUDA backend's cached scratch buffers and cuBLASLt state. */
void ql_cuda_release_cache(void);

/* --- timing (CUDA events) ----------------------------------------------------- */
typedef struct ql_cuda_timer ql_cuda_timer;
ql_status ql_cuda_timer_create(ql_cuda_timer **out);
void ql_cuda_timer_destroy(ql_cuda_timer *t);
/* Records the start event on `stream`. */
ql_status ql_cuda_timer_start(ql_cuda_timer *t, void *stream);
/* Records the stop event, waits for it and returns the elapsed milliseconds. */
ql_status ql_cuda_timer_stop(ql_cuda_timer *t, void *stream, float *ms);

#ifdef __cplusplus
}
#endif

#endif
