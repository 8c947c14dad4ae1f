/* qlora ckpt verify|inspect DIR: check a checkpoint's files against its
 * manifest, or print what it holds (docs/checkpoint-format.md). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/store.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "launcher/cli_flags.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: qlora ckpt verify DIR [--no-lock]\n"
            "       qlora ckpt inspect DIR [--tensors] [--no-lock]\n"
            "\n"
            "DIR is a checkpoint (OUT/checkpoints/step-NNNNNNNN), a checkpoints directory\n"
            "(OUT/checkpoints) or a run directory (OUT).\n"
            "\n"
            "verify   checks the manifest (its own checksum, format version, shard table) and\n"
            "         every shard: present, its size, its HDF5 attributes and datasets, its\n"
            "         SHA-256. Prints one line per fault naming the file. Given a checkpoints\n"
            "         or run directory it checks every checkpoint there and that LATEST names\n"
            "         one that verifies.\n"
            "inspect  prints step, data position, world, base model, optimizer state, tensor\n"
            "         and shard tables and a summary of the configuration (LATEST's\n"
            "         checkpoint for a checkpoints or run directory). --tensors lists every\n"
            "         tensor (otherwise the first few).\n"
            "--no-lock  open the HDF5 files without file locking (checkpoint.file_locking: off)\n"
            "\n"
            "exit status: 0 every check passed, 1 a fault or error (named on stderr), 2 bad\n"
            "command line\n");
}

/* DIR itself when it holds a manifest.pb; else its checkpoints directory. */
static char *checkpoints_root(const char *dir) {
    char *c = ql_fs_join(dir, "checkpoints");
    if (c && ql_fs_is_dir(c)) return c;
    free(c);
    return strdup(dir);
}

static int is_checkpoint(const char *dir) {
    char *m = ql_fs_join(dir, "manifest.pb");
    int yes = m && ql_fs_exists(m);
    free(m);
    return yes || ql_ckpt_parse_step(strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir) >= 0;
}

static void human(double b, char *buf, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static int verify_root(const char *root, ql_file_locking lk) {
    int64_t *steps;
    int n;
    ql_status st = ql_ckpt_list(root, &steps, &n);
    if (st != QL_OK) return ql_report(st);
    if (n == 0) {
        fprintf(stderr, "qlora ckpt verify: %s holds no checkpoint (step-NNNNNNNN directories)\n",
                root);
        return QL_EXIT_ERROR;
    }
    char why[512];
    int64_t latest = ql_ckpt_read_latest(root, why, sizeof why);
    int bad = 0, latest_ok = 0;
    for (int i = 0; i < n; i++) {
        char name[40];
        ql_ckpt_step_name(steps[i], name, sizeof name);
        char *d = ql_fs_join(root, name);
        int faults = 0;
        st = ql_ckpt_verify(d, lk, stderr, NULL, &faults);
        printf("%s  %s%s\n", st == QL_OK ? "ok   " : "FAULT", d,
               steps[i] == latest ? "  (LATEST)" : "");
        if (st != QL_OK) bad++;
        if (st == QL_OK && steps[i] == latest) latest_ok = 1;
        free(d);
    }
    free(steps);
    if (latest == -1) fprintf(stderr, "FAULT %s/LATEST: missing\n", root);
    if (latest == -2) fprintf(stderr, "FAULT %s\n", why);
    if (latest >= 0 && !latest_ok)
        fprintf(stderr, "FAULT %s/LATEST: names step-%08" PRId64 ", which %s\n", root, latest,
                "does not verify or does not exist");
    if (bad || !latest_ok) {
        fprintf(stderr, "qlora ckpt verify: %d of %d checkpoint(s) damaged%s\n", bad, n,
                latest_ok ? "" : "; LATEST does not name a good checkpoint");
        return QL_EXIT_ERROR;
    }
    printf("%d checkpoint(s) verified; LATEST = step-%08" PRId64 "\n", n, latest);
    return QL_EXIT_OK;
}

static int verify(const char *dir, ql_file_locking lk) {
    if (!ql_fs_is_dir(dir)) {
        fprintf(stderr, "qlora ckpt verify: %s: not a directory\n", dir);
        return QL_EXIT_ERROR;
    }
    if (!is_checkpoint(dir)) {
        char *root = checkpoints_root(dir);
        int rc = verify_root(root, lk);
        free(root);
        return rc;
    }
    ql_ckpt_meta m;
    int faults = 0;
    ql_status st = ql_ckpt_verify(dir, lk, stderr, &m, &faults);
    if (st != QL_OK) {
        fprintf(stderr, "qlora ckpt verify: %s: %d fault(s)\n", dir, faults);
        return QL_EXIT_ERROR;
    }
    char sz[32];
    int64_t total = 0;
    for (int i = 0; i < m.n_shards; i++) total += m.shards[i].bytes;
    human((double)total, sz, sizeof sz);
    printf("ok  %s: step %" PRId64 ", %d shard(s), %s, every checksum matches\n", dir, m.step,
           m.n_shards, sz);
    ql_ckpt_meta_free(&m);
    return QL_EXIT_OK;
}

static const char *choice(const char *choices, int idx) {
    static char buf[64];
    const char *p = choices;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    snprintf(buf, sizeof buf, "%.*s", p ? (int)strcspn(p, "|") : 1, p ? p : "?");
    return buf;
}

static void print_config(const char *yaml) {
    ql_config *c = calloc(1, sizeof *c);
    if (!c) return;
    if (ql_config_parse(yaml, strlen(yaml), "the checkpoint's configuration", NULL, 0, c) !=
        QL_OK) {
        printf("config      (unreadable: %s)\n", ql_error_message());
        free(c);
        return;
    }
    char targets[200] = "";
    for (int j = 0; j < QL_CFG_N_TARGETS; j++)
        if (c->lora.targets & (1u << j)) {
            if (*targets) strcat(targets, ",");
            strcat(targets, ql_config_target_name(j));
        }
    printf("config      model %s, data %s, seed %" PRId64 ", backend %s\n", c->model, c->data.train,
           c->seed, c->backend);
    printf("            lora r %" PRId64 ", alpha %g, dropout %g, targets %s%s\n", c->lora.r,
           c->lora.alpha, c->lora.dropout, targets, c->lora.use_rslora ? ", rsLoRA" : "");
    printf("            train steps %" PRId64 ", global_batch %" PRId64 ", micro_batch %" PRId64
           ", lr %g %s, warmup %" PRId64 ", max_seq_len %" PRId64 ", packing %s\n",
           c->train.steps, c->train.global_batch, c->train.micro_batch, c->train.lr,
           choice("cosine|linear|constant", c->train.schedule), c->train.warmup_steps,
           c->data.max_seq_len, c->data.packing ? "on" : "off");
    printf("            checkpoint every %" PRId64 " steps / %g min, keep_last %" PRId64 "\n",
           c->checkpoint.every_steps, c->checkpoint.every_minutes, c->checkpoint.keep_last);
    free(c);
}

static int inspect(const char *dir, int all_tensors, ql_file_locking lk) {
    char *path = NULL;
    if (is_checkpoint(dir)) {
        path = strdup(dir);
    } else {
        char *root = checkpoints_root(dir);
        char why[512];
        int64_t latest = ql_ckpt_read_latest(root, why, sizeof why);
        if (latest < 0) {
            fprintf(stderr, "qlora ckpt inspect: %s: %s\n", root,
                    latest == -1 ? "no LATEST (not a checkpoint or checkpoints directory)" : why);
            free(root);
            return QL_EXIT_ERROR;
        }
        char name[40];
        ql_ckpt_step_name(latest, name, sizeof name);
        path = ql_fs_join(root, name);
        free(root);
    }
    char *mp = ql_fs_join(path, "manifest.pb");
    ql_ckpt_meta m;
    ql_status st = ql_manifest_read(mp, &m);
    free(mp);
    if (st != QL_OK) {
        free(path);
        return ql_report(st);
    }
    (void)lk;
    char sz[32];
    int64_t total = 0;
    for (int i = 0; i < m.n_shards; i++) total += m.shards[i].bytes;
    printf("checkpoint  %s\n", path);
    printf("format      %u, written by qlora %s at %s\n", m.format_version, m.version,
           m.created_utc);
    printf("run         %s\n", m.run_id);
    printf("step        %" PRId64 " (schedule %s at %" PRId64 " of %" PRId64
           ", peak lr %g, warmup %" PRId64 ")\n",
           m.step, m.schedule.kind, m.schedule.index, m.schedule.total_steps, m.schedule.peak_lr,
           m.schedule.warmup_steps);
    printf("data        next sample: epoch %" PRId64 ", index %" PRId64 " of %" PRId64
           " rows; seen %" PRId64 " samples, %" PRId64 " tokens, %" PRId64
           " targets; data fingerprint %.16s\n",
           m.cursor.epoch, m.cursor.index, m.data.rows, m.samples_seen, m.tokens_seen,
           m.targets_seen, m.data.sha256);
    printf("time        %.1f s of training\n", m.elapsed_s);
    printf("world       %d rank(s) (dp %d, pp %d), %d node(s), launched by %s\n", m.world.size,
           m.world.dp, m.world.pp, m.world.n_nodes, m.world.launcher);
    printf("base model  %s (%s, %" PRId64 " layers, hidden %" PRId64 ", vocab %" PRId64
           "), fingerprint %.16s\n",
           m.base.path, m.base.model_type, m.base.num_hidden_layers, m.base.hidden_size,
           m.base.vocab_size, m.base.fingerprint);
    printf("optimizer   adamw, t %" PRId64 ", non-finite steps %" PRId64 " (%" PRId64
           " in a row), skipped steps %" PRId64 "\n",
           m.optim.t, m.optim.nonfinite_total, m.optim.nonfinite_in_a_row, m.optim.skipped_total);
    human((double)m.n_params * 4, sz, sizeof sz);
    printf("adapters    %d tensors, %" PRId64 " parameters (%s float32 each for params, m, v)\n",
           m.n_tensors, m.n_params, sz);
    int show = all_tensors ? m.n_tensors : (m.n_tensors < 6 ? m.n_tensors : 4);
    for (int i = 0; i < show; i++)
        printf("  %-72s [%" PRId64 ", %" PRId64 "] at %" PRId64 "\n", m.tensors[i].name,
               m.tensors[i].rows, m.tensors[i].cols, m.tensors[i].offset);
    if (show < m.n_tensors) printf("  ... %d more (--tensors lists them)\n", m.n_tensors - show);
    human((double)total, sz, sizeof sz);
    printf("shards      %d, %s in all\n", m.n_shards, sz);
    for (int i = 0; i < m.n_shards; i++) {
        char b[32];
        human((double)m.shards[i].bytes, b, sizeof b);
        printf("  %s  rank %d  [%" PRId64 ", %" PRId64 ")  %s  checksum %.16s...\n",
               m.shards[i].file, m.shards[i].rank, m.shards[i].offset,
               m.shards[i].offset + m.shards[i].length, b, m.shards[i].checksum);
    }
    print_config(m.config_yaml);
    ql_ckpt_meta_free(&m);
    free(path);
    return QL_EXIT_OK;
}

int ql_cmd_ckpt(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? QL_EXIT_USAGE : QL_EXIT_OK;
    }
    const char *sub = argv[1], *dir = NULL;
    int all_tensors = 0;
    ql_file_locking lk = QL_LOCK_BEST_EFFORT;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--tensors") && !strcmp(sub, "inspect")) {
            all_tensors = 1;
        } else if (!strcmp(argv[i], "--no-lock")) {
            lk = QL_LOCK_OFF;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return QL_EXIT_OK;
        } else if (argv[i][0] == '-' || dir) {
            char cmd[64];
            snprintf(cmd, sizeof cmd, "ckpt %s", sub);
            return ql_cli_usage_error(cmd, "unexpected argument '%s'", argv[i]);
        } else {
            dir = argv[i];
        }
    }
    if (strcmp(sub, "verify") != 0 && strcmp(sub, "inspect") != 0) {
        fprintf(stderr, "qlora ckpt: unknown subcommand '%s' (there are: verify, inspect)\n", sub);
        return QL_EXIT_USAGE;
    }
    if (!dir) {
        usage(stderr);
        return QL_EXIT_USAGE;
    }
    return !strcmp(sub, "verify") ? verify(dir, lk) : inspect(dir, all_tensors, lk);
}
