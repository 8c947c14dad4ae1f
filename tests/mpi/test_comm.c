/* dist/comm.h under mpiexec (any number of ranks; CTest runs 2, and
 * tests/e2e/test_dist_train.sh runs it at 3 and 4 as well):
 *  - reduce-scatter, all-gather and all-reduce of values chosen to sum
 *    exactly (small powers of two times integers), for odd counts, counts
 *    below the number of ranks, and buckets that do not divide the slices,
 *    in place and not, F32/F64/I64: the exact sums;
 *  - values that do not sum exactly: the result is the float sum in rank
 *    order 0, 1, 2, ... computed here by hand, bit for bit;
 *  - agree: no failure; one rank's failure reaches every rank with its
 *    status and "rank R (HOST): message"; the lowest failing rank wins;
 *    agreeing again on an agreed failure names the same rank;
 *  - bcast, allgather_bytes, barrier, the world's node fields;
 *  - the ZeRO-1 optimizer (train/optim.h): each rank's m and v are its slice,
 *    and the parameters after three steps are those of one process that
 *    sums the same gradients itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "dist/comm.h"
#include "kernels/backend.h"
#include "train/optim.h"

static ql_comm *c;
static int R, me;

/* Rank r's element i: an integer times a power of two, so every partial sum
 * of up to 64 ranks is exact in float32. */
static float exact_val(int r, int64_t i) {
    return (float)((r + 1) * (i % 2 ? -1 : 1)) * ldexpf(1.0f, -(int)(i % 20));
}
static float exact_sum(int64_t i) {
    float s = 0;
    for (int r = 0; r < R; r++) s += exact_val(r, i);
    return s;
}

static void test_reduce_scatter(void) {
    static const int64_t ns[] = {0, 1, 2, 3, 7, 33, 1001, 4099};
    static const int64_t buckets[] = {1, 2, 5, 64, 1 << 22};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof buckets / sizeof buckets[0]; b++) {
            int64_t n = ns[a], off, len;
            ql_comm_set_bucket(c, buckets[b]);
            ql_dist_slice(n, R, me, &off, &len);
            float *in = malloc((size_t)(n + 1) * sizeof *in);
            float *out = malloc((size_t)(len + 1) * sizeof *out);
            for (int64_t i = 0; i < n; i++) in[i] = exact_val(me, i);
            CHECK(ql_comm_reduce_scatter_sum(c, in, out, n, QL_DT_F32) == QL_OK);
            int ok = 1;
            for (int64_t i = 0; i < len; i++) ok &= out[i] == exact_sum(off + i);
            CHECKF(ok, "reduce-scatter n %lld bucket %lld", (long long)n, (long long)buckets[b]);
            /* in place: the slice of the input itself */
            CHECK(ql_comm_reduce_scatter_sum(c, in, in + off, n, QL_DT_F32) == QL_OK);
            ok = 1;
            for (int64_t i = 0; i < len; i++) ok &= in[off + i] == exact_sum(off + i);
            CHECKF(ok, "in-place reduce-scatter n %lld bucket %lld", (long long)n,
                   (long long)buckets[b]);
            /* all-gather the sums: every rank has them all */
            CHECK(ql_comm_allgather(c, out, in, n, QL_DT_F32) == QL_OK);
            ok = 1;
            for (int64_t i = 0; i < n; i++) ok &= in[i] == exact_sum(i);
            CHECKF(ok, "all-gather n %lld", (long long)n);
            free(in);
            free(out);
        }
    ql_comm_set_bucket(c, 1 << 22);
}

static void test_allreduce(void) {
    for (int64_t n = 0; n < 40; n += 3) {
        float f[40];
        double d[40];
        int64_t k[40];
        for (int64_t i = 0; i < n; i++) {
            f[i] = exact_val(me, i);
            d[i] = (double)exact_val(me, i) * 0x1p-40;
            k[i] = ((int64_t)1 << 40) * (me + 1) + i;
        }
        CHECK(ql_comm_allreduce_sum(c, f, n, QL_DT_F32) == QL_OK);
        CHECK(ql_comm_allreduce_sum(c, d, n, QL_DT_F64) == QL_OK);
        CHECK(ql_comm_allreduce_sum(c, k, n, QL_DT_I64) == QL_OK);
        int ok = 1;
        for (int64_t i = 0; i < n; i++) {
            ok &= f[i] == exact_sum(i) && d[i] == (double)exact_sum(i) * 0x1p-40;
            ok &= k[i] == ((int64_t)1 << 40) * (R * (R + 1) / 2) + R * i;
        }
        CHECKF(ok, "all-reduce of %lld", (long long)n);
    }
}

/* Random floats of mixed magnitude: the sum depends on the order. Every
 * rank draws every rank's vector from the same seed. */
static void test_rank_order(void) {
    enum { N = 999 };
    float *x = malloc((size_t)R * N * sizeof *x), mine[N], want[N], out[N];
    ql_rng rng;
    ql_rng_seed(&rng, 42);
    for (int64_t i = 0; i < (int64_t)R * N; i++)
        x[i] = ql_rng_normal(&rng) * ldexpf(1.0f, (int)ql_rng_below(&rng, 40) - 20);
    for (int i = 0; i < N; i++) {
        float s = x[i];
        for (int r = 1; r < R; r++) s += x[(size_t)r * N + i];
        want[i] = s;
        mine[i] = x[(size_t)me * N + i];
    }
    ql_comm_set_bucket(c, 37);
    int64_t off, len;
    ql_dist_slice(N, R, me, &off, &len);
    CHECK(ql_comm_reduce_scatter_sum(c, mine, out, N, QL_DT_F32) == QL_OK);
    CHECK(!memcmp(out, want + off, (size_t)len * sizeof *out));
    memcpy(out, mine, sizeof out);
    CHECK(ql_comm_allreduce_sum(c, out, N, QL_DT_F32) == QL_OK);
    CHECK(!memcmp(out, want, sizeof out));
    ql_comm_set_bucket(c, 1 << 22);
    free(x);
}

static void test_agree(void) {
    const char *host = ql_comm_world(c)->host;
    char want[512];
    ql_error_clear();
    CHECK(ql_comm_agree(c, QL_OK) == QL_OK && ql_comm_failed_rank(c) == -1);
    /* the last rank fails */
    int bad = R - 1;
    ql_status local = me == bad ? ql_error(QL_EIO, "cannot write shard %d", me) : QL_OK;
    ql_status st = ql_comm_agree(c, local);
    CHECK(st == QL_EIO && ql_comm_failed_rank(c) == bad);
    /* same host name on every rank of this single-node test */
    snprintf(want, sizeof want, "rank %d (%s): cannot write shard %d", bad, host, bad);
    CHECKF(!strcmp(ql_comm_agreed_message(c), want), "%s", ql_comm_agreed_message(c));
    /* the failing rank keeps its own message; the others get the prefixed one */
    char own[64];
    snprintf(own, sizeof own, "cannot write shard %d", bad);
    CHECKF(!strcmp(ql_error_message(), me == bad ? own : want), "%s", ql_error_message());
    /* everyone passes the agreed failure on: still rank `bad`'s */
    st = ql_comm_agree(c, st);
    CHECK(st == QL_EIO && ql_comm_failed_rank(c) == bad);
    CHECKF(!strcmp(ql_comm_agreed_message(c), want), "%s", ql_comm_agreed_message(c));
    /* every rank fails differently: rank 0's status and message */
    local = ql_error(me ? QL_EFORMAT : QL_ENOMEM, "failure of rank %d", me);
    st = ql_comm_agree(c, local);
    CHECK(st == QL_ENOMEM && ql_comm_failed_rank(c) == 0);
    snprintf(want, sizeof want, "rank 0 (%s): failure of rank 0", host);
    CHECK(!strcmp(ql_comm_agreed_message(c), want));
    /* and all is well again */
    CHECK(ql_comm_agree(c, QL_OK) == QL_OK && ql_comm_failed_rank(c) == -1);
}

static void test_small(void) {
    char buf[100];
    memset(buf, me == R - 1 ? 'x' : 0, sizeof buf);
    CHECK(ql_comm_bcast(c, buf, sizeof buf, R - 1) == QL_OK);
    CHECK(buf[0] == 'x' && buf[99] == 'x');
    int32_t mine[2] = {me, 10 * me}, all[2 * 64];
    CHECK(R <= 64);
    CHECK(ql_comm_allgather_bytes(c, mine, all, sizeof mine) == QL_OK);
    int ok = 1;
    for (int r = 0; r < R; r++) ok &= all[2 * r] == r && all[2 * r + 1] == 10 * r;
    CHECK(ok);
    CHECK(ql_comm_barrier(c) == QL_OK);
    const ql_world *w = ql_comm_world(c);
    CHECK(w->rank == me && w->size == R);
    CHECK(w->node == 0 && w->n_nodes == 1); /* mpiexec on one machine */
    CHECK(w->local_rank == me && w->local_size == R);
    CHECK(ql_comm_timeout(c) > 0);
}

/* ZeRO-1: this rank's optimizer against one process's on the summed
 * gradients (exact sums, so the gradients are the same bits). */
static void test_optim(void) {
    const ql_backend *be = ql_backend_by_name("cpu");
    enum { N = 1003 };
    float p[N], g[N], rp[N], rg[N];
    ql_optim o, ref;
    CHECK(ql_optim_init_dist(&o, be, N, c, NULL) == QL_OK);
    CHECK(ql_optim_init(&ref, be, N) == QL_OK);
    int64_t off, len;
    ql_dist_slice(N, R, me, &off, &len);
    CHECK(o.off == off && o.len == len && o.n == N && ref.off == 0 && ref.len == N);
    ql_optim_config oc = {.weight_decay = 0.01,
                          .beta1 = 0.9,
                          .beta2 = 0.999,
                          .eps = 1e-8,
                          .max_grad_norm = 0, /* no clipping: a norm's last bit would matter */
                          .on_nonfinite = QL_NONFINITE_SKIP,
                          .max_nonfinite_in_a_row = 5};
    for (int i = 0; i < N; i++) p[i] = rp[i] = 0.01f * (float)(i % 17) - 0.08f;
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < N; i++) {
            g[i] = exact_val(me, i + step) * 0x1p-6f;
            rg[i] = exact_sum(i + step) * 0x1p-6f;
        }
        ql_step_result a, b;
        CHECK(ql_optim_step(&o, &oc, step, 1.0, 1e-2, p, g, &a) == QL_OK);
        CHECK(ql_optim_step(&ref, &oc, step, 1.0, 1e-2, rp, rg, &b) == QL_OK);
        CHECK(!a.skipped && !b.skipped);
        CHECKF(fabs(a.grad_norm - b.grad_norm) <= 1e-12 * b.grad_norm, "%.17g %.17g", a.grad_norm,
               b.grad_norm);
    }
    CHECK(!memcmp(p, rp, sizeof p));
    CHECK(!memcmp(o.m, ref.m + off, (size_t)len * sizeof(float)));
    CHECK(!memcmp(o.v, ref.v + off, (size_t)len * sizeof(float)));
    CHECK(o.t == 3);
    /* a non-finite gradient on one rank: every rank skips the step */
    for (int i = 0; i < N; i++) g[i] = me == R - 1 && i == 5 ? NAN : 1.0f;
    ql_step_result a;
    CHECK(ql_optim_step(&o, &oc, 4, 1.0, 1e-2, p, g, &a) == QL_OK);
    CHECK(a.skipped && isnan(a.grad_norm) && o.t == 3);
    CHECK(!memcmp(p, rp, sizeof p));
    ql_optim_free(&o);
    ql_optim_free(&ref);
}

int main(void) {
    ql_world w;
    if (ql_world_detect(NULL, NULL, &w) != QL_OK || ql_comm_open(&w, &c) != QL_OK) {
        fprintf(stderr, "%s\n", ql_error_message());
        return 1;
    }
    R = ql_comm_size(c);
    me = ql_comm_rank(c);
    CHECK(R >= 2);
    test_reduce_scatter();
    test_allreduce();
    test_rank_order();
    test_agree();
    test_small();
    test_optim();
    double failed = check_failed_;
    ql_comm_allreduce_sum(c, &failed, 1, QL_DT_F64);
    ql_comm_close(c);
    if (me != 0) return failed > 0;
    return CHECK_DONE() || failed > 0;
}
