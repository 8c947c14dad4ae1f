/* The NCCL subset of include/nccl.h over MPI, for the CUDA emulator (see
 * kernels/cuda/emu/README.md, "NCCL"): each rank is an MPI process whose
 * "device memory" is its own host memory from the emulated cudaMalloc.
 *
 * What it is for is checking the code that calls NCCL (dist/comm_nccl.c)
 * without GPUs, so it is strict where NCCL is lenient or undefined:
 *   - buffers must lie in one cudaMalloc allocation of the communicator's
 *     device (NCCL checks that only with NCCL_CHECK_POINTERS=1);
 *   - a send and a receive buffer may overlap only in NCCL's in-place
 *     pattern, and within a group no operation may write memory that another
 *     of the group reads or writes (a group's operations may run
 *     concurrently on a GPU);
 *   - on a non-blocking communicator, a call that returned ncclInProgress
 *     must be followed by polling ncclCommGetAsyncError until it is no
 *     longer ncclInProgress before the next call on that communicator, as
 *     NCCL's documentation demands; the emulator answers ncclInProgress once
 *     to each poll sequence so that callers' loops run;
 *   - init checks collectively that nranks and rank are MPI_COMM_WORLD's,
 *     that every rank passed the same unique id, and that no two ranks of a
 *     host share a device.
 *
 * A collective runs when it is enqueued, with blocking MPI calls, or inside
 * ncclGroupStart/End when the outermost group ends, in the order issued:
 * every rank issues the same sequence of collectives, so the MPI calls
 * match and cannot deadlock. Sums never use MPI's reductions (their order is
 * the library's): the contributions are gathered and added in rank order
 * 0, 1, ..., n-1, so a result depends on the world size alone. */
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <vector>

#include "cuda_runtime_api.h"
#include "nccl.h"

struct ncclComm {
    MPI_Comm mc; /* MPI_COMM_NULL in a world of one */
    int rank, nranks, device;
    int blocking;
    ncclResult_t state; /* ncclSuccess, ncclInProgress or the sticky error */
    int polls;          /* ncclInProgress answers left to ncclCommGetAsyncError */
    int finalized;
};

namespace {

const char ID_MAGIC[] = "qlora-emu-nccl-id";
/* Bytes per MPI call, and of a root's gather buffer for a sum. */
const size_t CHUNK_BYTES = (size_t)1 << 30;
const size_t GATHER_BYTES = (size_t)64 << 20;

std::mutex g_mu; /* g_last, g_live */
char g_last[1024];
std::set<ncclComm_t> g_live;

/* The open group (ncclGroupStart/End) of this thread. */
struct span {
    uintptr_t lo, hi; /* [lo, hi); empty when lo == hi */
};
/* Every collective reads at most one range of this rank's memory and writes
 * at most one. */
struct group_op {
    const char *name;
    int index;
    span read, write;
};
thread_local int g_depth;
thread_local std::vector<group_op> g_group;

/* Records the error ncclGetLastError returns, and says it on stderr when
 * NCCL_DEBUG asks for warnings, as NCCL does. */
ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ncclResult_t fail(ncclResult_t r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    {
        std::lock_guard<std::mutex> lk(g_mu);
        vsnprintf(g_last, sizeof g_last, fmt, ap);
    }
    va_end(ap);
    const char *dbg = getenv("NCCL_DEBUG");
    if (dbg && (!strcasecmp(dbg, "WARN") || !strcasecmp(dbg, "INFO") || !strcasecmp(dbg, "TRACE")))
        fprintf(stderr, "NCCL WARN (emulated) %s\n", g_last);
    return r;
}

ncclResult_t mpi_fail(ncclComm_t c, const char *what, int rc) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, text, &len);
    c->state = ncclSystemError;
    return fail(ncclSystemError, "%s: MPI failed (rank %d of %d): %s", what, c->rank, c->nranks,
                text);
}

size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
    }
}

const char *type_name(ncclDataType_t t) {
    switch (t) {
    case ncclInt8: return "ncclInt8";
    case ncclUint8: return "ncclUint8";
    case ncclInt32: return "ncclInt32";
    case ncclUint32: return "ncclUint32";
    case ncclInt64: return "ncclInt64";
    case ncclUint64: return "ncclUint64";
    case ncclFloat16: return "ncclFloat16";
    case ncclFloat32: return "ncclFloat32";
    case ncclFloat64: return "ncclFloat64";
    case ncclBfloat16: return "ncclBfloat16";
    default: return "?";
    }
}

template <class T> void add_typed(void *acc, const void *x, size_t n) {
    T *a = (T *)acc;
    const T *b = (const T *)x;
    for (size_t i = 0; i < n; i++) a[i] = (T)(a[i] + b[i]);
}

/* acc[i] += x[i]. Types the emulator sums; halves are not emulated. */
bool add_into(void *acc, const void *x, size_t n, ncclDataType_t t) {
    switch (t) {
    case ncclInt8: add_typed<int8_t>(acc, x, n); return true;
    case ncclUint8: add_typed<uint8_t>(acc, x, n); return true;
    case ncclInt32: add_typed<int32_t>(acc, x, n); return true;
    case ncclUint32: add_typed<uint32_t>(acc, x, n); return true;
    case ncclInt64: add_typed<int64_t>(acc, x, n); return true;
    case ncclUint64: add_typed<uint64_t>(acc, x, n); return true;
    case ncclFloat32: add_typed<float>(acc, x, n); return true;
    case ncclFloat64: add_typed<double>(acc, x, n); return true;
    default: return false;
    }
}

bool live(ncclComm_t c) {
    std::lock_guard<std::mutex> lk(g_mu);
    return g_live.count(c) != 0;
}

/* A communicator a collective may use now. */
ncclResult_t check_comm(ncclComm_t c, const char *what) {
    if (!c) return fail(ncclInvalidArgument, "%s: comm argument is NULL", what);
    if (!live(c))
        return fail(ncclInvalidArgument,
                    "%s: comm %p is not a live communicator (never created, or already destroyed "
                    "or aborted)",
                    what, (void *)c);
    if (c->finalized)
        return fail(ncclInvalidUsage, "%s: the communicator was finalized (ncclCommFinalize)",
                    what);
    if (c->state == ncclInProgress)
        return fail(ncclInvalidUsage,
                    "%s: called while an earlier call on this non-blocking communicator is in "
                    "progress; poll ncclCommGetAsyncError until it is no longer ncclInProgress "
                    "first",
                    what);
    if (c->state != ncclSuccess)
        return fail(c->state, "%s: the communicator has failed (%s); only ncclCommAbort is left",
                    what, ncclGetErrorString(c->state));
    return ncclSuccess;
}

/* A buffer of `bytes` bytes must be device memory of c's device. */
ncclResult_t check_buf(ncclComm_t c, const char *what, const char *arg, const void *p,
                       size_t bytes) {
    if (!bytes) return ncclSuccess;
    if (!p) return fail(ncclInvalidArgument, "%s: %s is NULL", what, arg);
    const int dev = ql_emu_device_of(p, bytes);
    if (dev < 0)
        return fail(ncclInvalidArgument,
                    "%s: %s %p (%zu bytes) is not inside one device allocation (host memory, or "
                    "past the end of a cudaMalloc buffer)",
                    what, arg, p, bytes);
    if (dev != c->device)
        return fail(ncclInvalidArgument,
                    "%s: %s %p is memory of device %d, the communicator's device is %d", what, arg,
                    p, dev, c->device);
    return ncclSuccess;
}

bool overlap(span a, span b) { return a.lo < a.hi && b.lo < b.hi && a.lo < b.hi && b.lo < a.hi; }

span span_of(const void *p, size_t bytes) { return span{(uintptr_t)p, (uintptr_t)p + bytes}; }

/* The checks every collective makes, and the group's hazard bookkeeping:
 * reads and writes are this rank's buffer ranges; `in_place` says that
 * their overlap is the collective's in-place form. */
ncclResult_t enqueue_check(ncclComm_t c, const char *what, ncclDataType_t t, ncclRedOp_t *op,
                           int root, cudaStream_t stream) {
    ncclResult_t r = check_comm(c, what);
    if (r != ncclSuccess) return r;
    if ((int)t < 0 || (int)t >= (int)ncclNumTypes || !type_size(t))
        return fail(ncclInvalidArgument, "%s: invalid data type %d", what, (int)t);
    if (op && ((int)*op < 0 || (int)*op >= (int)ncclNumOps))
        return fail(ncclInvalidArgument, "%s: invalid reduction operation %d", what, (int)*op);
    if (op && *op != ncclSum)
        return fail(ncclInvalidUsage, "%s: the emulator implements ncclSum only (op %d)", what,
                    (int)*op);
    if (op && (t == ncclFloat16 || t == ncclBfloat16))
        return fail(ncclInvalidUsage, "%s: the emulator does not sum %s", what, type_name(t));
    if (root < 0 || root >= c->nranks)
        return fail(ncclInvalidArgument, "%s: invalid root %d (root should be in the 0..%d range)",
                    what, root, c->nranks - 1);
    if (!ql_emu_stream_valid(stream))
        return fail(ncclUnhandledCudaError,
                    "%s: stream %p is not a live CUDA stream (cudaErrorInvalidResourceHandle)",
                    what, (void *)stream);
    return ncclSuccess;
}

/* count elements of t, times `times`, in bytes; false on overflow. */
bool bytes_of(size_t count, ncclDataType_t t, size_t times, size_t *out) {
    const size_t es = type_size(t);
    if (count > SIZE_MAX / es / (times ? times : 1)) return false;
    *out = count * es * times;
    return true;
}

ncclResult_t check_hazards(const char *what, span rd, span wr, bool in_place) {
    if (!in_place && overlap(rd, wr))
        return fail(ncclInvalidArgument,
                    "%s: sendbuff and recvbuff overlap without being in place (NCCL's in-place "
                    "form is the only overlap it defines)",
                    what);
    if (g_depth == 0) return ncclSuccess;
    const int index = (int)g_group.size();
    for (const group_op &o : g_group) {
        const char *mine = nullptr, *theirs = nullptr;
        if (overlap(wr, o.read))
            mine = "writes", theirs = "reads";
        else if (overlap(wr, o.write))
            mine = "writes", theirs = "writes";
        else if (overlap(rd, o.write))
            mine = "reads", theirs = "writes";
        if (mine)
            return fail(ncclInvalidUsage,
                        "%s (operation %d of the group) %s memory that %s (operation %d of the "
                        "same group) %s: a group's operations may run concurrently",
                        what, index, mine, o.name, o.index, theirs);
    }
    g_group.push_back(group_op{what, index, rd, wr});
    return ncclSuccess;
}

ncclResult_t bcast_bytes(ncclComm_t c, const char *what, void *buf, size_t bytes, int root) {
    for (size_t off = 0; off < bytes; off += CHUNK_BYTES) {
        const size_t n = bytes - off < CHUNK_BYTES ? bytes - off : CHUNK_BYTES;
        const int rc = MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, c->mc);
        if (rc != MPI_SUCCESS) return mpi_fail(c, what, rc);
    }
    return ncclSuccess;
}

/* The rank-ordered sum of every rank's send[0, count) into recv on `root`
 * (all ranks when root < 0). */
ncclResult_t sum_to(ncclComm_t c, const char *what, const void *send, void *recv, size_t count,
                    ncclDataType_t t, int root) {
    const size_t es = type_size(t), n = (size_t)c->nranks;
    if (c->nranks == 1) {
        if (recv != send) memmove(recv, send, count * es);
        return ncclSuccess;
    }
    size_t chunk = GATHER_BYTES / es / n;
    if (chunk < 1) chunk = 1;
    if (chunk * es > CHUNK_BYTES) chunk = CHUNK_BYTES / es;
    const bool mine = root < 0 || root == c->rank;
    std::vector<char> tmp(mine ? n * chunk * es : 0);
    for (size_t lo = 0; lo < count; lo += chunk) {
        const size_t m = count - lo < chunk ? count - lo : chunk;
        const int bytes = (int)(m * es);
        const char *src = (const char *)send + lo * es;
        const int rc = root < 0
                           ? MPI_Allgather(src, bytes, MPI_BYTE, tmp.data(), bytes, MPI_BYTE, c->mc)
                           : MPI_Gather(src, bytes, MPI_BYTE, mine ? tmp.data() : nullptr, bytes,
                                        MPI_BYTE, root, c->mc);
        if (rc != MPI_SUCCESS) return mpi_fail(c, what, rc);
        if (!mine) continue;
        char *dst = (char *)recv + lo * es;
        memcpy(dst, tmp.data(), m * es);
        for (size_t q = 1; q < n; q++)
            if (!add_into(dst, tmp.data() + q * (size_t)bytes, m, t))
                return fail(ncclInternalError, "%s: no sum for %s", what, type_name(t));
    }
    return ncclSuccess;
}

ncclResult_t finish(ncclComm_t c, ncclResult_t r) {
    if (r != ncclSuccess && c->state == ncclSuccess) c->state = r;
    return r;
}

/* A checked collective, run at once or, inside a group, at the outermost
 * ncclGroupEnd (as NCCL launches a group's work only then: code that reads
 * a result before closing its group reads stale memory here too). */
enum coll_kind { ALL_REDUCE, REDUCE, BROADCAST, ALL_GATHER, REDUCE_SCATTER };
struct coll {
    coll_kind kind;
    const char *what;
    const void *send;
    void *recv;
    size_t count, bytes; /* elements of the op's count argument, and their bytes */
    ncclDataType_t t;
    int root;
    ncclComm_t c;
    cudaStream_t stream;
};
thread_local std::vector<coll> g_queue;

/* The bytes of this rank's memory that o writes. */
span written(const coll &o) {
    const size_t es = type_size(o.t);
    switch (o.kind) {
    case REDUCE: return o.c->rank == o.root ? span_of(o.recv, o.count * es) : span{0, 0};
    case BROADCAST: return span_of(o.recv, o.bytes);
    case ALL_GATHER: return span_of(o.recv, o.bytes * (size_t)o.c->nranks);
    default: return span_of(o.recv, o.count * es);
    }
}

/* The bytes of this rank's memory that o reads. */
span read_by(const coll &o) {
    const size_t es = type_size(o.t);
    switch (o.kind) {
    case BROADCAST: return o.c->rank == o.root ? span_of(o.send, o.bytes) : span{0, 0};
    case ALL_GATHER: return span_of(o.send, o.bytes);
    case REDUCE_SCATTER: return span_of(o.send, o.count * es * (size_t)o.c->nranks);
    default: return span_of(o.send, o.count * es);
    }
}

ncclResult_t run_now(const coll &o);

/* On a stream of its own (not the legacy one) the result is computed now,
 * in a copy of the output, and lands when the program synchronises with
 * that stream (emu_runtime.cpp, ql_emu_stream_defer): reading it earlier
 * reads the old bytes. Earlier results of the stream that this operation
 * reads or overwrites land first, in order (stream order); others stay
 * pending. */
ncclResult_t run(const coll &o) {
    ql_emu_device_scope open;
    const span w = written(o), rd = read_by(o);
    ql_emu_stream_land_touching(o.stream, (const void *)rd.lo, (size_t)(rd.hi - rd.lo));
    ql_emu_stream_land_touching(o.stream, (const void *)w.lo, (size_t)(w.hi - w.lo));
    if (!o.stream) return run_now(o);
    if (w.lo == w.hi) { /* a send alone: its input is still watched until it lands */
        const ncclResult_t r = run_now(o);
        if (r == ncclSuccess)
            ql_emu_stream_defer(o.stream, o.what, nullptr, nullptr, 0, (const void *)rd.lo,
                                (size_t)(rd.hi - rd.lo));
        return r;
    }
    std::vector<char> stage((size_t)(w.hi - w.lo));
    memcpy(stage.data(), (const void *)w.lo, stage.size());
    coll moved = o;
    moved.recv = stage.data();
    const uintptr_t snd = (uintptr_t)o.send;
    if (snd >= w.lo && snd < w.hi) moved.send = stage.data() + (snd - w.lo); /* in place */
    const ncclResult_t r = run_now(moved);
    if (r == ncclSuccess)
        ql_emu_stream_defer(o.stream, o.what, (void *)w.lo, stage.data(), stage.size(),
                            (const void *)rd.lo, (size_t)(rd.hi - rd.lo));
    return r;
}

ncclResult_t run_now(const coll &o) {
    ql_emu_device_scope open;
    /* MPI may move the bytes with system calls (shared-memory transports),
     * which fail on closed pages instead of faulting: open them first. */
    const span w = written(o), rd = read_by(o);
    ql_emu_device_open_range((const void *)w.lo, (size_t)(w.hi - w.lo));
    ql_emu_device_open_range((const void *)rd.lo, (size_t)(rd.hi - rd.lo));
    ncclComm_t c = o.c;
    if (!live(c))
        return fail(ncclInvalidUsage, "%s: the communicator was destroyed before ncclGroupEnd",
                    o.what);
    ncclResult_t r = ncclSuccess;
    switch (o.kind) {
    case ALL_REDUCE: r = sum_to(c, o.what, o.send, o.recv, o.count, o.t, -1); break;
    case REDUCE: r = sum_to(c, o.what, o.send, o.recv, o.count, o.t, o.root); break;
    case BROADCAST:
        if (c->rank == o.root && o.send != o.recv) memmove(o.recv, o.send, o.bytes);
        if (c->nranks > 1) r = bcast_bytes(c, o.what, o.recv, o.bytes, o.root);
        break;
    case ALL_GATHER: {
        char *mine = (char *)o.recv + (size_t)c->rank * o.bytes;
        if (o.send != mine) memmove(mine, o.send, o.bytes);
        for (int q = 0; q < c->nranks && c->nranks > 1 && r == ncclSuccess; q++)
            r = bcast_bytes(c, o.what, (char *)o.recv + (size_t)q * o.bytes, o.bytes, q);
        break;
    }
    case REDUCE_SCATTER:
        /* One rank-ordered sum per slice, to its owner; the in-place slice
         * is read by its own sum only. */
        for (int q = 0; q < c->nranks && r == ncclSuccess; q++)
            r = sum_to(c, o.what, (const char *)o.send + (size_t)q * o.bytes, o.recv, o.count, o.t,
                       c->nranks > 1 ? q : -1);
        break;
    }
    /* On a GPU the work would still be on the stream for a while. */
    if (r == ncclSuccess) ql_emu_stream_mark_pending(o.stream);
    return finish(c, r);
}

/* A non-blocking communicator reports the operation in progress until it
 * is polled. */
ncclResult_t in_progress(ncclComm_t c) {
    if (c->blocking || c->state != ncclSuccess) return c->state;
    c->state = ncclInProgress;
    c->polls = 1;
    return ncclInProgress;
}

ncclResult_t submit(const coll &o) {
    if (g_depth > 0) {
        g_queue.push_back(o);
        return ncclSuccess;
    }
    ncclResult_t r = run(o);
    return r == ncclSuccess ? in_progress(o.c) : r;
}

} // namespace

extern "C" {

ncclResult_t ncclGetVersion(int *version) {
    if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: version is NULL");
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
    static std::mutex mu;
    static unsigned long long counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    std::lock_guard<std::mutex> lk(mu);
    memset(id, 0, sizeof *id);
    /* Unique enough to tell two communicators apart: who made it, and when. */
    snprintf(id->internal, sizeof id->internal, "%s %s %ld %lld.%09ld #%llu", ID_MAGIC, host,
             (long)getpid(), (long long)ts.tv_sec, ts.tv_nsec, ++counter);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t *config) {
    const char *what = "ncclCommInitRankConfig";
    if (!comm) return fail(ncclInvalidArgument, "%s: comm is NULL", what);
    *comm = nullptr;
    int blocking = 1;
    if (config) {
        if (config->magic != 0xcafebeef || config->size != sizeof(ncclConfig_t))
            return fail(ncclInvalidArgument,
                        "%s: config was not set up with NCCL_CONFIG_INITIALIZER (magic %#x, size "
                        "%zu)",
                        what, config->magic, config->size);
        if (config->blocking != NCCL_CONFIG_UNDEF_INT && config->blocking != 0 &&
            config->blocking != 1)
            return fail(ncclInvalidArgument, "%s: config.blocking = %d (0 or 1)", what,
                        config->blocking);
        if (config->blocking == 0) blocking = 0;
    }
    const bool id_ok = !strncmp(id.internal, ID_MAGIC, sizeof ID_MAGIC - 1);
    /* Several ranks check rank and id together below: a rank that returned
     * here alone would leave the others waiting in MPI. */
    if (nranks < 1 || (nranks == 1 && rank != 0))
        return fail(ncclInvalidArgument, "%s: rank %d of %d ranks (rank must be in 0..nranks-1)",
                    what, rank, nranks);
    if (nranks == 1 && !id_ok)
        return fail(ncclInvalidArgument, "%s: the unique id did not come from ncclGetUniqueId",
                    what);
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
        return fail(ncclUnhandledCudaError, "%s: cudaGetDevice failed", what);

    ncclComm_t c = new ncclComm{MPI_COMM_NULL, rank, nranks, device, blocking, ncclSuccess, 0, 0};
    if (nranks > 1) {
        int inited = 0, fin = 0;
        MPI_Initialized(&inited);
        MPI_Finalized(&fin);
        if (!inited || fin) {
            delete c;
            return fail(ncclInvalidUsage,
                        "%s: %d ranks: the emulated NCCL runs over MPI, which is not initialised",
                        what, nranks);
        }
        int rc = MPI_Comm_dup(MPI_COMM_WORLD, &c->mc);
        if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(c->mc, MPI_ERRORS_RETURN);
        int wsize = 0;
        if (rc == MPI_SUCCESS) rc = MPI_Comm_size(c->mc, &wsize);
        /* World rank 0's id against every rank's, then what every rank
         * passed, so that every rank reaches the same verdict. */
        ncclUniqueId first = id;
        if (rc == MPI_SUCCESS) rc = MPI_Bcast(&first, (int)sizeof first, MPI_BYTE, 0, c->mc);
        struct rec {
            int nranks, rank, id_ok, same_id, device;
            char host[64];
        } me = {nranks, rank, id_ok, !memcmp(&first, &id, sizeof id), device, ""};
        gethostname(me.host, sizeof me.host - 1);
        std::vector<rec> all((size_t)(wsize > 0 ? wsize : 1));
        if (rc == MPI_SUCCESS)
            rc = MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all.data(), (int)sizeof me, MPI_BYTE,
                               c->mc);
        if (rc != MPI_SUCCESS) {
            ncclResult_t r = mpi_fail(c, what, rc);
            delete c;
            return r;
        }
        ncclResult_t r = ncclSuccess;
        for (int q = 0; q < wsize && r == ncclSuccess; q++) {
            const rec &x = all[(size_t)q];
            if (x.nranks != wsize)
                r = fail(ncclInvalidArgument,
                         "%s: MPI rank %d passed nranks = %d, MPI_COMM_WORLD has %d ranks (the "
                         "emulated NCCL spans the whole MPI world)",
                         what, q, x.nranks, wsize);
            else if (x.rank != q)
                r = fail(ncclInvalidArgument,
                         "%s: MPI rank %d passed rank = %d (the emulated NCCL's ranks are "
                         "MPI_COMM_WORLD's)",
                         what, q, x.rank);
            else if (q == 0 && !x.id_ok)
                r = fail(ncclInvalidArgument,
                         "%s: rank 0's unique id did not come from ncclGetUniqueId", what);
            else if (!x.same_id)
                r = fail(ncclInvalidArgument,
                         "%s: rank %d passed a unique id different from rank 0's (the id must be "
                         "made once and broadcast)",
                         what, q);
            for (int p = 0; p < q && r == ncclSuccess; p++)
                if (all[(size_t)p].device == x.device && !strcmp(all[(size_t)p].host, x.host))
                    r = fail(ncclInvalidUsage,
                             "%s: duplicate GPU: ranks %d and %d both use device %d of host %s",
                             what, p, q, x.device, x.host);
        }
        if (r != ncclSuccess) {
            MPI_Comm_free(&c->mc);
            delete c;
            return r;
        }
    }
    {
        std::lock_guard<std::mutex> lk(g_mu);
        g_live.insert(c);
    }
    *comm = c;
    if (blocking) return ncclSuccess;
    c->state = ncclInProgress;
    c->polls = 1;
    return ncclInProgress;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *err) {
    if (!c) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: comm argument is NULL");
    if (!err) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
    if (!live(c))
        return fail(ncclInvalidArgument,
                    "ncclCommGetAsyncError: comm %p is not a live communicator", (void *)c);
    *err = c->state;
    if (c->state == ncclInProgress && c->polls-- <= 0) {
        c->state = ncclSuccess;
        *err = ncclSuccess;
    }
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t c, int *count) {
    if (!c || !count || !live(c)) return fail(ncclInvalidArgument, "ncclCommCount: bad argument");
    *count = c->nranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t c, int *rank) {
    if (!c || !rank || !live(c)) return fail(ncclInvalidArgument, "ncclCommUserRank: bad argument");
    *rank = c->rank;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t c) {
    ncclResult_t r = check_comm(c, "ncclCommFinalize");
    if (r != ncclSuccess) return r;
    /* Every operation already completed: nothing to flush. */
    c->finalized = 1;
    if (c->blocking) return ncclSuccess;
    c->state = ncclInProgress;
    c->polls = 1;
    return ncclInProgress;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return ncclSuccess;
    if (!live(c))
        return fail(ncclInvalidArgument, "ncclCommDestroy: comm %p is not a live communicator",
                    (void *)c);
    if (c->state == ncclInProgress)
        return fail(ncclInvalidUsage,
                    "ncclCommDestroy: an earlier call on this non-blocking communicator is in "
                    "progress; poll ncclCommGetAsyncError first (or ncclCommAbort)");
    {
        std::lock_guard<std::mutex> lk(g_mu);
        g_live.erase(c);
    }
    int fin = 0;
    MPI_Finalized(&fin);
    if (c->mc != MPI_COMM_NULL && !fin) MPI_Comm_free(&c->mc);
    delete c;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
    if (!c) return ncclSuccess;
    if (!live(c))
        return fail(ncclInvalidArgument, "ncclCommAbort: comm %p is not a live communicator",
                    (void *)c);
    {
        std::lock_guard<std::mutex> lk(g_mu);
        g_live.erase(c);
    }
    /* The MPI communicator is left to MPI_Finalize: freeing it is collective
     * in the standard, and the other ranks may never get here. */
    delete c;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (see ncclGetLastError)";
    case ncclSystemError: return "unhandled system error (see ncclGetLastError)";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument (see ncclGetLastError)";
    case ncclInvalidUsage: return "invalid usage (see ncclGetLastError)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t) { return g_last; }

ncclResult_t ncclGroupStart(void) {
    g_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (g_depth <= 0)
        return fail(ncclInvalidUsage, "ncclGroupEnd: not in a group (no ncclGroupStart)");
    if (--g_depth > 0) return ncclSuccess;
    std::vector<coll> q;
    q.swap(g_queue);
    g_group.clear();
    /* Every rank queued the same collectives in the same order: running
     * them one after another matches the ranks' MPI calls. */
    ncclResult_t r = ncclSuccess;
    for (const coll &o : q)
        if ((r = run(o)) != ncclSuccess) return r;
    std::vector<ncclComm_t> done;
    for (const coll &o : q) {
        bool seen = false;
        for (ncclComm_t x : done) seen = seen || x == o.c;
        if (seen) continue;
        done.push_back(o.c);
        if (in_progress(o.c) == ncclInProgress) r = ncclInProgress;
    }
    return r;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    const char *what = "ncclAllReduce";
    ncclResult_t r = enqueue_check(c, what, t, &op, 0, stream);
    size_t bytes = 0;
    if (r == ncclSuccess && !bytes_of(count, t, 1, &bytes))
        r = fail(ncclInvalidArgument, "%s: count %zu overflows", what, count);
    if (r == ncclSuccess) r = check_buf(c, what, "sendbuff", send, bytes);
    if (r == ncclSuccess) r = check_buf(c, what, "recvbuff", recv, bytes);
    if (r == ncclSuccess)
        r = check_hazards(what, span_of(send, bytes), span_of(recv, bytes), send == recv);
    if (r != ncclSuccess) return r;
    return submit(coll{ALL_REDUCE, what, send, recv, count, bytes, t, 0, c, stream});
}

ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t t,
                        ncclRedOp_t op, int root, ncclComm_t c, cudaStream_t stream) {
    const char *what = "ncclReduce";
    ncclResult_t r = enqueue_check(c, what, t, &op, root, stream);
    size_t bytes = 0;
    if (r == ncclSuccess && !bytes_of(count, t, 1, &bytes))
        r = fail(ncclInvalidArgument, "%s: count %zu overflows", what, count);
    const bool is_root = r == ncclSuccess && c->rank == root;
    if (r == ncclSuccess) r = check_buf(c, what, "sendbuff", send, bytes);
    /* recvbuff matters on the root only. */
    if (r == ncclSuccess && is_root) r = check_buf(c, what, "recvbuff", recv, bytes);
    if (r == ncclSuccess)
        r = check_hazards(what, span_of(send, bytes), span_of(recv, is_root ? bytes : 0),
                          send == recv);
    if (r != ncclSuccess) return r;
    return submit(coll{REDUCE, what, send, recv, count, bytes, t, root, c, stream});
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root,
                           ncclComm_t c, cudaStream_t stream) {
    const char *what = "ncclBroadcast";
    ncclResult_t r = enqueue_check(c, what, t, nullptr, root, stream);
    size_t bytes = 0;
    if (r == ncclSuccess && !bytes_of(count, t, 1, &bytes))
        r = fail(ncclInvalidArgument, "%s: count %zu overflows", what, count);
    const bool is_root = r == ncclSuccess && c->rank == root;
    /* sendbuff matters on the root only. */
    if (r == ncclSuccess && is_root) r = check_buf(c, what, "sendbuff", send, bytes);
    if (r == ncclSuccess) r = check_buf(c, what, "recvbuff", recv, bytes);
    if (r == ncclSuccess)
        r = check_hazards(what, span_of(send, is_root ? bytes : 0), span_of(recv, bytes),
                          send == recv);
    if (r != ncclSuccess) return r;
    return submit(coll{BROADCAST, what, send, recv, count, bytes, t, root, c, stream});
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t t,
                           ncclComm_t c, cudaStream_t stream) {
    const char *what = "ncclAllGather";
    ncclResult_t r = enqueue_check(c, what, t, nullptr, 0, stream);
    size_t bytes = 0, total = 0;
    if (r == ncclSuccess &&
        (!bytes_of(sendcount, t, 1, &bytes) || !bytes_of(sendcount, t, (size_t)c->nranks, &total)))
        r = fail(ncclInvalidArgument, "%s: sendcount %zu times %d ranks overflows", what, sendcount,
                 c->nranks);
    if (r == ncclSuccess) r = check_buf(c, what, "sendbuff", send, bytes);
    if (r == ncclSuccess) r = check_buf(c, what, "recvbuff", recv, total);
    char *mine = r == ncclSuccess ? (char *)recv + (size_t)c->rank * bytes : nullptr;
    if (r == ncclSuccess)
        r = check_hazards(what, span_of(send, bytes), span_of(recv, total), send == mine);
    if (r != ncclSuccess) return r;
    return submit(coll{ALL_GATHER, what, send, recv, sendcount, bytes, t, 0, c, stream});
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t t,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    const char *what = "ncclReduceScatter";
    ncclResult_t r = enqueue_check(c, what, t, &op, 0, stream);
    size_t bytes = 0, total = 0;
    if (r == ncclSuccess &&
        (!bytes_of(recvcount, t, 1, &bytes) || !bytes_of(recvcount, t, (size_t)c->nranks, &total)))
        r = fail(ncclInvalidArgument, "%s: recvcount %zu times %d ranks overflows", what, recvcount,
                 c->nranks);
    if (r == ncclSuccess) r = check_buf(c, what, "sendbuff", send, total);
    if (r == ncclSuccess) r = check_buf(c, what, "recvbuff", recv, bytes);
    const char *mine = r == ncclSuccess ? (const char *)send + (size_t)c->rank * bytes : nullptr;
    if (r == ncclSuccess)
        r = check_hazards(what, span_of(send, total), span_of(recv, bytes), recv == mine);
    if (r != ncclSuccess) return r;
    return submit(coll{REDUCE_SCATTER, what, send, recv, recvcount, bytes, t, 0, c, stream});
}

} /* extern "C" */
