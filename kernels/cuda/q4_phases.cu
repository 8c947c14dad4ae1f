/* Device time inside q4_lora_fwd/bwd by phase (kernels/cuda_api.h): where a
 * 4-bit LoRA layer's time goes (the dequantize, the base product, the LoRA
 * products, the bf16 conversions, the copies beside E, dropout) is what
 * decides the next kernel to write, and the op profile of bench_cuda_train
 * sees each call only whole.
 *
 * Off (the default) a phase costs a branch. On, each phase is bracketed by
 * two CUDA events on the stream, and the call's end waits for the last one
 * and adds every phase's elapsed time: the events of one call are read
 * together, so the device runs the call's work back to back as it would
 * without them (a phase still includes any launch gap inside it). */
#include <string.h>

#include "kernels/cuda/cuda_ops.h"

#define MAX_MARKS 24

static int g_on;
static double g_ms[QL_Q4_PHASES];
static int64_t g_calls[QL_Q4_PHASES];
static cudaEvent_t g_ev[2 * MAX_MARKS];
static int g_made;             /* events created */
static int g_phase[MAX_MARKS]; /* the phase of mark i of the current call */
static int g_n;                /* marks recorded in the current call */

static const char *const g_names[QL_Q4_PHASES] = {"dequantize",  "base GEMM",  "LoRA GEMMs",
                                                  "bf16 copies", "concat x|E", "dropout"};

extern "C" const char *ql_cuda_q4_phase_name(int phase) {
    return phase >= 0 && phase < QL_Q4_PHASES ? g_names[phase] : "?";
}

extern "C" void ql_cuda_q4_phases_enable(int on) {
    g_on = on;
    g_n = 0;
    memset(g_ms, 0, sizeof g_ms);
    memset(g_calls, 0, sizeof g_calls);
}

extern "C" void ql_cuda_q4_phases_get(double ms[QL_Q4_PHASES], int64_t calls[QL_Q4_PHASES]) {
    for (int i = 0; i < QL_Q4_PHASES; i++) {
        if (ms) ms[i] = g_ms[i];
        if (calls) calls[i] = g_calls[i];
    }
}

ql_status ql_cuda_q4_phases_flush(void) {
    if (!g_on || g_n == 0) return QL_OK;
    const int n = g_n;
    g_n = 0;
    QL_CUDA_TRY(cudaEventSynchronize(g_ev[2 * n - 1]));
    for (int i = 0; i < n; i++) {
        float ms = 0;
        QL_CUDA_TRY(cudaEventElapsedTime(&ms, g_ev[2 * i], g_ev[2 * i + 1]));
        g_ms[g_phase[i]] += ms;
        g_calls[g_phase[i]]++;
    }
    return QL_OK;
}

ql_status ql_cuda_q4_phase_begin(int phase, int *mark) {
    *mark = -1;
    if (!g_on) return QL_OK;
    QL_ASSERT(phase >= 0 && phase < QL_Q4_PHASES);
    if (g_n == MAX_MARKS) QL_TRY(ql_cuda_q4_phases_flush());
    for (; g_made < 2 * MAX_MARKS; g_made++) QL_CUDA_TRY(cudaEventCreate(&g_ev[g_made]));
    *mark = g_n++;
    g_phase[*mark] = phase;
    QL_CUDA_TRY(cudaEventRecord(g_ev[2 * *mark], ql_cuda_stream()));
    return QL_OK;
}

ql_status ql_cuda_q4_phase_end(int mark) {
    if (mark < 0) return QL_OK;
    QL_CUDA_TRY(cudaEventRecord(g_ev[2 * mark + 1], ql_cuda_stream()));
    return QL_OK;
}
