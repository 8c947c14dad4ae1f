#include "ckpt/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/checksum.h"
#include "ckpt/fault.h"
#include "ckpt/h5err.h"

static const char *const VEC_NAMES[3] = {"params", "adam_m", "adam_v"};

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define QL_DIRECT_WRITE 1
#else
#define QL_DIRECT_WRITE 0
#endif

struct ql_shard {
    hid_t file;
    hid_t ds[3];
    char *path;
    ql_shard_desc d;
};

void ql_shard_name(int rank, int world, char *buf, size_t n) {
    snprintf(buf, n, "shard-%05d-of-%05d.h5", rank, world);
}

static hid_t make_fapl(ql_file_locking mode) {
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    if (p < 0) return p;
#if H5_VERSION_GE(1, 10, 7)
    /* strict: a failing lock is an error; best-effort: HDF5 ignores locks
     * where the file system has none; off: no locks. */
    H5Pset_file_locking(p, mode != QL_LOCK_OFF, mode == QL_LOCK_BEST_EFFORT);
#else
    (void)mode;
#endif
    return p;
}

/* --- writing ------------------------------------------------------------ */

static herr_t put_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                       hsize_t n, const void *v) {
    hid_t sp = rank ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mem_type, v);
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    H5Sclose(sp);
    return rc;
}

static herr_t put_i64(hid_t loc, const char *name, int64_t v) {
    return put_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, 1, &v);
}

/* A fixed-length, NUL-terminated ASCII string (h5py reads it as bytes). */
static herr_t put_str(hid_t loc, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    herr_t rc = H5Tset_size(t, strlen(s) + 1);
    if (rc >= 0) rc = H5Tset_strpad(t, H5T_STR_NULLTERM);
    if (rc >= 0) rc = put_attr(loc, name, t, t, 0, 1, s);
    H5Tclose(t);
    return rc;
}

/* Where a dataset's bytes went in the file (HADDR_UNDEF: none). */
static herr_t put_vec(hid_t file, const char *name, int64_t len, const float *data,
                      haddr_t *where) {
    *where = HADDR_UNDEF;
    hsize_t n = (hsize_t)len;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    if (sp < 0) return -1;
    /* Contiguous, no fill pass. On little-endian hosts the space is
     * allocated now and the bytes are written after HDF5 closes the file,
     * by ql_shard_write itself (they are the array's bytes), on several
     * threads that hash them at the same time; elsewhere HDF5 writes them. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    herr_t rc = dcpl < 0 ? -1 : H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
#if QL_DIRECT_WRITE
    if (rc >= 0) rc = H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
#endif
    hid_t ds =
        rc < 0 ? -1 : H5Dcreate2(file, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0) rc = -1;
#if !QL_DIRECT_WRITE
    if (rc >= 0 && len > 0)
        rc = H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
#else
    (void)data;
#endif
    if (rc >= 0 && len > 0) {
        *where = H5Dget_offset(ds);
        if (*where == HADDR_UNDEF) rc = -1;
    }
    if (ds >= 0 && H5Dclose(ds) < 0) rc = -1;
    if (dcpl >= 0) H5Pclose(dcpl);
    H5Sclose(sp);
    return rc;
}

static herr_t put_all(hid_t f, const ql_shard_desc *d, const float *const vec[3],
                      haddr_t where[3]) {
    for (int i = 0; i < 3; i++)
        if (put_vec(f, VEC_NAMES[i], d->length, vec[i], &where[i]) < 0) return -1;
    if (put_i64(f, "format_version", QL_SHARD_FORMAT_VERSION) < 0 ||
        put_i64(f, "rank", d->rank) < 0 || put_i64(f, "world_size", d->world) < 0 ||
        put_i64(f, "n_total", d->n_total) < 0 || put_i64(f, "offset", d->offset) < 0 ||
        put_i64(f, "length", d->length) < 0 || put_i64(f, "step", d->step) < 0 ||
        put_str(f, "run_id", d->run_id) < 0 ||
        put_attr(f, "rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, 4, d->rng) < 0)
        return -1;
    return 0;
}

/* The datasets' bytes into the space HDF5 allocated for them, and the
 * checksum (ckpt/checksum.h) of the file, in one pass on several threads:
 * each 16 MiB piece is written from memory and hashed from memory; only
 * HDF5's metadata between the runs is read back. */
static ql_status write_and_hash(int fd, const char *path, const float *const vec[3],
                                const haddr_t where[3], int64_t len, int64_t *bytes,
                                uint8_t sha[QL_SHA256_LEN]) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return ql_error(QL_EIO, "%s: stat: %s", path, strerror(errno));
    uint64_t size = (uint64_t)sb.st_size, run = (uint64_t)len * sizeof(float);
    ql_cksum_seg segs[3];
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (where[i] != HADDR_UNDEF)
            segs[n++] = (ql_cksum_seg){
                .off = (uint64_t)where[i], .len = run, .mem = vec[i], .store = QL_DIRECT_WRITE};
    for (int i = 1; i < n; i++) /* by offset */
        for (int j = i; j > 0 && segs[j].off < segs[j - 1].off; j--) {
            ql_cksum_seg t = segs[j];
            segs[j] = segs[j - 1];
            segs[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        if (i > 0 && segs[i - 1].off + run > segs[i].off)
            return ql_error(QL_EINTERNAL, "%s: dataset at %llu overlaps another", path,
                            (unsigned long long)segs[i].off);
        if (segs[i].off + run > size) size = segs[i].off + run;
    }
    ql_status st = ql_cksum_segments(fd, path, size, segs, n, sha);
    if (st != QL_OK) return ql_error_wrap(st, "writing the shard failed: ");
    *bytes = (int64_t)size;
    return QL_OK;
}

ql_status ql_shard_write(const char *path, const ql_shard_desc *d, const float *params,
                         const float *m, const float *v, ql_file_locking locking, int64_t *bytes,
                         uint8_t sha[QL_SHA256_LEN]) {
    ql_h5_quiet();
    if (ql_ckpt_fault("shard-write", d->rank))
        return ql_error(QL_EIO, "%s: writing the shard failed: injected fault (QL_CKPT_FAULT)",
                        path);
    hid_t fapl = make_fapl(locking);
    if (fapl < 0) return ql_h5_error(QL_EBACKEND, path, "creating a file access list");
    hid_t f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) return ql_h5_error(QL_EIO, path, "creating the shard");
    const float *const vec[3] = {params, m, v};
    haddr_t where[3];
    if (put_all(f, d, vec, where) < 0) {
        ql_status st = ql_h5_error(QL_EIO, path, "writing the shard");
        H5Fclose(f);
        return st;
    }
    if (H5Fclose(f) < 0) return ql_h5_error(QL_EIO, path, "closing the shard");

    /* The data (written and hashed in one pass), then fsync. The file is
     * still in the save's temporary directory: nothing has seen it. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return ql_error(QL_EIO, "%s: cannot reopen: %s", path, strerror(errno));
    ql_status st = write_and_hash(fd, path, vec, where, d->length, bytes, sha);
    if (st == QL_OK && fsync(fd) != 0)
        st = ql_error(QL_EIO, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) != 0 && st == QL_OK)
        st = ql_error(QL_EIO, "%s: close failed: %s", path, strerror(errno));
    return st;
}

/* --- reading ------------------------------------------------------------ */

static ql_status get_i64(hid_t f, const char *path, const char *name, int64_t *v) {
    if (H5Aexists(f, name) <= 0)
        return ql_error(QL_EFORMAT, "%s: not a qlora shard: attribute '%s' is missing", path, name);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    herr_t rc =
        sp < 0 || H5Sget_simple_extent_npoints(sp) != 1 ? -1 : H5Aread(a, H5T_NATIVE_INT64, v);
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return ql_h5_error(QL_EFORMAT, path, name);
    return QL_OK;
}

/* A fixed-length or variable-length string attribute into buf. */
static ql_status get_str(hid_t f, const char *path, const char *name, char *buf, size_t n) {
    if (H5Aexists(f, name) <= 0)
        return ql_error(QL_EFORMAT, "%s: not a qlora shard: attribute '%s' is missing", path, name);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a);
    herr_t rc = -1;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (H5Tis_variable_str(ft) > 0) {
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            rc = H5Aread(a, mt, &s);
            if (rc >= 0) snprintf(buf, n, "%s", s ? s : "");
            if (s) H5free_memory(s);
        } else {
            size_t sz = H5Tget_size(ft);
            char *tmp = calloc(sz + 1, 1);
            H5Tset_size(mt, sz);
            rc = tmp ? H5Aread(a, mt, tmp) : -1;
            if (rc >= 0) snprintf(buf, n, "%s", tmp);
            free(tmp);
        }
        H5Tclose(mt);
    }
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return ql_h5_error(QL_EFORMAT, path, name);
    return QL_OK;
}

static ql_status get_rng(hid_t f, const char *path, uint64_t rng[4]) {
    if (H5Aexists(f, "rng_state") <= 0)
        return ql_error(QL_EFORMAT, "%s: not a qlora shard: attribute 'rng_state' is missing",
                        path);
    hid_t a = H5Aopen(f, "rng_state", H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    herr_t rc =
        sp < 0 || H5Sget_simple_extent_npoints(sp) != 4 ? -1 : H5Aread(a, H5T_NATIVE_UINT64, rng);
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return ql_error(QL_EFORMAT, "%s: attribute rng_state: expected 4 uint64", path);
    return QL_OK;
}

static ql_status read_desc(ql_shard *s) {
    hid_t f = s->file;
    const char *p = s->path;
    ql_shard_desc *d = &s->d;
    int64_t ver, rank, world;
    QL_TRY(get_i64(f, p, "format_version", &ver));
    if (ver != QL_SHARD_FORMAT_VERSION)
        return ql_error(ver > QL_SHARD_FORMAT_VERSION ? QL_EUNSUPPORTED : QL_EFORMAT,
                        "%s: shard format_version %" PRId64 " (this qlora reads %d)", p, ver,
                        QL_SHARD_FORMAT_VERSION);
    QL_TRY(get_i64(f, p, "rank", &rank));
    QL_TRY(get_i64(f, p, "world_size", &world));
    QL_TRY(get_i64(f, p, "n_total", &d->n_total));
    QL_TRY(get_i64(f, p, "offset", &d->offset));
    QL_TRY(get_i64(f, p, "length", &d->length));
    QL_TRY(get_i64(f, p, "step", &d->step));
    QL_TRY(get_str(f, p, "run_id", d->run_id, sizeof d->run_id));
    QL_TRY(get_rng(f, p, d->rng));
    if (world < 1 || world > 1 << 24 || rank < 0 || rank >= world || d->n_total < 0 ||
        d->offset < 0 || d->length < 0 || d->offset > d->n_total - d->length)
        return ql_error(QL_EFORMAT,
                        "%s: inconsistent attributes: rank %" PRId64 " of %" PRId64
                        ", range [%" PRId64 ", %" PRId64 ") of %" PRId64,
                        p, rank, world, d->offset, d->offset + d->length, d->n_total);
    d->rank = (int)rank;
    d->world = (int)world;
    for (int i = 0; i < 3; i++) {
        if (H5Lexists(f, VEC_NAMES[i], H5P_DEFAULT) <= 0)
            return ql_error(QL_EFORMAT, "%s: dataset '%s' is missing", p, VEC_NAMES[i]);
        s->ds[i] = H5Dopen2(f, VEC_NAMES[i], H5P_DEFAULT);
        if (s->ds[i] < 0) return ql_h5_error(QL_EFORMAT, p, VEC_NAMES[i]);
        hid_t sp = H5Dget_space(s->ds[i]);
        hid_t t = H5Dget_type(s->ds[i]);
        hsize_t dims[2] = {0, 0};
        int nd = sp < 0 ? -1 : H5Sget_simple_extent_dims(sp, dims, NULL);
        int is_f32 = t >= 0 && H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4;
        if (sp >= 0) H5Sclose(sp);
        if (t >= 0) H5Tclose(t);
        if (nd != 1 || dims[0] != (hsize_t)d->length || !is_f32)
            return ql_error(QL_EFORMAT,
                            "%s: dataset '%s': expected float32 [%" PRId64
                            "], found %d dimension(s)"
                            " of %llu%s",
                            p, VEC_NAMES[i], d->length, nd, (unsigned long long)dims[0],
                            is_f32 ? "" : " (not float32)");
    }
    return QL_OK;
}

ql_status ql_shard_open(const char *path, ql_file_locking locking, ql_shard **out,
                        ql_shard_desc *d) {
    ql_h5_quiet();
    *out = NULL;
    ql_shard *s = ql_calloc(1, sizeof *s, "a shard handle");
    if (!s) return QL_ENOMEM;
    s->file = -1;
    for (int i = 0; i < 3; i++) s->ds[i] = -1;
    s->path = strdup(path);
    if (!s->path) {
        free(s);
        return ql_error(QL_ENOMEM, "out of memory");
    }
    hid_t fapl = make_fapl(locking);
    s->file = fapl < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    ql_status st = s->file < 0 ? ql_h5_error(QL_EFORMAT, path, "opening the shard") : read_desc(s);
    if (st != QL_OK) {
        ql_shard_close(s);
        return st;
    }
    if (d) *d = s->d;
    *out = s;
    return QL_OK;
}

ql_status ql_shard_read(ql_shard *s, const char *dataset, int64_t first, int64_t count,
                        float *dst) {
    int i = 0;
    while (i < 3 && strcmp(VEC_NAMES[i], dataset)) i++;
    if (i == 3) return ql_error(QL_EINTERNAL, "%s: no dataset '%s' in a shard", s->path, dataset);
    if (first < 0 || count < 0 || first > s->d.length - count)
        return ql_error(QL_EINTERNAL, "%s: %s[%" PRId64 ":%" PRId64 "] is outside [0, %" PRId64 ")",
                        s->path, dataset, first, first + count, s->d.length);
    if (count == 0) return QL_OK;
    if (ql_ckpt_fault("shard-read", -1))
        return ql_error(QL_EIO, "%s: reading %s failed: injected fault (QL_CKPT_FAULT)", s->path,
                        dataset);
    hsize_t start = (hsize_t)first, n = (hsize_t)count;
    hid_t fs = H5Dget_space(s->ds[i]);
    hid_t ms = H5Screate_simple(1, &n, NULL);
    herr_t rc =
        fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &n, NULL);
    if (rc >= 0) rc = H5Dread(s->ds[i], H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, dst);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    if (rc < 0) return ql_h5_error(QL_EFORMAT, s->path, dataset);
    return QL_OK;
}

ql_status ql_shard_read_verify(ql_shard *s, int64_t first, int64_t count, float *const dst[3],
                               uint8_t sha[QL_SHA256_LEN], int64_t *bytes) {
    if (first < 0 || count < 0 || first > s->d.length - count)
        return ql_error(QL_EINTERNAL, "%s: [%" PRId64 ":%" PRId64 "] is outside [0, %" PRId64 ")",
                        s->path, first, first + count, s->d.length);
    if (count > 0 && ql_ckpt_fault("shard-read", -1))
        return ql_error(QL_EIO, "%s: reading params failed: injected fault (QL_CKPT_FAULT)",
                        s->path);
    ql_cksum_seg segs[3];
    int n = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (int i = 0; i < 3 && count > 0; i++) {
        if (!dst[i]) continue;
        hid_t dcpl = H5Dget_create_plist(s->ds[i]), t = H5Dget_type(s->ds[i]);
        int ok = dcpl >= 0 && t >= 0 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS &&
                 H5Tequal(t, H5T_IEEE_F32LE) > 0;
        haddr_t at = ok ? H5Dget_offset(s->ds[i]) : HADDR_UNDEF;
        if (dcpl >= 0) H5Pclose(dcpl);
        if (t >= 0) H5Tclose(t);
        if (at == HADDR_UNDEF) return QL_EUNSUPPORTED;
        segs[n++] = (ql_cksum_seg){.off = (uint64_t)at + (uint64_t)first * sizeof(float),
                                   .len = (uint64_t)count * sizeof(float),
                                   .fill = dst[i]};
    }
#else
    return QL_EUNSUPPORTED;
#endif
    for (int i = 1; i < n; i++) /* by offset */
        for (int j = i; j > 0 && segs[j].off < segs[j - 1].off; j--) {
            ql_cksum_seg x = segs[j];
            segs[j] = segs[j - 1];
            segs[j - 1] = x;
        }
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        ql_status st = ql_error(QL_EIO, "%s: cannot open: %s", s->path, strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    for (int i = 0; i < n; i++)
        if (segs[i].off + segs[i].len > (uint64_t)sb.st_size) {
            close(fd);
            return ql_error(QL_EFORMAT,
                            "%s: a dataset extends past the end of the file (%lld bytes)", s->path,
                            (long long)sb.st_size);
        }
    ql_status st = ql_cksum_segments(fd, s->path, (uint64_t)sb.st_size, segs, n, sha);
    close(fd);
    if (st == QL_OK) *bytes = (int64_t)sb.st_size;
    return st;
}

void ql_shard_close(ql_shard *s) {
    if (!s) return;
    for (int i = 0; i < 3; i++)
        if (s->ds[i] >= 0) H5Dclose(s->ds[i]);
    if (s->file >= 0) H5Fclose(s->file);
    free(s->path);
    free(s);
}
