/* The NCCL device communicator (dist/comm_nccl.c) on this machine's GPU: a
 * world of one rank, so the collectives are copies, but every part of the
 * path runs: the unique id, the non-blocking ncclCommInitRankConfig and its
 * polling, the own stream, the grouped ncclReduce / ncclBroadcast over the
 * slice partition (in place and not), ncclAllReduce, ncclCommFinalize. The
 * results must be the input bits. Exit 77 without a GPU or without NCCL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dist/comm.h"
#include "kernels/cuda_api.h"

int main(void) {
#ifndef QL_HAVE_NCCL
    printf("skip: built without NCCL\n");
    return 77;
#else
    if (ql_cuda_device_count() < 1) {
        printf("skip: no CUDA device\n");
        return 77;
    }
    ql_world w;
    ql_comm *host = NULL, *dev = NULL;
    CHECK(ql_world_detect(NULL, NULL, &w) == QL_OK);
    CHECK(ql_comm_open(&w, &host) == QL_OK);
    int device = -2;
    CHECK(ql_comm_bind_device(host, &device) == QL_OK && device == 0);
    ql_status st = ql_comm_open_device(host, &dev);
    CHECKF(st == QL_OK, "%s", ql_error_message());
    if (st != QL_OK) return CHECK_DONE();
    CHECK(ql_comm_device_memory(dev) && !ql_comm_device_memory(host));
    CHECK(ql_comm_size(dev) == 1 && ql_comm_rank(dev) == 0);

    enum { N = 100003 };
    float *h = malloc(N * sizeof *h), *back = malloc(N * sizeof *back);
    for (int i = 0; i < N; i++) h[i] = (float)i * 0.25f - 7.0f;
    void *a = NULL, *b = NULL;
    CHECK(ql_cuda_malloc(N * sizeof(float), &a) == QL_OK);
    CHECK(ql_cuda_malloc(N * sizeof(float), &b) == QL_OK);
    CHECK(ql_cuda_upload(a, h, N * sizeof(float)) == QL_OK);
    CHECK(ql_cuda_memset(b, 0, N * sizeof(float), NULL) == QL_OK);

    CHECK(ql_comm_reduce_scatter_sum(dev, a, b, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, b, N * sizeof(float)) == QL_OK);
    CHECK(!memcmp(back, h, N * sizeof(float)));
    CHECK(ql_comm_reduce_scatter_sum(dev, a, a, N, QL_DT_F32) == QL_OK); /* in place */
    CHECK(ql_comm_allgather(dev, a, b, N, QL_DT_F32) == QL_OK);
    CHECK(ql_comm_allgather(dev, b, b, N, QL_DT_F32) == QL_OK); /* in place */
    CHECK(ql_cuda_download(back, b, N * sizeof(float)) == QL_OK);
    CHECK(!memcmp(back, h, N * sizeof(float)));
    CHECK(ql_comm_allreduce_sum(dev, b, N, QL_DT_F32) == QL_OK);
    CHECK(ql_cuda_download(back, b, N * sizeof(float)) == QL_OK);
    CHECK(!memcmp(back, h, N * sizeof(float)));
    /* agree and bcast go through the host communicator */
    CHECK(ql_comm_agree(dev, QL_OK) == QL_OK);
    CHECK(ql_comm_agree(dev, ql_error(QL_EIO, "disk full")) == QL_EIO);
    CHECK(ql_comm_failed_rank(dev) == 0);

    ql_cuda_free(a);
    ql_cuda_free(b);
    free(h);
    free(back);
    CHECK(ql_comm_close(dev) == QL_OK);
    CHECK(ql_comm_close(host) == QL_OK);
    return CHECK_DONE();
#endif
}
