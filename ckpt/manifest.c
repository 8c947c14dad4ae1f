#include "ckpt/manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/sha256.h"
#include "manifest.pb-c.h"

/* self_sha256 is field 21, a string of 64 bytes: tag (21 << 3 | 2 = 170 as
 * a varint: 0xAA 0x01), length 0x40, then the digits. protobuf-c writes
 * fields in number order, so it is always the last 67 bytes. */
#define SELF_FIELD 21
static const uint8_t SELF_TAG[3] = {0xAA, 0x01, 0x40};
#define SELF_LEN (3 + 64)

void ql_ckpt_meta_free(ql_ckpt_meta *m) {
    free(m->config_yaml);
    free(m->tensors);
    free(m->shards);
    m->config_yaml = NULL;
    m->tensors = NULL;
    m->shards = NULL;
    m->n_tensors = m->n_shards = 0;
}

int ql_is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

ql_status ql_manifest_encode(const ql_ckpt_meta *m, uint8_t **buf, size_t *len) {
    Qlora__Ckpt__Manifest pm = QLORA__CKPT__MANIFEST__INIT;
    Qlora__Ckpt__DataCursor cur = QLORA__CKPT__DATA_CURSOR__INIT;
    Qlora__Ckpt__Schedule sch = QLORA__CKPT__SCHEDULE__INIT;
    Qlora__Ckpt__World w = QLORA__CKPT__WORLD__INIT;
    Qlora__Ckpt__BaseModel bm = QLORA__CKPT__BASE_MODEL__INIT;
    Qlora__Ckpt__Optimizer op = QLORA__CKPT__OPTIMIZER__INIT;
    Qlora__Ckpt__Data da = QLORA__CKPT__DATA__INIT;
    pm.format_version = m->format_version;
    pm.run_id = (char *)m->run_id;
    pm.step = m->step;
    pm.tokens_seen = m->tokens_seen;
    pm.samples_seen = m->samples_seen;
    pm.targets_seen = m->targets_seen;
    pm.epoch = m->cursor.epoch;
    cur.epoch = m->cursor.epoch;
    cur.index = m->cursor.index;
    pm.cursor = &cur;
    sch.kind = (char *)m->schedule.kind;
    sch.peak_lr = m->schedule.peak_lr;
    sch.warmup_steps = m->schedule.warmup_steps;
    sch.total_steps = m->schedule.total_steps;
    sch.index = m->schedule.index;
    pm.schedule = &sch;
    w.size = m->world.size;
    w.dp = m->world.dp;
    w.pp = m->world.pp;
    w.n_nodes = m->world.n_nodes;
    w.launcher = (char *)m->world.launcher;
    pm.world = &w;
    pm.config_yaml = m->config_yaml ? m->config_yaml : "";
    bm.path = (char *)m->base.path;
    bm.fingerprint = (char *)m->base.fingerprint;
    bm.model_type = (char *)m->base.model_type;
    bm.hidden_size = m->base.hidden_size;
    bm.intermediate_size = m->base.intermediate_size;
    bm.num_hidden_layers = m->base.num_hidden_layers;
    bm.num_attention_heads = m->base.num_attention_heads;
    bm.num_key_value_heads = m->base.num_key_value_heads;
    bm.vocab_size = m->base.vocab_size;
    pm.base_model = &bm;
    pm.n_params = m->n_params;
    op.name = "adamw";
    op.t = m->optim.t;
    op.nonfinite_in_a_row = m->optim.nonfinite_in_a_row;
    op.nonfinite_total = m->optim.nonfinite_total;
    op.skipped_total = m->optim.skipped_total;
    pm.optimizer = &op;
    da.rows = m->data.rows;
    da.sha256 = (char *)m->data.sha256;
    pm.data = &da;
    pm.created_utc = (char *)m->created_utc;
    pm.qlora_version = (char *)m->version;
    pm.elapsed_s = m->elapsed_s;

    size_t nt = (size_t)m->n_tensors, ns = (size_t)m->n_shards;
    Qlora__Ckpt__Tensor *ts = calloc(nt ? nt : 1, sizeof *ts);
    Qlora__Ckpt__Tensor **tp = calloc(nt ? nt : 1, sizeof *tp);
    int64_t *shapes = calloc(2 * (nt ? nt : 1), sizeof *shapes);
    Qlora__Ckpt__Shard *ss = calloc(ns ? ns : 1, sizeof *ss);
    Qlora__Ckpt__Shard **sp = calloc(ns ? ns : 1, sizeof *sp);
    ql_status st = QL_OK;
    if (!ts || !tp || !shapes || !ss || !sp) {
        st = ql_error(QL_ENOMEM, "out of memory encoding a manifest");
        goto out;
    }
    for (size_t i = 0; i < nt; i++) {
        const ql_ckpt_tensor *t = &m->tensors[i];
        qlora__ckpt__tensor__init(&ts[i]);
        ts[i].name = (char *)t->name;
        shapes[2 * i] = t->rows;
        shapes[2 * i + 1] = t->cols;
        ts[i].n_shape = 2;
        ts[i].shape = &shapes[2 * i];
        ts[i].dtype = "F32";
        ts[i].offset = t->offset;
        tp[i] = &ts[i];
    }
    for (size_t i = 0; i < ns; i++) {
        const ql_ckpt_shard *s = &m->shards[i];
        qlora__ckpt__shard__init(&ss[i]);
        ss[i].file = (char *)s->file;
        ss[i].rank = s->rank;
        ss[i].offset = s->offset;
        ss[i].length = s->length;
        ss[i].bytes = s->bytes;
        ss[i].checksum = (char *)s->checksum;
        ss[i].n_rng = 4;
        ss[i].rng = (uint64_t *)s->rng;
        sp[i] = &ss[i];
    }
    pm.n_tensors = nt;
    pm.tensors = tp;
    pm.n_shards = ns;
    pm.shards = sp;

    size_t body = qlora__ckpt__manifest__get_packed_size(&pm);
    uint8_t *b = malloc(body + SELF_LEN);
    if (!b) {
        st = ql_error(QL_ENOMEM, "out of memory encoding a manifest");
        goto out;
    }
    size_t got = qlora__ckpt__manifest__pack(&pm, b);
    if (got != body) {
        free(b);
        st = ql_error(QL_EINTERNAL, "manifest: packed %zu bytes, expected %zu", got, body);
        goto out;
    }
    uint8_t d[QL_SHA256_LEN];
    char hex[2 * QL_SHA256_LEN + 1];
    ql_sha256_buf(b, body, d);
    ql_sha256_hex(d, hex);
    memcpy(b + body, SELF_TAG, 3);
    memcpy(b + body + 3, hex, 64);
    *buf = b;
    *len = body + SELF_LEN;
out:
    free(ts);
    free(tp);
    free(shapes);
    free(ss);
    free(sp);
    return st;
}

static void copy_str(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "");
}

#define NEED(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            st = ql_error(QL_EFORMAT, __VA_ARGS__);                                                \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

ql_status ql_manifest_decode(const uint8_t *buf, size_t len, const char *path, ql_ckpt_meta *m) {
    memset(m, 0, sizeof *m);
    if (len < SELF_LEN || memcmp(buf + len - SELF_LEN, SELF_TAG, 3) != 0)
        return ql_error(QL_EFORMAT,
                        "%s: not a complete qlora manifest (%zu bytes; it does not end with its "
                        "checksum field)",
                        path, len);
    uint8_t d[QL_SHA256_LEN];
    char hex[2 * QL_SHA256_LEN + 1];
    ql_sha256_buf(buf, len - SELF_LEN, d);
    ql_sha256_hex(d, hex);
    if (memcmp(hex, buf + len - 64, 64) != 0)
        return ql_error(QL_EFORMAT,
                        "%s: checksum mismatch: the manifest's bytes hash to %.16s..., it records "
                        "%.16s... (the file is damaged)",
                        path, hex, (const char *)buf + len - 64);
    Qlora__Ckpt__Manifest *pm = qlora__ckpt__manifest__unpack(NULL, len, buf);
    if (!pm)
        return ql_error(QL_EFORMAT, "%s: not a valid manifest (protobuf decoding failed)", path);
    ql_status st = QL_OK;
    NEED(pm->format_version != 0, "%s: format_version is missing: not a qlora manifest", path);
    if (pm->format_version > QL_MANIFEST_FORMAT_VERSION) {
        st = ql_error(QL_EUNSUPPORTED,
                      "%s: format_version %u was written by a newer qlora (this one reads %d)",
                      path, pm->format_version, QL_MANIFEST_FORMAT_VERSION);
        goto out;
    }
    m->format_version = pm->format_version;
    NEED(pm->run_id && ql_is_hex(pm->run_id, QL_RUN_ID_LEN), "%s: run_id: expected %d hex digits",
         path, QL_RUN_ID_LEN);
    copy_str(m->run_id, sizeof m->run_id, pm->run_id);
    NEED(pm->cursor && pm->schedule && pm->world && pm->base_model && pm->optimizer && pm->data,
         "%s: a required section (cursor, schedule, world, base_model, optimizer, data) is missing",
         path);
    m->step = pm->step;
    m->tokens_seen = pm->tokens_seen;
    m->samples_seen = pm->samples_seen;
    m->targets_seen = pm->targets_seen;
    m->cursor.epoch = pm->cursor->epoch;
    m->cursor.index = pm->cursor->index;
    NEED(m->step >= 0 && m->cursor.epoch >= 0 && m->cursor.index >= 0,
         "%s: negative step or data cursor", path);
    copy_str(m->schedule.kind, sizeof m->schedule.kind, pm->schedule->kind);
    m->schedule.peak_lr = pm->schedule->peak_lr;
    m->schedule.warmup_steps = pm->schedule->warmup_steps;
    m->schedule.total_steps = pm->schedule->total_steps;
    m->schedule.index = pm->schedule->index;
    m->world.size = pm->world->size;
    m->world.dp = pm->world->dp;
    m->world.pp = pm->world->pp;
    m->world.n_nodes = pm->world->n_nodes;
    copy_str(m->world.launcher, sizeof m->world.launcher, pm->world->launcher);
    NEED(m->world.size >= 1, "%s: world.size %d: expected >= 1", path, m->world.size);
    const Qlora__Ckpt__BaseModel *bm = pm->base_model;
    copy_str(m->base.path, sizeof m->base.path, bm->path);
    copy_str(m->base.fingerprint, sizeof m->base.fingerprint, bm->fingerprint);
    copy_str(m->base.model_type, sizeof m->base.model_type, bm->model_type);
    m->base.hidden_size = bm->hidden_size;
    m->base.intermediate_size = bm->intermediate_size;
    m->base.num_hidden_layers = bm->num_hidden_layers;
    m->base.num_attention_heads = bm->num_attention_heads;
    m->base.num_key_value_heads = bm->num_key_value_heads;
    m->base.vocab_size = bm->vocab_size;
    m->optim.t = pm->optimizer->t;
    m->optim.nonfinite_in_a_row = pm->optimizer->nonfinite_in_a_row;
    m->optim.nonfinite_total = pm->optimizer->nonfinite_total;
    m->optim.skipped_total = pm->optimizer->skipped_total;
    m->data.rows = pm->data->rows;
    copy_str(m->data.sha256, sizeof m->data.sha256, pm->data->sha256);
    copy_str(m->created_utc, sizeof m->created_utc, pm->created_utc);
    copy_str(m->version, sizeof m->version, pm->qlora_version);
    m->elapsed_s = pm->elapsed_s;
    m->n_params = pm->n_params;
    NEED(m->n_params >= 0, "%s: n_params is negative", path);
    m->config_yaml = strdup(pm->config_yaml ? pm->config_yaml : "");
    if (!m->config_yaml) {
        st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
        goto out;
    }

    NEED(pm->n_shards == (size_t)m->world.size,
         "%s: %zu shards listed for a world of %d ranks: expected one per rank", path, pm->n_shards,
         m->world.size);
    m->shards = calloc(pm->n_shards, sizeof *m->shards);
    m->tensors = calloc(pm->n_tensors ? pm->n_tensors : 1, sizeof *m->tensors);
    if (!m->shards || !m->tensors) {
        st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    m->n_shards = (int)pm->n_shards;
    int64_t next = 0;
    for (size_t i = 0; i < pm->n_shards; i++) {
        const Qlora__Ckpt__Shard *s = pm->shards[i];
        ql_ckpt_shard *o = &m->shards[i];
        char want[48];
        ql_shard_name((int)i, m->world.size, want, sizeof want);
        NEED(s->rank == (int)i, "%s: shards[%zu] is rank %d: expected rank %zu", path, i, s->rank,
             i);
        NEED(s->file && !strcmp(s->file, want), "%s: shards[%zu].file '%s': expected '%s'", path, i,
             s->file ? s->file : "", want);
        NEED(s->offset == next && s->length >= 0 && s->length <= m->n_params - next,
             "%s: shards[%zu] covers [%" PRId64 ", %" PRId64 "): expected to start at %" PRId64
             " within [0, %" PRId64 ")",
             path, i, s->offset, s->offset + s->length, next, m->n_params);
        NEED(s->checksum && ql_is_hex(s->checksum, 64),
             "%s: shards[%zu].checksum: expected 64 hex digits", path, i);
        NEED(s->n_rng == 4, "%s: shards[%zu].rng: %zu words, expected 4", path, i, s->n_rng);
        NEED(s->bytes > 0, "%s: shards[%zu].bytes: expected > 0", path, i);
        copy_str(o->file, sizeof o->file, s->file);
        o->rank = s->rank;
        o->offset = s->offset;
        o->length = s->length;
        o->bytes = s->bytes;
        copy_str(o->checksum, sizeof o->checksum, s->checksum);
        memcpy(o->rng, s->rng, sizeof o->rng);
        next += s->length;
    }
    NEED(next == m->n_params, "%s: the shards cover %" PRId64 " of %" PRId64 " elements", path,
         next, m->n_params);
    m->n_tensors = (int)pm->n_tensors;
    for (size_t i = 0; i < pm->n_tensors; i++) {
        const Qlora__Ckpt__Tensor *t = pm->tensors[i];
        ql_ckpt_tensor *o = &m->tensors[i];
        NEED(t->name && strlen(t->name) < sizeof o->name,
             "%s: tensors[%zu]: name missing or too long", path, i);
        NEED(t->n_shape == 2 && t->shape[0] >= 0 && t->shape[1] >= 0,
             "%s: tensor %s: expected a 2-d shape", path, t->name);
        NEED(t->dtype && !strcmp(t->dtype, "F32"), "%s: tensor %s: dtype '%s', expected F32", path,
             t->name, t->dtype ? t->dtype : "");
        int in_range = t->offset >= 0 && t->offset <= m->n_params &&
                       (t->shape[0] == 0 || t->shape[1] == 0 ||
                        t->shape[0] <= (m->n_params - t->offset) / t->shape[1]);
        NEED(in_range,
             "%s: tensor %s [%" PRId64 ", %" PRId64 "] at %" PRId64 " lies outside the %" PRId64
             " elements",
             path, t->name, t->shape[0], t->shape[1], t->offset, m->n_params);
        copy_str(o->name, sizeof o->name, t->name);
        o->rows = t->shape[0];
        o->cols = t->shape[1];
        o->offset = t->offset;
    }
out:
    qlora__ckpt__manifest__free_unpacked(pm, NULL);
    if (st != QL_OK) ql_ckpt_meta_free(m);
    return st;
}

ql_status ql_manifest_read(const char *path, ql_ckpt_meta *m) {
    char *data;
    size_t len;
    memset(m, 0, sizeof *m);
    QL_TRY(ql_fs_read_file(path, &data, &len));
    ql_status st = ql_manifest_decode((const uint8_t *)data, len, path, m);
    free(data);
    return st;
}
