/* A checkpoint's manifest.pb (proto/manifest.proto) as a C struct, encoded
 * and decoded with protobuf-c, checked on the way in.
 *
 * The manifest's last field (self_sha256, field 21) is the SHA-256 of every
 * byte before it, so a flipped byte anywhere in the manifest is found even
 * where protobuf would still decode (docs/checkpoint-format.md). */
#ifndef QL_CKPT_MANIFEST_H
#define QL_CKPT_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt/shard.h"
#include "core/status.h"
#include "data/order.h"

#define QL_MANIFEST_FORMAT_VERSION 1
#define QL_CKPT_NAME_MAX 200
#define QL_SHA256_HEX 65

typedef struct ql_ckpt_tensor {
    char name[QL_CKPT_NAME_MAX];
    int64_t rows, cols; /* shape [rows, cols], float32 */
    int64_t offset;     /* in the flat vector */
} ql_ckpt_tensor;

typedef struct ql_ckpt_shard {
    char file[48]; /* "shard-00000-of-00004.h5" */
    int rank;
    int64_t offset, length, bytes;
    char checksum[QL_SHA256_HEX]; /* ckpt/checksum.h */
    uint64_t rng[4];
} ql_ckpt_shard;

typedef struct ql_ckpt_base {
    char path[4096];
    char fingerprint[QL_SHA256_HEX];
    char model_type[64];
    int64_t hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
        num_key_value_heads, vocab_size;
} ql_ckpt_base;

typedef struct ql_ckpt_meta {
    uint32_t format_version;
    char run_id[QL_RUN_ID_LEN + 1];
    int64_t step, tokens_seen, samples_seen, targets_seen;
    ql_data_cursor cursor;
    struct {
        char kind[16];
        double peak_lr;
        int64_t warmup_steps, total_steps, index;
    } schedule;
    struct {
        int size, dp, pp, n_nodes;
        char launcher[16];
    } world;
    char *config_yaml; /* malloc'd */
    ql_ckpt_base base;
    int64_t n_params;
    ql_ckpt_tensor *tensors; /* malloc'd [n_tensors] */
    int n_tensors;
    ql_ckpt_shard *shards; /* malloc'd [n_shards], in rank order */
    int n_shards;
    struct {
        int64_t t, nonfinite_in_a_row, nonfinite_total, skipped_total;
    } optim;
    struct {
        int64_t rows;
        char sha256[QL_SHA256_HEX];
    } data;
    char created_utc[32];
    char version[32];
    double elapsed_s;
} ql_ckpt_meta;

void ql_ckpt_meta_free(ql_ckpt_meta *m);

/* Serialized manifest (self_sha256 appended) into a malloc'd buffer. */
ql_status ql_manifest_encode(const ql_ckpt_meta *m, uint8_t **buf, size_t *len);
/* Decodes and checks: the self checksum, the format version, the shard
 * table (one shard per rank, in order, covering [0, n_params) without gaps,
 * canonical file names, 64-digit checksums), the tensor table (in range).
 * `path` names the file in messages. */
ql_status ql_manifest_decode(const uint8_t *buf, size_t len, const char *path, ql_ckpt_meta *m);
ql_status ql_manifest_read(const char *path, ql_ckpt_meta *m);

/* 1 if s is n lowercase hex digits. */
int ql_is_hex(const char *s, size_t n);

#endif
