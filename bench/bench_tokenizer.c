/* Tokenization throughput, qlora against Hugging Face `tokenizers`, side by
 * side in one run.
 *
 *   bench_tokenizer [--python PY] [--reps N] [--json PATH] [--model NAME=PATH]...
 *
 * Run from the repository root. The text is the reference test's documents
 * (tests/fixtures/tokenizer/docs.bin.gz, 1.25 MB of code, prose and 20
 * languages); each document is one encode call on one thread, for both sides.
 * The Python side (bench/tokenizer_hf.py, run with PY, default
 * .venv/bin/python, under RAYON_NUM_THREADS=1) times Tokenizer.encode(doc,
 * add_special_tokens=False) over the same documents and returns a checksum
 * of its ids, which must equal ours. Both report the best of N passes (the
 * word caches of both are warm after the first). Models default to SmolLM2
 * (from the cache) and the fixture tokenizers. --json defaults to
 * bench/results/tokenizer-<hostname>.json. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "data/tokenizer.h"

typedef struct doc {
    const char *p;
    size_t n;
} doc;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static unsigned char *read_gz(const char *path, size_t *n) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    size_t cap = 1 << 22, len = 0, got;
    unsigned char *p = malloc(cap);
    while (p && (got = fread(p + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) p = realloc(p, cap *= 2);
    }
    if (pclose(f) != 0) {
        free(p);
        return NULL;
    }
    *n = len;
    return p;
}

/* A JSON field from the Python side's one-line output. */
static int field(const char *json, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *s = strstr(json, pat);
    if (!s) return 0;
    s += strlen(pat);
    if (*s == '"') s++;
    size_t i = 0;
    while (*s && *s != '"' && *s != ',' && *s != '}' && i + 1 < cap) out[i++] = *s++;
    out[i] = 0;
    return 1;
}

typedef struct result {
    const char *name;
    double mbs_ql, mbs_hf, ratio;
    size_t ids;
    int same;
    char hf_version[32];
} result;

static int run_one(const char *name, const char *path, const char *python, int reps,
                   const doc *docs, size_t n_docs, size_t bytes, result *r) {
    ql_tokenizer *t;
    if (ql_tokenizer_load(path, &t) != QL_OK) {
        fprintf(stderr, "%s: %s\n", name, ql_error_message());
        return 0;
    }
    ql_ids ids = {0};
    double best = 1e30;
    uint64_t h = 0xCBF29CE484222325ull;
    size_t n_ids = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = now();
        for (size_t i = 0; i < n_docs; i++) {
            ids.n = 0;
            if (ql_tokenizer_encode(t, docs[i].p, docs[i].n, QL_TOK_PARSE_SPECIAL, &ids) != QL_OK) {
                fprintf(stderr, "%s: %s\n", name, ql_error_message());
                return 0;
            }
            if (rep == 0) {
                for (size_t k = 0; k < ids.n; k++) h = (h ^ (uint32_t)ids.v[k]) * 0x100000001B3ull;
                n_ids += ids.n;
            }
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    ql_ids_free(&ids);
    /* the Python side needs the tokenizer.json itself */
    char json_path[4200];
    snprintf(json_path, sizeof json_path, "%s%s", path,
             ql_fs_is_dir(path) ? "/tokenizer.json" : "");
    char cmd[8800], line[4096] = {0};
    snprintf(cmd, sizeof cmd,
             "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false '%s' bench/tokenizer_hf.py '%s' "
             "tests/fixtures/tokenizer/docs.bin.gz %d",
             python, json_path, reps);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(line, sizeof line, p)) {
        fprintf(stderr, "%s: no output from: %s\n", name, cmd);
        if (p) pclose(p);
        ql_tokenizer_free(t);
        return 0;
    }
    pclose(p);
    char secs[64], sum[64], want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)h);
    if (!field(line, "seconds", secs, sizeof secs) || !field(line, "checksum", sum, sizeof sum)) {
        fprintf(stderr, "%s: unexpected output: %s\n", name, line);
        ql_tokenizer_free(t);
        return 0;
    }
    field(line, "tokenizers", r->hf_version, sizeof r->hf_version);
    r->name = name;
    r->mbs_ql = (double)bytes / best / 1e6;
    r->mbs_hf = (double)bytes / atof(secs) / 1e6;
    r->ratio = r->mbs_ql / r->mbs_hf;
    r->ids = n_ids;
    r->same = !strcmp(sum, want);
    printf("%-14s %10.2f %10.2f %7.2fx  %9zu  %s\n", name, r->mbs_ql, r->mbs_hf, r->ratio, n_ids,
           r->same ? "same ids" : "IDS DIFFER");
    ql_tokenizer_free(t);
    return 1;
}

int main(int argc, char **argv) {
    const char *python = ".venv/bin/python", *json = NULL;
    int reps = 3;
    const char *names[16], *paths[16];
    int n_models = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--python") && i + 1 < argc)
            python = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc && n_models < 16) {
            char *spec = argv[++i], *eq = strchr(spec, '=');
            if (!eq) {
                fprintf(stderr, "--model wants NAME=PATH\n");
                return 2;
            }
            *eq = 0;
            names[n_models] = spec;
            paths[n_models++] = eq + 1;
        } else {
            fprintf(stderr,
                    "usage: %s [--python PY] [--reps N] [--json PATH] [--model NAME=PATH]...\n",
                    argv[0]);
            return 2;
        }
    }
    char smol[4200];
    if (n_models == 0) {
        const char *cache = getenv("QL_CACHE"), *home = getenv("HOME");
        if (cache)
            snprintf(smol, sizeof smol, "%s/SmolLM2-135M-Instruct-hf", cache);
        else
            snprintf(smol, sizeof smol, "%s/.cache/qlora/SmolLM2-135M-Instruct-hf",
                     home ? home : "");
        if (ql_fs_is_dir(smol)) names[n_models] = "smollm2", paths[n_models++] = smol;
        names[n_models] = "llama3_style";
        paths[n_models++] = "tests/fixtures/tokenizer/llama3_style";
        names[n_models] = "qwen2_style";
        paths[n_models++] = "tests/fixtures/tokenizer/qwen2_style";
        names[n_models] = "sp_legacy";
        paths[n_models++] = "tests/fixtures/tokenizer/sp_legacy";
        names[n_models] = "sp_metaspace";
        paths[n_models++] = "tests/fixtures/tokenizer/sp_metaspace";
    }
    size_t len;
    unsigned char *data = read_gz("tests/fixtures/tokenizer/docs.bin.gz", &len);
    if (!data || len < 10 || memcmp(data, "QLTD1\n", 6)) {
        fprintf(stderr,
                "cannot read tests/fixtures/tokenizer/docs.bin.gz (run from the repo root)\n");
        return 1;
    }
    uint32_t n_docs;
    memcpy(&n_docs, data + 6, 4);
    doc *docs = calloc(n_docs, sizeof *docs);
    size_t at = 10, bytes = 0;
    for (uint32_t i = 0; i < n_docs; i++) {
        uint32_t n;
        memcpy(&n, data + at, 4);
        docs[i] = (doc){(const char *)data + at + 4, n};
        at += 4 + (size_t)n;
        bytes += n;
    }
    printf("%u documents, %.2f MB, best of %d passes, one thread\n", n_docs, (double)bytes / 1e6,
           reps);
    printf("%-14s %10s %10s %8s  %9s\n", "tokenizer", "qlora MB/s", "HF MB/s", "ratio", "ids");
    result res[16];
    int n_res = 0;
    for (int i = 0; i < n_models; i++)
        if (run_one(names[i], paths[i], python, reps, docs, n_docs, bytes, &res[n_res])) n_res++;

    char host[256] = "unknown", json_default[512];
    gethostname(host, sizeof host - 1);
    if (!json) {
        snprintf(json_default, sizeof json_default, "bench/results/tokenizer-%s.json", host);
        json = json_default;
    }
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    fprintf(f, "{\n  \"benchmark\": \"tokenizer\",\n  \"host\": \"%s\",\n", host);
    fprintf(f, "  \"text\": \"tests/fixtures/tokenizer/docs.bin.gz\",\n  \"bytes\": %zu,\n", bytes);
    fprintf(f, "  \"documents\": %u,\n  \"passes\": %d,\n  \"threads\": 1,\n", n_docs, reps);
    /* other work on the machine moves both columns: say how busy it was */
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = -1;
    fprintf(f, "  \"loadavg_1min\": %.2f,\n  \"cpus\": %ld,\n", load[0],
            sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f, "  \"results\": [\n");
    for (int i = 0; i < n_res; i++)
        fprintf(f,
                "    {\"tokenizer\": \"%s\", \"qlora_mb_s\": %.3f, \"hf_mb_s\": %.3f, \"ratio\": "
                "%.3f, \"ids\": %zu, \"same_ids\": %s, \"hf_tokenizers\": \"%s\"}%s\n",
                res[i].name, res[i].mbs_ql, res[i].mbs_hf, res[i].ratio, res[i].ids,
                res[i].same ? "true" : "false", res[i].hf_version, i + 1 < n_res ? "," : "");
    fprintf(f, "  ]\n}\n");
    fclose(f);
    if (ql_fs_write_atomic(json, out, out_len) != QL_OK) {
        fprintf(stderr, "%s\n", ql_error_message());
        return 1;
    }
    printf("wrote %s\n", json);
    free(out);
    free(docs);
    free(data);
    int all_same = 1;
    for (int i = 0; i < n_res; i++) all_same &= res[i].same;
    return n_res == n_models && all_same ? 0 : 1;
}
