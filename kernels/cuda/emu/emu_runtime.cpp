/* The CPU emulator's engine (kernels/cuda/emu/README.md): kernel launches on
 * fibers, the block and warp barriers that __syncthreads, shuffles, ldmatrix
 * and mma.sync need, and the runtime API calls kernels/cuda/ makes.
 *
 * Every thread of a block is a fiber on the calling host thread; the
 * block's fibers run round-robin, each until it reaches a barrier or ends, and
 * blocks run one after another. A kernel bug that a GPU would turn into a
 * hang or undefined behaviour stops the program here with a message naming
 * the kernel, the block and the source line: threads of one block waiting at
 * different __syncthreads, a warp collective some lanes of the warp never
 * reach, a misaligned ldmatrix row. */
#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_runtime.h"
#include "emu_counts.h"

thread_local ql_emu_thread *ql_emu_cur;
thread_local ql_emu_block ql_emu_blk;

/* Hopper limits a launch must respect (CUDA C Programming Guide, "Features
 * and Technical Specifications", compute capability 9.0). */
enum {
    MAX_THREADS = 1024,
    MAX_BLOCK_Z = 64,
    MAX_GRID_YZ = 65535,
    SMEM_DEFAULT = 48 * 1024,
    SMEM_OPTIN = 227 * 1024,
    STACK_BYTES = 256 * 1024,
};

[[noreturn]] static void emu_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "CUDA emulator: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

/* --- counters (emu_counts.h) ------------------------------------------------------- */

namespace {
std::atomic<long long> g_launches, g_matmuls, g_host_waits, g_allocs_made, g_frees;

bool trace_waits() {
    static const int on = [] {
        const char *e = getenv("QL_EMU_TRACE_WAITS");
        return e && *e && strcmp(e, "0") != 0;
    }();
    return on;
}

void count_host_wait(const char *what) {
    g_host_waits++;
    if (!trace_waits()) return;
    fprintf(stderr, "CUDA emulator: host wait: %s, from\n", what);
    void *frames[8];
    const int n = backtrace(frames, 8);
    backtrace_symbols_fd(frames + 1, n - 1, 2);
}
} // namespace

extern "C" void ql_emu_get_counts(ql_emu_counts *out) {
    out->launches = g_launches;
    out->matmuls = g_matmuls;
    out->host_waits = g_host_waits;
    out->allocs = g_allocs_made;
    out->frees = g_frees;
}

void ql_emu_count_matmul(void) { g_matmuls++; }

/* --- fibers and barriers ------------------------------------------------------------ */

extern "C" void ql_emu_fiber_entry(void);

namespace {

/* A fiber's saved context. On x86-64 a switch is about twenty instructions (the
 * callee-saved registers, the FP control words and the stack pointer);
 * swapcontext would also save the signal mask, a system call per switch,
 * and switches are most of an emulated kernel's time. Elsewhere: ucontext. */
#if defined(__x86_64__)
struct fiber_ctx {
    void *sp;
};
} // namespace
extern "C" void ql_emu_ctx_switch(void **save_sp, void *new_sp);
extern "C" void ql_emu_ctx_entry(void);
asm(R"(
    .text
    .globl ql_emu_ctx_switch
    .type ql_emu_ctx_switch,@function
ql_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ql_emu_ctx_switch,.-ql_emu_ctx_switch

    .globl ql_emu_ctx_entry
    .type ql_emu_ctx_entry,@function
ql_emu_ctx_entry:
    andq $-16, %rsp
    call ql_emu_fiber_entry
    ud2
    .size ql_emu_ctx_entry,.-ql_emu_ctx_entry
)");
namespace {

void ctx_init(fiber_ctx &c, void *stack, size_t bytes) {
    /* What ql_emu_ctx_switch pops: control words, r15..rbp, then the
     * address it returns to. */
    uint64_t *top = (uint64_t *)((char *)stack + bytes) - 2;
    uint64_t *sp = top - 8;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = (uint64_t)mxcsr | (uint64_t)fpucw << 32;
    for (int i = 1; i <= 6; i++) sp[i] = 0;
    sp[7] = (uint64_t)(uintptr_t)ql_emu_ctx_entry;
    c.sp = sp;
}
void ctx_switch(fiber_ctx &from, fiber_ctx &to) { ql_emu_ctx_switch(&from.sp, to.sp); }
#else
struct fiber_ctx {
    ucontext_t uc;
};
void ctx_init(fiber_ctx &c, void *stack, size_t bytes) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, ql_emu_fiber_entry, 0);
}
void ctx_switch(fiber_ctx &from, fiber_ctx &to) { swapcontext(&from.uc, &to.uc); }
#endif

struct barrier {
    int arrived = 0;
    uint64_t gen = 0;
    const char *file = nullptr;
    int line = 0;
};

struct warp_state {
    int size = 0;  /* lanes that exist (the last warp of a block may be short) */
    int alive = 0; /* lanes that have not returned */
    barrier bar;
    /* Two of each, alternating between consecutive collectives: a lane that
     * runs ahead into the next one cannot overwrite what slower lanes still
     * read, so one barrier per collective is enough. */
    uint64_t slot[2][32];
    const void *ptr[2][32];
    uint32_t frag_a[2][32][4], frag_b[2][32][2];
    float frag_c[2][32][4];
};

struct fiber {
    fiber_ctx ctx;
    ql_emu_thread t;
    int done;
};

struct grid_run {
    const char *kernel;
    ql_emu_body_fn body;
    void *body_ctx;
    std::vector<fiber> fibers;
    std::vector<warp_state> warps;
    fiber_ctx sched;
    int cur = 0;
    int alive = 0;
    barrier block_bar;
    uint64_t progress = 0;
};

thread_local grid_run *g_run;
thread_local std::vector<void *> g_stacks;
thread_local cudaError_t g_last_error = cudaSuccess;

void *stack_for(size_t i) {
    while (g_stacks.size() <= i) {
        /* The lowest page is a guard: a kernel that overflows its stack
         * faults instead of corrupting its neighbour. */
        void *p = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) emu_fatal("cannot map a fiber stack");
        mprotect(p, (size_t)sysconf(_SC_PAGESIZE), PROT_NONE);
        g_stacks.push_back(p);
    }
    return g_stacks[i];
}

void yield() {
    grid_run *r = g_run;
    ctx_switch(r->fibers[(size_t)r->cur].ctx, r->sched);
}

const char *where() {
    static thread_local char buf[160];
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", g_run->kernel,
             blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    return buf;
}

/* Waits until `count` participants have arrived at b; all of them must call
 * from the same source line, or the block is divergent. True for the one
 * that arrived last: it runs on before any other, so it can finish the
 * collective's work for all of them. */
bool barrier_wait(barrier &b, int count, const char *what, const char *file, int line) {
    if (b.arrived == 0) {
        b.file = file;
        b.line = line;
    } else if (b.line != line || strcmp(b.file, file) != 0) {
        emu_fatal("%s: %s at %s:%d while others of the same %s wait at %s:%d (divergent "
                  "barrier: undefined behaviour on a GPU)",
                  where(), what, file, line, what[0] == '_' ? "block" : "warp", b.file, b.line);
    }
    g_run->progress++;
    const uint64_t my = b.gen;
    if (++b.arrived == count) {
        b.arrived = 0;
        b.gen++;
        return true;
    }
    while (b.gen == my) yield();
    return false;
}

/* A participant left: a barrier the others already wait at may now be full. */
void barrier_leave(barrier &b, int count) {
    if (b.arrived > 0 && b.arrived == count) {
        b.arrived = 0;
        b.gen++;
    }
}

void fiber_main() {
    grid_run *r = g_run;
    r->body(r->body_ctx);
    fiber &f = r->fibers[(size_t)r->cur];
    /* Lanes already waiting at a warp collective this lane never reached:
     * without this the barrier would shrink to the survivors and let them
     * through, so the bug would only show on the launches that run this
     * lane first. */
    const barrier &wb = r->warps[(size_t)f.t.warp].bar;
    if (wb.arrived > 0)
        emu_fatal("%s: returned while %d lanes of its warp wait at the warp collective at %s:%d",
                  where(), wb.arrived, wb.file, wb.line);
    f.done = 1;
    r->progress++;
    r->alive--;
    barrier_leave(r->block_bar, r->alive);
    warp_state &w = r->warps[(size_t)f.t.warp];
    w.alive--;
    barrier_leave(w.bar, w.alive);
}

warp_state &my_warp_full(const char *what, const char *file, int line) {
    warp_state &w = g_run->warps[(size_t)ql_emu_cur->warp];
    if (w.size != 32)
        emu_fatal("%s: %s at %s:%d in a warp of %d lanes (the instruction needs 32)", where(), what,
                  file, line, w.size);
    if (w.alive != 32)
        emu_fatal("%s: %s at %s:%d after %d lanes of the warp returned (full-warp collective)",
                  where(), what, file, line, 32 - w.alive);
    return w;
}

/* Every block runs its threads in a fresh pseudo-random order (a fixed seed,
 * so a failing run repeats). A missing barrier between one thread's write
 * and another's read then gives different results from one launch to the
 * next, which the GPU tests' determinism checks (every op run twice, same
 * bits demanded) turn into a failure. A fixed alternation would not do: an
 * op that launches a kernel twice would repeat the same pair of orders. */
thread_local uint64_t g_order_rng = 0x9e3779b97f4a7c15ull;

uint64_t order_next() {
    uint64_t x = g_order_rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_order_rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

void run_block(grid_run &r, dim3 block) {
    const int n = (int)(block.x * block.y * block.z);
    r.fibers.assign((size_t)n, fiber());
    r.warps.assign((size_t)((n + 31) / 32), warp_state());
    r.alive = n;
    r.block_bar = barrier();
    for (int i = 0; i < n; i++) {
        fiber &f = r.fibers[(size_t)i];
        f.t.tid.x = (unsigned)i % block.x;
        f.t.tid.y = ((unsigned)i / block.x) % block.y;
        f.t.tid.z = (unsigned)i / (block.x * block.y);
        f.t.lane = i % 32;
        f.t.warp = i / 32;
        warp_state &w = r.warps[(size_t)f.t.warp];
        w.size++;
        w.alive++;
        ctx_init(f.ctx, stack_for((size_t)i), STACK_BYTES);
    }
    std::vector<int> order((size_t)n);
    for (int i = 0; i < n; i++) order[(size_t)i] = i;
    for (int i = n - 1; i > 0; i--) {
        const int j = (int)(order_next() % (uint64_t)(i + 1));
        const int t = order[(size_t)i];
        order[(size_t)i] = order[(size_t)j];
        order[(size_t)j] = t;
    }
    int remaining = n;
    while (remaining > 0) {
        const uint64_t before = r.progress;
        remaining = 0;
        for (int k = 0; k < n; k++) {
            const int i = order[(size_t)k];
            fiber &f = r.fibers[(size_t)i];
            if (f.done) continue;
            r.cur = i;
            ql_emu_cur = &f.t;
            ctx_switch(r.sched, f.ctx);
            remaining += !f.done;
        }
        if (remaining > 0 && r.progress == before) {
            const barrier &b = r.block_bar;
            emu_fatal("kernel %s, block (%u,%u,%u): %d threads wait forever (block barrier at "
                      "%s:%d has %d of %d)",
                      r.kernel, blockIdx.x, blockIdx.y, blockIdx.z, remaining,
                      b.file ? b.file : "?", b.line, b.arrived, r.alive);
        }
    }
    ql_emu_cur = nullptr;
}

std::mutex g_attr_mu;
std::map<const void *, int> g_smem_optin;

} // namespace

/* A fiber starts here and ends by switching back to the scheduler for good. */
extern "C" void ql_emu_fiber_entry(void) {
    fiber_main();
    grid_run *r = g_run;
    ctx_switch(r->fibers[(size_t)r->cur].ctx, r->sched);
    abort(); /* a finished fiber is never resumed */
}

void ql_emu_syncthreads(const char *file, int line) {
    barrier_wait(g_run->block_bar, g_run->alive, "__syncthreads", file, line);
}

void ql_emu_check_mask(const char *file, int line, unsigned mask) {
    if (mask != 0xffffffffu)
        emu_fatal("%s: shuffle at %s:%d with mask %#x: only full-warp masks are emulated", where(),
                  file, line, mask);
}

void ql_emu_warp_exchange(const char *file, int line, uint64_t mine, int src, uint64_t *out) {
    warp_state &w = my_warp_full("__shfl_xor_sync", file, line);
    const int lane = ql_emu_cur->lane, buf = ql_emu_cur->coll++ & 1;
    w.slot[buf][lane] = mine;
    barrier_wait(w.bar, w.alive, "warp shuffle", file, line);
    *out = src >= 0 && src < 32 ? w.slot[buf][src] : mine;
}

static uint16_t ld_u16(const void *row, int elem) {
    uint16_t v;
    memcpy(&v, (const char *)row + 2 * elem, 2);
    return v;
}

void ql_emu_ldmatrix_x4(const char *file, int line, uint32_t r[4], const void *row_addr,
                        int trans) {
    warp_state &w = my_warp_full("ldmatrix", file, line);
    const int lane = ql_emu_cur->lane, buf = ql_emu_cur->coll++ & 1;
    if ((uintptr_t)row_addr % 16)
        emu_fatal("%s: ldmatrix at %s:%d: row address %p is not 16-byte aligned", where(), file,
                  line, row_addr);
    w.ptr[buf][lane] = row_addr;
    barrier_wait(w.bar, w.alive, "ldmatrix", file, line);
    const void *const *ptr = w.ptr[buf];
    /* Matrix j's rows come from lanes 8j..8j+7. Without .trans lane l gets
     * row l/4, elements 2(l%4) and 2(l%4)+1; with .trans it gets the
     * transpose's, i.e. column l/4 of rows 2(l%4) and 2(l%4)+1. */
    for (int j = 0; j < 4; j++) {
        uint32_t lo, hi;
        if (!trans) {
            const void *row = ptr[8 * j + lane / 4];
            lo = ld_u16(row, 2 * (lane % 4));
            hi = ld_u16(row, 2 * (lane % 4) + 1);
        } else {
            lo = ld_u16(ptr[8 * j + 2 * (lane % 4)], lane / 4);
            hi = ld_u16(ptr[8 * j + 2 * (lane % 4) + 1], lane / 4);
        }
        r[j] = lo | hi << 16;
    }
}

static float bf16_lo(uint32_t v) { return __bfloat162float(__nv_bfloat16{(unsigned short)v}); }
static float bf16_hi(uint32_t v) {
    return __bfloat162float(__nv_bfloat16{(unsigned short)(v >> 16)});
}

void ql_emu_mma_bf16_16816(const char *file, int line, float d[4], const uint32_t a[4], uint32_t b0,
                           uint32_t b1) {
    warp_state &w = my_warp_full("mma.sync", file, line);
    const int lane = ql_emu_cur->lane, buf = ql_emu_cur->coll++ & 1;
    memcpy(w.frag_a[buf][lane], a, sizeof w.frag_a[buf][lane]);
    w.frag_b[buf][lane][0] = b0;
    w.frag_b[buf][lane][1] = b1;
    memcpy(w.frag_c[buf][lane], d, sizeof w.frag_c[buf][lane]);
    if (barrier_wait(w.bar, w.alive, "mma.sync", file, line)) {
        /* The last lane in computes the warp's product. Rebuild A (16x16)
         * and B (16x8) from the fragments (PTX ISA, "Matrix fragments for
         * mma.m16n8k16" with .bf16): lane l, g = l/4, c = l%4, holds A rows
         * g and g+8 at columns 2c,2c+1 and 2c+8,2c+9, B rows 2c,2c+1 and
         * 2c+8,2c+9 at column g, and C rows g and g+8 at columns 2c,2c+1. */
        float A[16][16], B[16][8];
        for (int l = 0; l < 32; l++) {
            const int g = l / 4, c = l % 4;
            const uint32_t *fa = w.frag_a[buf][l], *fb = w.frag_b[buf][l];
            A[g][2 * c] = bf16_lo(fa[0]), A[g][2 * c + 1] = bf16_hi(fa[0]);
            A[g + 8][2 * c] = bf16_lo(fa[1]), A[g + 8][2 * c + 1] = bf16_hi(fa[1]);
            A[g][2 * c + 8] = bf16_lo(fa[2]), A[g][2 * c + 9] = bf16_hi(fa[2]);
            A[g + 8][2 * c + 8] = bf16_lo(fa[3]), A[g + 8][2 * c + 9] = bf16_hi(fa[3]);
            B[2 * c][g] = bf16_lo(fb[0]), B[2 * c + 1][g] = bf16_hi(fb[0]);
            B[2 * c + 8][g] = bf16_lo(fb[1]), B[2 * c + 9][g] = bf16_hi(fb[1]);
        }
        /* Products of bf16 values are exact in double; one rounding. */
        for (int l = 0; l < 32; l++) {
            const int g = l / 4, c = l % 4;
            for (int i = 0; i < 4; i++) {
                const int row = g + 8 * (i / 2), col = 2 * c + (i % 2);
                double s = w.frag_c[buf][l][i];
                for (int k = 0; k < 16; k++) s += (double)A[row][k] * (double)B[k][col];
                w.frag_c[buf][l][i] = (float)s;
            }
        }
    }
    memcpy(d, w.frag_c[buf][lane], sizeof w.frag_c[buf][lane]);
}

cudaError_t ql_emu_func_set_smem(const void *kernel, int attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > SMEM_OPTIN)
        return cudaErrorInvalidValue;
    std::lock_guard<std::mutex> lk(g_attr_mu);
    g_smem_optin[kernel] = value;
    return cudaSuccess;
}

static int launch_ok(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem) {
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    const char *why = nullptr;
    char buf[200];
    if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z) {
        why = "a zero grid or block dimension";
    } else if (threads > MAX_THREADS || block.z > MAX_BLOCK_Z) {
        snprintf(buf, sizeof buf, "%llu threads per block (at most %d)", threads, MAX_THREADS);
        why = buf;
    } else if (grid.y > MAX_GRID_YZ || grid.z > MAX_GRID_YZ || grid.x > 0x7fffffffu) {
        snprintf(buf, sizeof buf, "grid (%u,%u,%u) beyond (2^31-1, 65535, 65535)", grid.x, grid.y,
                 grid.z);
        why = buf;
    } else if (smem > SMEM_DEFAULT) {
        int optin = 0;
        {
            std::lock_guard<std::mutex> lk(g_attr_mu);
            auto it = g_smem_optin.find(kernel);
            if (it != g_smem_optin.end()) optin = it->second;
        }
        if (smem > (size_t)optin) {
            snprintf(buf, sizeof buf,
                     "%zu bytes of dynamic shared memory, over 48 KiB without "
                     "cudaFuncAttributeMaxDynamicSharedMemorySize >= that (set: %d)",
                     smem, optin);
            why = buf;
        }
    }
    if (!why) return 1;
    fprintf(stderr, "CUDA emulator: launch of %s refused: %s\n", name, why);
    g_last_error = cudaErrorInvalidConfiguration;
    return 0;
}

void ql_emu_run_grid(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem,
                     ql_emu_body_fn body, void *ctx) {
    if (!launch_ok(name, kernel, grid, block, smem)) return;
    g_launches++;
    ql_emu_device_scope open;
    if (g_run) emu_fatal("kernel %s launched from inside kernel %s", name, g_run->kernel);
    grid_run r;
    r.kernel = name;
    r.body = body;
    r.body_ctx = ctx;
    std::vector<unsigned char> dyn(smem + 16);
    unsigned char *dyn_base = dyn.data() + (16 - (uintptr_t)dyn.data() % 16) % 16;
    g_run = &r;
    ql_emu_blk.dim = block;
    ql_emu_blk.grid = grid;
    ql_emu_blk.dyn_smem = smem ? dyn_base : nullptr;
    /* Blocks run one after another, in a fresh pseudo-random order each
     * launch: a GPU runs them in any order and at once, so a kernel whose
     * result depends on the order (a block reading what another writes)
     * gives other bits on the next launch, which the GPU tests' repeated
     * runs catch. */
    const size_t nb = (size_t)grid.x * grid.y * grid.z;
    std::vector<size_t> blocks(nb);
    for (size_t i = 0; i < nb; i++) blocks[i] = i;
    for (size_t i = nb; i-- > 1;) std::swap(blocks[i], blocks[order_next() % (i + 1)]);
    for (size_t b : blocks) {
        ql_emu_blk.idx = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                               (unsigned)(b / ((size_t)grid.x * grid.y))};
        if (smem) memset(dyn_base, 0xFF, smem);
        run_block(r, block);
    }
    g_run = nullptr;
}

/* --- runtime API ----------------------------------------------------------------------- */

namespace {
/* Device allocations, so that copies can check which side is the device and
 * the emulated NCCL which device a buffer belongs to. */
struct alloc_rec {
    size_t bytes;
    int device;
    size_t mapped; /* bytes of the mapping: bytes rounded up to whole pages */
};
std::mutex g_mem_mu;
std::map<uintptr_t, alloc_rec> g_allocs;
std::map<int, size_t> g_alloc_bytes; /* per device */

/* The host guard (cuda_runtime_api.h). Every allocation is PROT_NONE except
 * while an emulator call of this thread that opened it runs. Opening is
 * lazy, so a call costs a few system calls, not two per allocation: inside
 * an open scope (t_depth > 0) the first touch of a closed allocation faults,
 * the handler opens that allocation and notes it, the access is retried; the
 * scope's end closes what it opened. A fault with no scope open is host code
 * touching device memory. The handler reads g_allocs without its lock: CUDA
 * calls come from one thread per process in this project (a concurrent
 * cudaMalloc elsewhere could race with it). */
int g_guard = -1; /* -1: QL_EMU_HOST_GUARD not read yet */
/* volatile: the fault handler reads and writes them between the
 * instructions of a memmove the compiler believes touches nothing else. */
thread_local volatile int t_depth = 0;
enum { MAX_OPENED = 1024 };
thread_local volatile uintptr_t t_opened[MAX_OPENED];
thread_local volatile int t_n_opened = 0;
thread_local volatile bool t_opened_overflow = false;

bool guard_on() {
    if (g_guard < 0) {
        const char *e = getenv("QL_EMU_HOST_GUARD");
        g_guard = !(e && strcmp(e, "0") == 0);
    }
    return g_guard == 1;
}

/* The allocation holding address a, or g_allocs.end() (caller holds the
 * lock, or is the fault handler). */
std::map<uintptr_t, alloc_rec>::iterator alloc_at(uintptr_t a) {
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return g_allocs.end();
    --it;
    return a - it->first < it->second.mapped ? it : g_allocs.end();
}

/* Opens [base, base + len) for this thread's scope and notes it. */
void open_noted(uintptr_t base, size_t len) {
    if (mprotect((void *)base, len, PROT_READ | PROT_WRITE) != 0) {
        /* Left closed, the access would fault again forever. */
        static const char msg[] = "CUDA emulator: cannot open a device allocation (mprotect)\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
    }
    if (t_n_opened < MAX_OPENED) {
        t_opened[t_n_opened] = base;
        t_n_opened = t_n_opened + 1;
    } else {
        t_opened_overflow = true;
    }
}

struct sigaction g_old_segv;
void on_segv(int sig, siginfo_t *si, void *uc) {
    const uintptr_t a = (uintptr_t)si->si_addr;
    auto it = alloc_at(a);
    if (it != g_allocs.end()) {
        if (t_depth > 0) {
            open_noted(it->first, it->second.mapped);
            return; /* the access runs again, now allowed */
        }
        char msg[256];
        int n = snprintf(msg, sizeof msg,
                         "CUDA emulator: host code touched device memory at %p, byte %zu of a "
                         "%zu-byte cudaMalloc buffer (a GPU would fault here; run under gdb "
                         "for the line)\n",
                         si->si_addr, (size_t)(a - it->first), it->second.bytes);
        if (n > 0) (void)!write(2, msg, (size_t)n);
        abort();
    }
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    (void)sig, (void)uc; /* returning re-runs the access under the old action */
}

/* Ours, again if a library (MPI) replaced it since: called per cudaMalloc. */
void install_segv() {
    struct sigaction cur;
    sigaction(SIGSEGV, nullptr, &cur);
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
}

/* The device holding [p, p + bytes) in one allocation, or -1. */
int device_of(const void *p, size_t bytes) {
    std::lock_guard<std::mutex> lk(g_mem_mu);
    const uintptr_t u = (uintptr_t)p;
    auto it = g_allocs.upper_bound(u);
    if (it == g_allocs.begin()) return -1;
    --it;
    const bool inside = u >= it->first && u - it->first <= it->second.bytes &&
                        bytes <= it->second.bytes - (u - it->first);
    return inside ? it->second.device : -1;
}

bool on_device(const void *p, size_t bytes) { return device_of(p, bytes) >= 0; }

size_t total_mem() {
    /* An H200's 141 GB unless QL_EMU_DEVICE_GB says otherwise (to test
     * out-of-memory paths). */
    const char *e = getenv("QL_EMU_DEVICE_GB");
    const double gb = e && *e ? atof(e) : 141.0;
    return (size_t)(gb * 1e9);
}

/* The calling thread's current device, as CUDA keeps it. */
thread_local int g_device = 0;
} // namespace

/* A result that the emulated NCCL computed at enqueue time but that lands
 * in device memory only when the program synchronises with its stream (see
 * ql_emu_stream_defer): code that reads it without the event wait or
 * synchronisation a GPU needs reads the old bytes, as it might on a GPU. */
struct emu_deferred {
    char *dst;
    std::vector<char> bytes;
    uint64_t seq; /* the stream's count of deferred writes before this one */
    /* On a GPU the operation reads its input and writes dst at some time
     * before the wait that lands it: what dst held and what the input was
     * at the enqueue must still be there when it lands, or other work
     * touched them meanwhile without waiting (a race). */
    std::vector<char> dst_then, in_then;
    const char *in;
    const char *what;
};

struct CUstream_st {
    unsigned flags;
    int device;
    int pending;                       /* cudaStreamQuery answers cudaErrorNotReady once */
    std::deque<emu_deferred> deferred; /* not landed yet, oldest first */
    uint64_t posted;                   /* deferred writes ever queued */
};

namespace {
std::mutex g_stream_mu;
std::map<cudaStream_t, int> g_streams; /* live streams (value unused) */

/* The first byte at which [p, p + then.size()) no longer holds `then`, or -1. */
long changed_at(const char *p, const std::vector<char> &then) {
    if (!memcmp(p, then.data(), then.size())) return -1;
    size_t i = 0;
    while (p[i] == then[i]) i++;
    return (long)i;
}

/* d's bytes reach device memory (g_stream_mu held, device scope open),
 * after checking that nothing else touched its input or output since the
 * enqueue. */
void land_one(cudaStream_t s, emu_deferred &d) {
    const long in_at = d.in ? changed_at(d.in, d.in_then) : -1;
    const long out_at = d.dst ? changed_at(d.dst, d.dst_then) : -1;
    if (in_at >= 0 || out_at >= 0)
        emu_fatal("%s on stream %p: byte %ld of its %zu-byte %s was changed after the operation "
                  "was enqueued and before the program waited for the stream. On a GPU the "
                  "operation %s those bytes at some time in between: a race. Order the change "
                  "after the operation (cudaStreamWaitEvent on an event recorded after it, or a "
                  "synchronization) or put it on the same stream.",
                  d.what, (void *)s, in_at >= 0 ? in_at : out_at,
                  in_at >= 0 ? d.in_then.size() : d.dst_then.size(),
                  in_at >= 0 ? "input" : "output", in_at >= 0 ? "reads" : "writes");
    if (d.dst) memcpy(d.dst, d.bytes.data(), d.bytes.size());
}

/* Lands s's deferred writes up to number `upto` (g_stream_mu held). */
void land(cudaStream_t s, uint64_t upto) {
    if (s->deferred.empty() || s->deferred.front().seq >= upto) return;
    ql_emu_device_scope open;
    while (!s->deferred.empty() && s->deferred.front().seq < upto) {
        land_one(s, s->deferred.front());
        s->deferred.pop_front();
    }
}

bool overlaps(const emu_deferred &d, const char *lo, const char *hi) {
    return d.dst < hi && lo < d.dst + d.bytes.size();
}

/* Whether d reads any of [lo, hi). */
bool reads(const emu_deferred &d, const char *lo, const char *hi) {
    return d.in && d.in < hi && lo < d.in + d.in_then.size();
}
} // namespace

extern "C" {

int ql_emu_device_of(const void *p, size_t bytes) { return device_of(p, bytes); }

int ql_emu_stream_valid(cudaStream_t s) {
    if (!s) return 1;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    return g_streams.count(s) ? 1 : 0;
}

void ql_emu_stream_mark_pending(cudaStream_t s) {
    if (!s) return;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (g_streams.count(s)) s->pending = 1;
}

void ql_emu_stream_defer(cudaStream_t s, const char *what, void *dst, const void *src, size_t bytes,
                         const void *in, size_t in_bytes) {
    if (!bytes && !in_bytes) return;
    ql_emu_device_scope open;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (!s || !g_streams.count(s)) {
        if (bytes) memcpy(dst, src, bytes);
        return;
    }
    const char *d = (const char *)dst, *i = in_bytes ? (const char *)in : nullptr;
    s->deferred.push_back(emu_deferred{
        (char *)dst, std::vector<char>((const char *)src, (const char *)src + bytes), s->posted,
        std::vector<char>(d, d + bytes), std::vector<char>(i, i ? i + in_bytes : i), i, what});
    s->posted++;
}

void ql_emu_stream_land(cudaStream_t s) {
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (!s) { /* the legacy stream waits for every blocking stream's work */
        for (auto &kv : g_streams)
            if (!(kv.first->flags & cudaStreamNonBlocking)) land(kv.first, kv.first->posted);
        return;
    }
    if (g_streams.count(s)) land(s, s->posted);
}

/* Only the writes that touch [p, p + bytes), and before each the earlier
 * ones that overlap it (so bytes land in stream order): the others stay
 * pending, so a later part's collective does not make earlier parts
 * visible without their own wait. */
void ql_emu_stream_land_touching(cudaStream_t s, const void *p, size_t bytes) {
    if (!s || !bytes) return;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (!g_streams.count(s)) return;
    std::vector<char> pick(s->deferred.size(), 0);
    const char *lo = (const char *)p, *hi = lo + bytes;
    for (size_t i = 0; i < s->deferred.size(); i++) pick[i] = overlaps(s->deferred[i], lo, hi);
    /* Later picks pull in the earlier operations that write or read what
     * they write: in stream order those came first. */
    for (size_t i = s->deferred.size(); i-- > 0;)
        if (pick[i]) {
            const emu_deferred &d = s->deferred[i];
            const char *dlo = d.dst, *dhi = d.dst + d.bytes.size();
            for (size_t k = 0; k < i; k++)
                if (!pick[k] && d.dst &&
                    (overlaps(s->deferred[k], dlo, dhi) || reads(s->deferred[k], dlo, dhi)))
                    pick[k] = 1;
        }
    std::deque<emu_deferred> keep;
    ql_emu_device_scope open;
    for (size_t i = 0; i < s->deferred.size(); i++) {
        emu_deferred &d = s->deferred[i];
        if (pick[i])
            land_one(s, d);
        else
            keep.push_back(std::move(d));
    }
    s->deferred.swap(keep);
}

cudaError_t cudaGetDeviceCount(int *n) {
    const char *e = getenv("QL_EMU_DEVICES");
    *n = e && *e ? atoi(e) : 1;
    return *n > 0 ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    int n = 0;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "qlora CUDA emulator (CPU)");
    p->totalGlobalMem = total_mem();
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->l2CacheSize = 50 * 1024 * 1024;
    p->sharedMemPerBlockOptin = SMEM_OPTIN;
    p->maxThreadsPerBlock = MAX_THREADS;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    int n = 0;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return cudaErrorInvalidDevice;
    g_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device) return cudaErrorInvalidValue;
    *device = g_device;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) {
    *v = 0;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 0;
    return cudaSuccess;
}

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulator: see stderr)";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument (emulator: see stderr)";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    default: return "emulated CUDA error";
    }
}

cudaError_t cudaGetLastError(void) {
    const cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}

void ql_emu_device_open(void) {
    if (guard_on()) t_depth = t_depth + 1;
}

void ql_emu_device_close(void) {
    if (!guard_on()) return;
    t_depth = t_depth - 1;
    if (t_depth > 0) return;
    std::lock_guard<std::mutex> lk(g_mem_mu);
    if (t_opened_overflow) { /* more than MAX_OPENED: close them all */
        for (auto &kv : g_allocs) mprotect((void *)kv.first, kv.second.mapped, PROT_NONE);
    } else {
        /* A noted allocation freed meanwhile is skipped (its pages may be
         * another mapping's now). */
        for (int i = 0; i < t_n_opened; i++) {
            const uintptr_t base = t_opened[i];
            auto it = g_allocs.find(base);
            if (it != g_allocs.end()) mprotect((void *)it->first, it->second.mapped, PROT_NONE);
        }
    }
    t_n_opened = 0;
    t_opened_overflow = false;
}

void ql_emu_device_open_range(const void *p, size_t bytes) {
    if (!guard_on() || t_depth == 0 || !bytes) return;
    std::lock_guard<std::mutex> lk(g_mem_mu);
    const uintptr_t lo = (uintptr_t)p, hi = lo + bytes;
    for (auto it = alloc_at(lo); it != g_allocs.end() && it->first < hi; ++it)
        open_noted(it->first, it->second.mapped);
}

static void land_all(void); /* every stream's deferred writes */

/* QL_EMU_FAIL_MALLOC=N: the process's N-th cudaMalloc (from 1) fails as
 * out of memory, whatever its size, to test the out-of-memory paths at a
 * chosen point; QL_EMU_TRACE_MALLOC=1 prints every call's number and size
 * to stderr, which finds N. */
static long long malloc_fault_at(void) {
    static const long long n = [] {
        const char *e = getenv("QL_EMU_FAIL_MALLOC");
        return e && *e ? atoll(e) : 0LL;
    }();
    return n;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    *p = nullptr;
    std::lock_guard<std::mutex> lk(g_mem_mu);
    static long long calls = 0;
    static const bool trace = [] {
        const char *e = getenv("QL_EMU_TRACE_MALLOC");
        return e && *e == '1';
    }();
    ++calls;
    if (trace) fprintf(stderr, "emulator: cudaMalloc #%lld: %zu bytes\n", calls, bytes);
    if (calls == malloc_fault_at()) return cudaErrorMemoryAllocation;
    size_t &used = g_alloc_bytes[g_device];
    if (used + bytes > total_mem()) return cudaErrorMemoryAllocation;
    /* Whole pages of its own (page-aligned, so 256-byte aligned as
     * cudaMalloc's), so the host guard can close it; filled with 0xFF (NaN
     * in bf16 and fp32) since device memory starts with whatever was there. */
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t mapped = (bytes + page - 1) / page * page + (bytes == 0 ? page : 0);
    void *q = mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (q == MAP_FAILED) return cudaErrorMemoryAllocation;
    memset(q, 0xFF, bytes);
    if (guard_on()) {
        install_segv();
        if (mprotect(q, mapped, PROT_NONE) != 0)
            emu_fatal("mprotect of a device allocation failed: %s", strerror(errno));
    }
    g_allocs[(uintptr_t)q] = alloc_rec{bytes, g_device, mapped};
    used += bytes;
    g_allocs_made++;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    /* CUDA's cudaFree waits for the device: pending results land before
     * the memory goes (none may land in freed memory later). */
    count_host_wait("cudaFree");
    land_all();
    std::lock_guard<std::mutex> lk(g_mem_mu);
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) return cudaErrorInvalidValue;
    g_alloc_bytes[it->second.device] -= it->second.bytes;
    const size_t mapped = it->second.mapped;
    g_allocs.erase(it);
    g_frees++;
    munmap(p, mapped);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
    std::lock_guard<std::mutex> lk(g_mem_mu);
    *total = total_mem();
    *free_bytes = *total - g_alloc_bytes[g_device];
    return cudaSuccess;
}

static cudaError_t copy_checked(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (!bytes) return cudaSuccess;
    const bool dd = on_device(dst, bytes), sd = on_device(src, bytes);
    const bool want_dd = kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyHostToDevice;
    const bool want_sd = kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyDeviceToHost;
    if (kind != cudaMemcpyDefault && (dd != want_dd || sd != want_sd)) {
        fprintf(stderr,
                "CUDA emulator: cudaMemcpy kind %d of %zu bytes: destination %s device memory, "
                "source %s\n",
                (int)kind, bytes, dd ? "is" : "is not", sd ? "is" : "is not");
        return cudaErrorInvalidValue;
    }
    ql_emu_device_scope open;
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    /* From or to host memory it returns when the copy is done, so after
     * the legacy stream's earlier work (CUDA's "API synchronization
     * behavior"); between two device buffers it does not wait. */
    if (kind != cudaMemcpyDeviceToDevice && bytes) count_host_wait("cudaMemcpy");
    ql_emu_stream_land(nullptr); /* on the legacy stream */
    return copy_checked(dst, src, bytes, kind);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s) {
    ql_emu_stream_land(s); /* in stream order, after its earlier work */
    return copy_checked(dst, src, bytes, kind);
}

/* Row by row, each row checked as one copy; pitches below the width are
 * refused as CUDA does. */
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s) {
    if (dpitch < width || spitch < width) return cudaErrorInvalidPitchValue;
    ql_emu_stream_land(s); /* in stream order, after its earlier work */
    for (size_t r = 0; r < height; r++) {
        cudaError_t e =
            copy_checked((char *)dst + r * dpitch, (const char *)src + r * spitch, width, kind);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int byte, size_t bytes, cudaStream_t s) {
    if (!bytes) return cudaSuccess;
    ql_emu_stream_land(s); /* in stream order, after its earlier work */
    if (!on_device(dst, bytes)) {
        fprintf(stderr, "CUDA emulator: cudaMemsetAsync of %zu bytes outside device memory\n",
                bytes);
        return cudaErrorInvalidValue;
    }
    ql_emu_device_scope open;
    memset(dst, byte, bytes);
    return cudaSuccess;
}

/* Everything already ran when it was enqueued; deferred results land. */
static void land_all(void) {
    std::lock_guard<std::mutex> lk(g_stream_mu);
    for (auto &kv : g_streams) land(kv.first, kv.first->posted);
}

cudaError_t cudaDeviceSynchronize(void) {
    count_host_wait("cudaDeviceSynchronize");
    land_all();
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    if (!s) return cudaErrorInvalidValue;
    *s = nullptr;
    if (flags & ~(unsigned)cudaStreamNonBlocking) return cudaErrorInvalidValue;
    cudaStream_t n = new CUstream_st{flags, g_device, 0, {}, 0};
    std::lock_guard<std::mutex> lk(g_stream_mu);
    g_streams[n] = 1;
    *s = n;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    std::lock_guard<std::mutex> lk(g_stream_mu);
    auto it = s ? g_streams.find(s) : g_streams.end();
    if (it == g_streams.end()) return cudaErrorInvalidResourceHandle;
    land(s, s->posted); /* CUDA finishes a destroyed stream's work */
    g_streams.erase(it);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s) {
    if (!s) return cudaSuccess;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (!g_streams.count(s)) return cudaErrorInvalidResourceHandle;
    if (s->pending) {
        s->pending = 0;
        return cudaErrorNotReady;
    }
    land(s, s->posted);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    count_host_wait("cudaStreamSynchronize");
    if (!s) return cudaSuccess;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (!g_streams.count(s)) return cudaErrorInvalidResourceHandle;
    s->pending = 0;
    land(s, s->posted);
    return cudaSuccess;
}

} /* extern "C" */

struct CUevent_st {
    double ms;
    cudaStream_t stream; /* recorded on (NULL: the legacy stream) */
    uint64_t seq;        /* the stream's deferred writes before the record */
};

/* Everything recorded before e on its stream lands. */
static void reach(cudaEvent_t e) {
    if (!e->stream) return;
    std::lock_guard<std::mutex> lk(g_stream_mu);
    if (g_streams.count(e->stream)) land(e->stream, e->seq);
}

static double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

extern "C" {

cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = new CUevent_st{0.0, nullptr, 0};
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    if (!e || (flags & ~(unsigned)cudaEventDisableTiming)) return cudaErrorInvalidValue;
    return cudaEventCreate(e);
}

/* Work is complete when enqueued: an event is reached once recorded, and a
 * stream waiting for one waits for nothing. */
cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidResourceHandle;
    reach(e);
    return cudaSuccess;
}

/* The waiting stream's later work runs now, so what it waits for lands now. */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
    if (!e || !ql_emu_stream_valid(s)) return cudaErrorInvalidResourceHandle;
    if (flags) return cudaErrorInvalidValue;
    reach(e);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return cudaErrorInvalidResourceHandle;
    e->ms = now_ms();
    e->stream = nullptr;
    e->seq = 0;
    if (s) {
        std::lock_guard<std::mutex> lk(g_stream_mu);
        if (!g_streams.count(s)) return cudaErrorInvalidResourceHandle;
        e->stream = s;
        e->seq = s->posted;
    }
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (!e) return cudaErrorInvalidResourceHandle;
    count_host_wait("cudaEventSynchronize");
    reach(e);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!a || !b) return cudaErrorInvalidResourceHandle;
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}

} /* extern "C" */
