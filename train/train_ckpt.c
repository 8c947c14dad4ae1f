#include "train/train_ckpt.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "ckpt/compat.h"
#include "ckpt/fingerprint.h"
#include "ckpt/store.h"
#include "core/fsutil.h"
#include "model/lora.h"
#include "train/optim.h"

#define PATH_N (QL_CFG_PATH_MAX + 64)

struct ql_train_ckpt {
    ql_train_ckpt_opts o;
    int rank, size;
    char root[PATH_N];
    ql_dir_lock lock;
    ql_train_hooks hooks;
    ql_ckpt_meta now; /* this run's manifest template (rank 0's is written) */
    char *config_yaml;
    int64_t off, len; /* this rank's slice (the optimizer's) */
    /* What was resumed: the manifest, and m and v of this rank's slice
     * until the restore hook hands them to the optimizer. */
    int resumed;
    ql_ckpt_meta from;
    float *m, *v;
    /* The last committed checkpoint. */
    int64_t last_step;
    char last_dir[PATH_N];
    double last_time;
    float *host; /* staging for backends whose memory is not the host's */
};

/* --- before the run: resume or not --------------------------------------- */

static void root_of(const ql_config *c, char *buf, size_t n) {
    snprintf(buf, n, "%s/checkpoints", c->output_dir);
}

static ql_status candidates(const ql_config *c, const char *root, char ***dirs, int *n, char *note,
                            size_t note_n);

/* Modification time of `path` in nanoseconds; -1 when it cannot be read. */
static int64_t mtime_ns(const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return -1;
    return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* The run is over when resume: auto would take a checkpoint at or past
 * train.steps and OUTPUT_DIR/adapter was written after it: the adapter is
 * that checkpoint's (an adapter older than it, saved by an interrupt before
 * the run went on, is not). */
static int finished(const ql_config *c, const char *dir, int64_t step) {
    if (strcmp(c->resume, "auto") != 0 || step < c->train.steps) return 0;
    char *adapter = ql_fs_join(c->output_dir, "adapter/adapter_model.safetensors");
    char *manifest = ql_fs_join(dir, "manifest.pb");
    const int64_t a = mtime_ns(adapter), m = mtime_ns(manifest);
    free(adapter);
    free(manifest);
    return a >= 0 && m >= 0 && a >= m;
}

/* The first checkpoint a resume would try, before anything is loaded: a
 * configuration it refuses (the keys a resume cannot change) is refused
 * now, and *done_step is set when the run is over (finished()). Either
 * holds only for a checkpoint that verifies: a damaged one (or another
 * run's manifest) is left to the full check, which falls back past it; an
 * unreadable manifest too. */
static ql_status precheck(const ql_config *c, const char *root, int64_t *done_step) {
    char **dirs = NULL, note[1024];
    int n = 0;
    QL_TRY(candidates(c, root, &dirs, &n, note, sizeof note));
    ql_status st = QL_OK;
    char *mp = n > 0 ? ql_fs_join(dirs[0], "manifest.pb") : NULL;
    ql_ckpt_meta m;
    if (mp && ql_fs_exists(mp) && ql_manifest_read(mp, &m) == QL_OK) {
        const ql_status fixed = ql_ckpt_check_fixed_keys(&m, c);
        char why[QL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", fixed != QL_OK ? ql_error_message() : "");
        if (fixed != QL_OK || finished(c, dirs[0], m.step)) {
            ql_ckpt_meta v;
            memset(&v, 0, sizeof v);
            const ql_status ok = ql_ckpt_verify(
                dirs[0], (ql_file_locking)c->checkpoint.file_locking, NULL, &v, NULL);
            ql_ckpt_meta_free(&v);
            if (ok != QL_OK)
                ql_error_clear();
            else if (fixed != QL_OK)
                st = ql_error(fixed, "cannot resume from %s: %s", dirs[0], why);
            else
                *done_step = m.step;
        }
        ql_ckpt_meta_free(&m);
    } else {
        ql_error_clear();
    }
    free(mp);
    ql_ckpt_free_list(dirs, n);
    return st;
}

ql_status ql_train_ckpt_prepare(const ql_config *c, int *resuming, int64_t *done_step) {
    char root[PATH_N];
    root_of(c, root, sizeof root);
    *resuming = 0;
    *done_step = -1;
    if (!strcmp(c->resume, "auto") || !strcmp(c->resume, "never")) {
        int64_t *steps;
        int n;
        QL_TRY(ql_ckpt_list(root, &steps, &n));
        free(steps);
        if (!strcmp(c->resume, "auto")) {
            *resuming = n > 0;
            return n > 0 ? precheck(c, root, done_step) : QL_OK;
        }
        if (n > 0 && !c->overwrite_output_dir)
            return ql_error(QL_EINVAL,
                            "%s holds %d checkpoint(s) and resume is never; set resume: auto to "
                            "continue from them, or overwrite_output_dir: true to remove them",
                            root, n);
        if (n > 0) {
            /* Not under another run's feet: its lock must be free. */
            ql_dir_lock l;
            char warn[512];
            QL_TRY(ql_dir_lock_acquire(root, (ql_file_locking)c->checkpoint.file_locking, &l, warn,
                                       sizeof warn));
            ql_dir_lock_release(&l);
            ql_fs_remove_tree(root);
        }
        return QL_OK;
    }
    if (!ql_fs_is_dir(c->resume))
        return ql_error(QL_ENOTFOUND, "resume: %s: no such checkpoint directory", c->resume);
    *resuming = 1;
    return precheck(c, root, done_step);
}

/* The last step line of OUTPUT_DIR/metrics.jsonl (-1: none, or no file). */
static int64_t metrics_last_step(const ql_config *c) {
    char *path = ql_fs_join(c->output_dir, "metrics.jsonl"), *data = NULL;
    size_t len = 0;
    int64_t last = -1;
    if (path && ql_fs_read_file(path, &data, &len) == QL_OK) {
        for (const char *l = data; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            long long step;
            if (sscanf(l, "{\"step\": %lld", &step) == 1 && step > last) last = step;
        }
    } else {
        ql_error_clear();
    }
    free(data);
    free(path);
    return last;
}

/* The directories to try, in order, for resume: auto (this run's
 * checkpoints, falling back) or PATH (a checkpoint: that one alone; a
 * checkpoints or run directory: as auto there). Rank 0. */
static ql_status candidates(const ql_config *c, const char *root, char ***dirs, int *n, char *note,
                            size_t note_n) {
    if (!strcmp(c->resume, "auto")) return ql_ckpt_candidates(root, dirs, n, note, note_n);
    const char *p = c->resume;
    char *manifest = ql_fs_join(p, "manifest.pb");
    char *sub = ql_fs_join(p, "checkpoints");
    ql_status st = QL_OK;
    if (!manifest || !sub) {
        st = QL_ENOMEM;
    } else if (ql_fs_exists(manifest)) {
        *dirs = calloc(1, sizeof **dirs);
        (*dirs)[0] = strdup(p);
        *n = 1;
    } else {
        st = ql_ckpt_candidates(ql_fs_is_dir(sub) ? sub : p, dirs, n, note, note_n);
        if (st == QL_OK && *n == 0)
            st = ql_error(QL_ENOTFOUND,
                          "resume: %s: not a checkpoint (no manifest.pb) and no checkpoints in it",
                          p);
    }
    free(manifest);
    free(sub);
    return st;
}

/* --- the manifest of this run -------------------------------------------- */

static const char *schedule_name(int s) {
    return s == QL_SCHED_COSINE ? "cosine" : s == QL_SCHED_LINEAR ? "linear" : "constant";
}

/* Everything of the manifest that does not change from step to step. */
static ql_status build_template(ql_train_ckpt *t) {
    const ql_config *c = t->o.cfg;
    ql_ckpt_meta *m = &t->now;
    const ql_adapters *a = ql_llama_adapters(t->o.model);
    const ql_hf_config *hc = ql_llama_config(t->o.model);
    memset(m, 0, sizeof *m);
    m->format_version = QL_MANIFEST_FORMAT_VERSION;
    snprintf(m->schedule.kind, sizeof m->schedule.kind, "%s", schedule_name(c->train.schedule));
    m->schedule.peak_lr = c->train.lr;
    m->schedule.warmup_steps = c->train.warmup_steps;
    m->schedule.total_steps = c->train.steps;
    const ql_world *w = ql_comm_world(t->o.comm);
    m->world.size = t->size;
    m->world.dp = t->size;
    m->world.pp = 1;
    m->world.n_nodes = w ? w->n_nodes : -1;
    snprintf(m->world.launcher, sizeof m->world.launcher, "%s",
             w ? ql_launcher_name(w->launcher) : "singleton");
    t->config_yaml = ql_config_to_yaml(c);
    if (!t->config_yaml) return ql_error(QL_ENOMEM, "out of memory");
    m->config_yaml = t->config_yaml;
    snprintf(m->base.path, sizeof m->base.path, "%s", c->model);
    snprintf(m->base.model_type, sizeof m->base.model_type, "%s", hc->model_type);
    m->base.hidden_size = hc->hidden_size;
    m->base.intermediate_size = hc->intermediate_size;
    m->base.num_hidden_layers = hc->num_hidden_layers;
    m->base.num_attention_heads = hc->num_attention_heads;
    m->base.num_key_value_heads = hc->num_key_value_heads;
    m->base.vocab_size = hc->vocab_size;
    m->n_params = a->n;
    m->tensors = ql_calloc((size_t)(a->n_tensors ? a->n_tensors : 1), sizeof *m->tensors,
                           "the tensor table");
    if (!m->tensors) return QL_ENOMEM;
    m->n_tensors = a->n_tensors;
    for (int i = 0; i < a->n_tensors; i++) {
        snprintf(m->tensors[i].name, sizeof m->tensors[i].name, "%s", a->tensors[i].name);
        m->tensors[i].rows = a->tensors[i].rows;
        m->tensors[i].cols = a->tensors[i].cols;
        m->tensors[i].offset = a->tensors[i].offset;
    }
    m->data.rows = t->o.rows->n_rows;
    snprintf(m->version, sizeof m->version, "0.1.0");
    /* The fingerprints and the run id: rank 0 computes, every rank gets
     * them (the shards carry the run id). */
    ql_status st = QL_OK;
    if (t->rank == 0) {
        st = ql_model_fingerprint(c->model, m->base.fingerprint);
        ql_data_fingerprint(t->o.data, t->o.rows, m->data.sha256);
        if (st == QL_OK) st = ql_new_run_id(m->run_id);
    }
    QL_TRY(ql_comm_agree(t->o.comm, st));
    QL_TRY(ql_comm_bcast(t->o.comm, m->base.fingerprint, sizeof m->base.fingerprint, 0));
    QL_TRY(ql_comm_bcast(t->o.comm, m->data.sha256, sizeof m->data.sha256, 0));
    return ql_comm_bcast(t->o.comm, m->run_id, sizeof m->run_id, 0);
}

/* --- resume ----------------------------------------------------------------- */

/* params (the whole vector, on every rank) from the slices the ranks read. */
static ql_status set_params(ql_train_ckpt *t, const float *slice) {
    const ql_adapters *a = ql_llama_adapters(t->o.model);
    float *full = ql_malloc((size_t)(a->n ? a->n : 1) * sizeof *full, "the adapter vector");
    ql_status st = full ? QL_OK : QL_ENOMEM;
    if (st == QL_OK) {
        if (t->size > 1)
            st = ql_comm_allgather(t->o.comm, slice, full, a->n, QL_DT_F32);
        else
            memcpy(full, slice, (size_t)a->n * sizeof *full);
    }
    if (st == QL_OK) st = t->o.be->upload(a->params, full, (size_t)a->n * sizeof *full);
    free(full);
    return st;
}

/* One candidate: the manifest, the compatibility check (a refusal is final:
 * no fallback), then this rank's slice. *damaged = 1 when the checkpoint
 * itself is at fault (the next candidate may be tried). */
static ql_status try_one(ql_train_ckpt *t, const char *dir, float *p, int *damaged, char *notes,
                         size_t notes_n) {
    *damaged = 1;
    ql_ckpt_meta m;
    QL_TRY(ql_ckpt_read_meta(t->o.comm, dir, &m));
    /* The shards' sizes and attributes first: a manifest that is not theirs
     * (another run's) is damage, to fall back from, not a refusal. */
    ql_status st = QL_OK;
    for (int i = t->rank; i < m.n_shards && st == QL_OK; i += t->size)
        st = ql_ckpt_check_shard(dir, &m, i, t->o.cfg->checkpoint.file_locking, 0);
    st = ql_comm_agree(t->o.comm, st);
    if (st != QL_OK) {
        ql_ckpt_meta_free(&m);
        return st;
    }
    if (t->rank == 0) st = ql_ckpt_check_compat(&m, &t->now, t->o.cfg, notes, notes_n);
    st = ql_comm_agree(t->o.comm, st);
    if (st != QL_OK) {
        *damaged = 0;
        ql_ckpt_meta_free(&m);
        return ql_error_wrap(st, "cannot resume from %s: ", dir);
    }
    ql_ckpt_slice s = {.offset = t->off, .length = t->len, .params = p, .m = t->m, .v = t->v};
    int rng_ok = 0;
    st = ql_ckpt_load_slice(t->o.comm, dir, &m, t->o.cfg->checkpoint.file_locking, &s, &rng_ok);
    if (st != QL_OK) {
        ql_ckpt_meta_free(&m);
        return st;
    }
    *damaged = 0;
    st = set_params(t, p);
    st = ql_comm_agree(t->o.comm, st);
    if (st != QL_OK) {
        ql_ckpt_meta_free(&m);
        return st;
    }
    if (rng_ok) {
        ql_rng *r = ql_llama_rng(t->o.model);
        memcpy(r->s, s.rng, sizeof r->s);
    } else if (t->rank == 0 && t->o.log && t->o.cfg->lora.dropout > 0) {
        fprintf(t->o.log,
                "note: the checkpoint was written by %d rank(s), this run has %d: the dropout "
                "streams start afresh\n",
                m.world.size, t->size);
    }
    t->from = m;
    t->resumed = 1;
    snprintf(t->now.run_id, sizeof t->now.run_id, "%s", m.run_id);
    t->last_step = m.step;
    snprintf(t->last_dir, sizeof t->last_dir, "%s", dir);
    return QL_OK;
}

/* The list of candidate directories from rank 0 to every rank. */
static ql_status share_candidates(ql_train_ckpt *t, char ***dirs, int *n, char *note,
                                  size_t note_n) {
    ql_status st = QL_OK;
    *dirs = NULL;
    *n = 0;
    if (t->rank == 0) st = candidates(t->o.cfg, t->root, dirs, n, note, note_n);
    QL_TRY(ql_comm_agree(t->o.comm, st));
    int64_t count = *n;
    QL_TRY(ql_comm_bcast(t->o.comm, &count, sizeof count, 0));
    if (t->rank != 0) {
        *dirs = calloc((size_t)(count ? count : 1), sizeof **dirs);
        *n = (int)count;
    }
    char buf[PATH_N];
    for (int i = 0; i < *n; i++) {
        if (t->rank == 0) snprintf(buf, sizeof buf, "%s", (*dirs)[i]);
        QL_TRY(ql_comm_bcast(t->o.comm, buf, sizeof buf, 0));
        if (t->rank != 0) (*dirs)[i] = strdup(buf);
    }
    return QL_OK;
}

static ql_status resume(ql_train_ckpt *t) {
    const ql_config *c = t->o.cfg;
    if (!strcmp(c->resume, "never")) return QL_OK;
    char **dirs = NULL, note[1024] = "";
    int n = 0;
    QL_TRY(share_candidates(t, &dirs, &n, note, sizeof note));
    if (n == 0) {
        ql_ckpt_free_list(dirs, n);
        return QL_OK; /* auto, nothing there: a fresh start */
    }
    if (t->rank == 0 && t->o.log && *note) fprintf(t->o.log, "note: %s\n", note);
    float *p = ql_malloc((size_t)(t->len ? t->len : 1) * sizeof *p, "a parameter slice");
    ql_status st = ql_comm_agree(t->o.comm, p ? QL_OK : QL_ENOMEM);
    char why[4096] = "", notes[2048] = "";
    size_t used = 0;
    for (int i = 0; st == QL_OK && i < n; i++) {
        int damaged = 0;
        ql_status s = try_one(t, dirs[i], p, &damaged, notes, sizeof notes);
        if (s == QL_OK) {
            if (t->rank == 0 && t->o.log) {
                if (i > 0)
                    fprintf(t->o.log, "warning: resuming from the older checkpoint %s\n", dirs[i]);
                fprintf(t->o.log,
                        "resume: %s: step %" PRId64 ", epoch %" PRId64 " sample %" PRId64
                        ", written by %d rank(s)%s\n",
                        dirs[i], t->from.step, t->from.cursor.epoch, t->from.cursor.index,
                        t->from.world.size,
                        t->from.world.size != t->size ? " (re-partitioned)" : "");
                if (*notes) fprintf(t->o.log, "resume: settings changed since:\n%s", notes);
                const int64_t last = metrics_last_step(t->o.cfg);
                if (last > t->from.step)
                    fprintf(t->o.log,
                            "resume: metrics.jsonl goes on to step %" PRId64
                            ", past this checkpoint: steps %" PRId64 "-%" PRId64
                            " run again (their lines are replaced)\n",
                            last, t->from.step + 1, last);
            }
            break;
        }
        if (!damaged || n == 1) {
            st = s; /* refused, or the one checkpoint there is damaged */
            break;
        }
        /* Damaged: say so and fall back to the previous one. */
        if (t->rank == 0 && t->o.log)
            fprintf(t->o.log, "warning: the checkpoint %s is damaged: %s%s\n", dirs[i],
                    ql_error_message(), i + 1 < n ? "; falling back to the previous one" : "");
        if (used < sizeof why)
            used += (size_t)snprintf(why + used, sizeof why - used, "%s%s: %s", used ? "; " : "",
                                     dirs[i], ql_error_message());
        if (i + 1 == n)
            st = ql_error(QL_EFORMAT,
                          "no usable checkpoint in %s (%s); set resume: never (and "
                          "overwrite_output_dir: true) to start over",
                          strcmp(c->resume, "auto") ? c->resume : t->root, why);
    }
    free(p);
    ql_ckpt_free_list(dirs, n);
    return st;
}

static ql_status hook_restore(void *ctx, ql_train_state *s) {
    ql_train_ckpt *t = ctx;
    if (!t->resumed) return QL_OK;
    ql_optim *o = s->optim;
    if (o->off != t->off || o->len != t->len)
        return ql_error(QL_EINTERNAL,
                        "optimizer slice [%" PRId64 ", +%" PRId64
                        ") is not the checkpoint's [%" PRId64 ", +%" PRId64 ")",
                        o->off, o->len, t->off, t->len);
    size_t bytes = (size_t)t->len * sizeof(float);
    if (t->len > 0) {
        QL_TRY(o->be->upload(o->m, t->m, bytes));
        QL_TRY(o->be->upload(o->v, t->v, bytes));
    }
    free(t->m);
    free(t->v);
    t->m = t->v = NULL;
    o->t = t->from.optim.t;
    o->nonfinite_in_a_row = t->from.optim.nonfinite_in_a_row;
    o->nonfinite_total = t->from.optim.nonfinite_total;
    s->step = t->from.step;
    s->cursor = t->from.cursor;
    s->samples_seen = t->from.samples_seen;
    s->tokens_seen = t->from.tokens_seen;
    s->targets_seen = t->from.targets_seen;
    s->skipped = t->from.optim.skipped_total;
    s->elapsed_s = t->from.elapsed_s;
    return QL_OK;
}

/* --- saving ------------------------------------------------------------------- */

static void utc_now(char *buf, size_t n) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static ql_status save(ql_train_ckpt *t, const ql_train_state *s) {
    double t0 = ql_now();
    ql_ckpt_meta *m = &t->now;
    m->step = s->step;
    m->tokens_seen = s->tokens_seen;
    m->samples_seen = s->samples_seen;
    m->targets_seen = s->targets_seen;
    m->cursor = s->cursor;
    m->schedule.index = s->step;
    m->optim.t = s->optim->t;
    m->optim.nonfinite_in_a_row = s->optim->nonfinite_in_a_row;
    m->optim.nonfinite_total = s->optim->nonfinite_total;
    m->optim.skipped_total = s->skipped;
    m->elapsed_s = s->elapsed_s;
    utc_now(m->created_utc, sizeof m->created_utc);

    const ql_adapters *a = ql_llama_adapters(t->o.model);
    const ql_optim *o = s->optim;
    ql_ckpt_slice sl = {.offset = t->off, .length = t->len};
    memcpy(sl.rng, ql_llama_rng(t->o.model)->s, sizeof sl.rng);
    ql_status st = QL_OK;
    if (o->host_memory) {
        sl.params = a->params + t->off;
        sl.m = o->m;
        sl.v = o->v;
    } else {
        size_t bytes = (size_t)t->len * sizeof(float);
        if (!t->host) t->host = ql_malloc(3 * bytes + 1, "checkpoint staging");
        if (!t->host) return QL_ENOMEM;
        sl.params = t->host;
        sl.m = t->host + t->len;
        sl.v = t->host + 2 * t->len;
        if (t->len > 0) {
            st = t->o.be->download(sl.params, a->params + t->off, bytes);
            if (st == QL_OK) st = t->o.be->download(sl.m, o->m, bytes);
            if (st == QL_OK) st = t->o.be->download(sl.v, o->v, bytes);
        }
    }
    QL_TRY(ql_comm_agree(t->o.comm, st));
    ql_ckpt_io io = {.root = t->root,
                     .keep_last = t->o.cfg->checkpoint.keep_last,
                     .locking = (ql_file_locking)t->o.cfg->checkpoint.file_locking};
    ql_ckpt_saved out;
    st = ql_ckpt_save(t->o.comm, &io, m, &sl, &out);
    if (st != QL_OK && t->last_step >= 0)
        return ql_error_wrap(st,
                             "checkpoint at step %" PRId64 " failed (the previous one, %s, is "
                             "intact): ",
                             s->step, t->last_dir);
    if (st != QL_OK)
        return ql_error_wrap(st,
                             "checkpoint at step %" PRId64 " failed (no earlier checkpoint; "
                             "nothing half-written is left): ",
                             s->step);
    t->last_step = s->step;
    snprintf(t->last_dir, sizeof t->last_dir, "%s", out.dir);
    t->last_time = ql_now();
    if (t->rank == 0 && t->o.log) {
        fprintf(t->o.log, "checkpoint: step %" PRId64 " -> %s (%.1f MiB in %.2f s)\n", s->step,
                out.dir, (double)out.bytes / (1 << 20), ql_now() - t0);
        if (*out.warning) fprintf(t->o.log, "%s\n", out.warning);
        fflush(t->o.log);
    }
    return QL_OK;
}

static ql_status hook_boundary(void *ctx, const ql_train_state *s, int *halt) {
    ql_train_ckpt *t = ctx;
    const ql_config *c = t->o.cfg;
    /* [preemption requested on some rank, rank 0's clock says it is time] */
    double flags[2] = {t->o.preempt && *t->o.preempt ? 1.0 : 0.0, 0.0};
    if (t->rank == 0 && c->checkpoint.every_minutes > 0 &&
        ql_now() - t->last_time >= 60.0 * c->checkpoint.every_minutes)
        flags[1] = 1.0;
    if (t->size > 1) QL_TRY(ql_comm_allreduce_sum(t->o.comm, flags, 2, QL_DT_F64));
    int preempt = flags[0] > 0, due = flags[1] > 0 || preempt ||
                                      (c->checkpoint.every_steps > 0 && s->step > 0 &&
                                       s->step % c->checkpoint.every_steps == 0);
    /* Step 0, or the state the last checkpoint holds: nothing new to save. */
    if (due && s->step > 0 && s->step != t->last_step) QL_TRY(save(t, s));
    /* Preempted at the last step: the run is over, it ends as usual. */
    *halt = preempt && s->step < c->train.steps;
    return QL_OK;
}

/* --- open/close ------------------------------------------------------------------ */

ql_status ql_train_ckpt_open(const ql_train_ckpt_opts *o, ql_train_ckpt **out) {
    *out = NULL;
    ql_train_ckpt *t = ql_calloc(1, sizeof *t, "checkpoint state");
    if (!t) return QL_ENOMEM;
    t->o = *o;
    t->rank = ql_comm_rank(o->comm);
    t->size = ql_comm_size(o->comm);
    t->lock.fd = -1;
    t->last_step = -1;
    t->last_time = ql_now();
    root_of(o->cfg, t->root, sizeof t->root);
    t->hooks = (ql_train_hooks){.ctx = t, .restore = hook_restore, .boundary = hook_boundary};
    const ql_adapters *a = ql_llama_adapters(o->model);
    ql_dist_slice(a->n, t->size, t->rank, &t->off, &t->len);

    /* Rank 0 holds the lock on the checkpoints directory for the run. */
    ql_status st = QL_OK;
    if (t->rank == 0) {
        char warn[512];
        st = ql_fs_mkdirs(t->root);
        if (st == QL_OK)
            st = ql_dir_lock_acquire(t->root, (ql_file_locking)o->cfg->checkpoint.file_locking,
                                     &t->lock, warn, sizeof warn);
        if (st == QL_OK && *warn && o->log) fprintf(o->log, "%s\n", warn);
    }
    st = ql_comm_agree(o->comm, st);
    if (st == QL_OK) st = build_template(t);
    if (st == QL_OK) {
        size_t bytes = (size_t)(t->len ? t->len : 1) * sizeof(float);
        t->m = ql_malloc(bytes, "AdamW m (resume)");
        t->v = ql_malloc(bytes, "AdamW v (resume)");
        st = t->m && t->v ? QL_OK : QL_ENOMEM;
        st = ql_comm_agree(o->comm, st);
    }
    if (st == QL_OK) st = resume(t);
    if (st != QL_OK) {
        ql_train_ckpt_close(t);
        return st;
    }
    if (t->resumed) {
        t->last_time = ql_now();
    } else { /* nothing for the optimizer: no need to hold the buffers */
        free(t->m);
        free(t->v);
        t->m = t->v = NULL;
    }
    *out = t;
    return QL_OK;
}

const ql_train_hooks *ql_train_ckpt_hooks(ql_train_ckpt *t) { return &t->hooks; }

int64_t ql_train_ckpt_last(const ql_train_ckpt *t, const char **dir) {
    if (dir) *dir = t->last_dir;
    return t->last_step;
}

int64_t ql_train_ckpt_resumed(const ql_train_ckpt *t) { return t->resumed ? t->from.step : 0; }

void ql_train_ckpt_close(ql_train_ckpt *t) {
    if (!t) return;
    ql_dir_lock_release(&t->lock);
    free(t->now.tensors);
    free(t->config_yaml);
    if (t->resumed) ql_ckpt_meta_free(&t->from);
    free(t->m);
    free(t->v);
    free(t->host);
    free(t);
}
