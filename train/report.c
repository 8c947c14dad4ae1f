#include "train/report.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/png.h"
#include "train/eval_store.h"

/* ------------------------------------------------------------- the data */

typedef struct point {
    int64_t step;
    double v; /* NaN: not finite (not plotted) */
    double tokens, elapsed_s, tokens_per_s;
    int skipped;
} point;

typedef struct series {
    point *p;
    int64_t n, cap;
} series;

typedef struct run_data {
    series train, eval;
    double tokens, elapsed_s, last_tokens_per_s; /* over the steps kept */
    int64_t skipped_steps, lines_skipped, finite;
} run_data;

static int push(series *s, point p) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 256;
        point *np = realloc(s->p, (size_t)cap * sizeof *np);
        if (!np) return -1;
        s->p = np;
        s->cap = cap;
    }
    s->p[s->n++] = p;
    return 0;
}

/* Sorted by step; of several lines for one step (a resumed run may repeat
 * the steps after its checkpoint) the one written last wins. */
static void sort_unique(series *s) {
    if (s->n < 2) return;
    /* Insertion sort, stable (the input is nearly sorted already). */
    for (int64_t i = 1; i < s->n; i++) {
        point x = s->p[i];
        int64_t j = i - 1;
        while (j >= 0 && s->p[j].step > x.step) {
            s->p[j + 1] = s->p[j];
            j--;
        }
        s->p[j + 1] = x;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < s->n; i++) {
        if (k > 0 && s->p[k - 1].step == s->p[i].step)
            s->p[k - 1] = s->p[i]; /* the later line */
        else
            s->p[k++] = s->p[i];
    }
    s->n = k;
}

static ql_status read_metrics(const char *path, run_data *r) {
    char *text = NULL;
    size_t len = 0;
    QL_TRY(ql_fs_read_file(path, &text, &len));
    ql_status st = QL_OK;
    char *line = text;
    while (line && *line && st == QL_OK) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        json_error_t err;
        json_t *o = *line ? json_loads(line, 0, &err) : NULL;
        const json_t *step = json_object_get(o, "step"), *loss = json_object_get(o, "loss"),
                     *ev = json_object_get(o, "eval_loss");
        if (!json_is_integer(step)) {
            if (*line) r->lines_skipped++;
        } else if (json_is_number(ev)) {
            if (push(&r->eval,
                     (point){.step = json_integer_value(step), .v = json_number_value(ev)}))
                st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
        } else if (loss) { /* a training step; a null loss (not finite) is not plotted */
            const json_t *tk = json_object_get(o, "tokens"), *el = json_object_get(o, "elapsed_s"),
                         *tps = json_object_get(o, "tokens_per_s");
            point p = {.step = json_integer_value(step),
                       .v = json_is_number(loss) ? json_number_value(loss) : NAN,
                       .tokens = json_is_number(tk) ? json_number_value(tk) : 0,
                       .elapsed_s = json_is_number(el) ? json_number_value(el) : NAN,
                       .tokens_per_s = json_is_number(tps) ? json_number_value(tps) : NAN,
                       .skipped = json_integer_value(json_object_get(o, "skipped")) != 0};
            if (push(&r->train, p)) st = ql_error(QL_ENOMEM, "out of memory reading %s", path);
        } else if (!ev) { /* other records (sample generations ...) are not plotted */
            if (!json_object_get(o, "sample") && !json_object_get(o, "samples")) r->lines_skipped++;
        }
        json_decref(o);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    sort_unique(&r->train);
    sort_unique(&r->eval);
    for (int64_t i = 0; i < r->train.n; i++) {
        const point *p = &r->train.p[i];
        r->tokens += p->tokens;
        if (isfinite(p->elapsed_s)) r->elapsed_s = p->elapsed_s;
        if (isfinite(p->tokens_per_s)) r->last_tokens_per_s = p->tokens_per_s;
        r->skipped_steps += p->skipped;
        r->finite += isfinite(p->v) != 0;
    }
    return st;
}

/* ------------------------------------------------------------ text out */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

static void sb_escaped(sbuf *b, const char *t) {
    for (; *t; t++) {
        switch (*t) {
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '&': sb_printf(b, "&amp;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        default: sb_printf(b, "%c", *t);
        }
    }
}

/* -------------------------------------------------------- the plot frame */

/* Pixel geometry shared by the SVG and the PNG. */
enum { PW = 720, PH = 400, LEFT = 72, RIGHT = 24, TOP = 36, BOTTOM = 52, MAX_POINTS = 2000 };

typedef struct frame {
    double x0, x1, y0, y1; /* data ranges */
    double xt[16], yt[16]; /* tick values */
    int nxt, nyt;
} frame;

static double px(const frame *f, double step) {
    return LEFT + (step - f->x0) / (f->x1 - f->x0) * (PW - LEFT - RIGHT);
}
static double py(const frame *f, double v) {
    return TOP + (f->y1 - v) / (f->y1 - f->y0) * (PH - TOP - BOTTOM);
}

/* Round tick steps of 1, 2 or 5 times a power of ten, about `want` of them. */
static int ticks(double lo, double hi, int want, double *out) {
    double raw = (hi - lo) / want, mag = pow(10, floor(log10(raw))), step = mag;
    if (raw / mag > 5)
        step = 10 * mag;
    else if (raw / mag > 2)
        step = 5 * mag;
    else if (raw / mag > 1)
        step = 2 * mag;
    int n = 0;
    for (double t = ceil(lo / step) * step; t <= hi + 1e-9 * step && n < 16; t += step)
        out[n++] = fabs(t) < 1e-12 * step ? 0.0 : t;
    return n;
}

static void make_frame(const run_data *r, frame *f) {
    double lo = INFINITY, hi = -INFINITY;
    int64_t s0 = INT64_MAX, s1 = INT64_MIN;
    const series *all[2] = {&r->train, &r->eval};
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < all[k]->n; i++) {
            const point *p = &all[k]->p[i];
            if (isfinite(p->v)) {
                lo = fmin(lo, p->v);
                hi = fmax(hi, p->v);
            }
            if (p->step < s0) s0 = p->step;
            if (p->step > s1) s1 = p->step;
        }
    if (!(hi > lo)) {
        lo -= 0.5;
        hi += 0.5;
    }
    double pad = 0.05 * (hi - lo);
    f->y0 = lo - pad;
    f->y1 = hi + pad;
    f->x0 = (double)s0;
    f->x1 = (double)(s1 > s0 ? s1 : s0 + 1);
    f->nyt = ticks(f->y0, f->y1, 6, f->yt);
    f->nxt = ticks(f->x0, f->x1, 8, f->xt);
}

/* Every point, or every k-th (and the last) when there are very many. */
static int64_t stride_of(const series *s) {
    return s->n > MAX_POINTS ? (s->n + MAX_POINTS - 1) / MAX_POINTS : 1;
}

#define COLOR_TRAIN "#1f77b4"
#define COLOR_EVAL "#e4572e"

static void svg_series(sbuf *b, const frame *f, const series *s, const char *cls, const char *color,
                       int markers) {
    if (!s->n) return;
    int64_t k = stride_of(s);
    sb_printf(b,
              "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" "
              "points=\"",
              cls, color);
    const char *sep = "";
    for (int64_t i = 0; i < s->n; i++)
        if ((i % k == 0 || i == s->n - 1) && isfinite(s->p[i].v)) {
            sb_printf(b, "%s%.2f,%.2f", sep, px(f, (double)s->p[i].step), py(f, s->p[i].v));
            sep = " ";
        }
    sb_printf(b, "\"/>\n");
    if (markers)
        for (int64_t i = 0; i < s->n; i++)
            if ((i % k == 0 || i == s->n - 1) && isfinite(s->p[i].v))
                sb_printf(
                    b, "<circle class=\"%s-point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n",
                    cls, px(f, (double)s->p[i].step), py(f, s->p[i].v), color);
}

static void svg_plot(sbuf *b, const frame *f, const run_data *r) {
    sb_printf(b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\" "
              "aria-label=\"training and eval loss by step\">\n",
              PW, PH, PW, PH);
    sb_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", PW, PH);
    /* Grid and tick labels: a label's x (x axis) or y (y axis) attribute is
     * the pixel position of its value. */
    for (int i = 0; i < f->nyt; i++) {
        double y = py(f, f->yt[i]);
        sb_printf(b,
                  "<line class=\"grid\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" "
                  "stroke=\"#e5e5e5\"/>\n",
                  LEFT, y, PW - RIGHT, y);
        sb_printf(b,
                  "<text class=\"ytick\" x=\"%d\" y=\"%.2f\" text-anchor=\"end\" "
                  "dominant-baseline=\"middle\">%g</text>\n",
                  LEFT - 6, y, f->yt[i]);
    }
    for (int i = 0; i < f->nxt; i++) {
        double x = px(f, f->xt[i]);
        sb_printf(b,
                  "<line class=\"grid\" x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" "
                  "stroke=\"#e5e5e5\"/>\n",
                  x, TOP, x, PH - BOTTOM);
        sb_printf(b, "<text class=\"xtick\" x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                  x, PH - BOTTOM + 18, f->xt[i]);
    }
    sb_printf(b,
              "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
              "stroke=\"#444444\"/>\n",
              LEFT, TOP, PW - LEFT - RIGHT, PH - TOP - BOTTOM);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n",
              (LEFT + PW - RIGHT) / 2, PH - 12);
    sb_printf(b,
              "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">"
              "loss</text>\n",
              (TOP + PH - BOTTOM) / 2, (TOP + PH - BOTTOM) / 2);
    svg_series(b, f, &r->train, "train", COLOR_TRAIN, 0);
    svg_series(b, f, &r->eval, "eval", COLOR_EVAL, 1);
    /* Legend, top right. */
    int lx = PW - RIGHT - 150, ly = 14;
    sb_printf(b,
              "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>"
              "<text x=\"%d\" y=\"%d\" dominant-baseline=\"middle\">train</text>\n",
              lx, ly, lx + 20, ly, COLOR_TRAIN, lx + 25, ly);
    if (r->eval.n)
        sb_printf(b,
                  "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                  "stroke-width=\"2\"/><circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>"
                  "<text x=\"%d\" y=\"%d\" dominant-baseline=\"middle\">eval</text>\n",
                  lx + 75, ly, lx + 95, ly, COLOR_EVAL, lx + 85, ly, COLOR_EVAL, lx + 100, ly);
    sb_printf(b, "</svg>\n");
}

/* ------------------------------------------------------------ the HTML */

static void fmt_duration(double s, char *buf, size_t n) {
    long t = isfinite(s) && s > 0 ? lround(s) : 0;
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void row(sbuf *b, const char *k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void row(sbuf *b, const char *k, const char *fmt, ...) {
    char v[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    sb_printf(b, "<tr><th>%s</th><td>", k);
    sb_escaped(b, v);
    sb_printf(b, "</td></tr>\n");
}

static const point *first_of(const series *s) {
    for (int64_t i = 0; i < s->n; i++)
        if (isfinite(s->p[i].v)) return &s->p[i];
    return NULL;
}

static const point *last_of(const series *s) {
    for (int64_t i = s->n - 1; i >= 0; i--)
        if (isfinite(s->p[i].v)) return &s->p[i];
    return NULL;
}

static const point *min_of(const series *s) {
    const point *m = NULL;
    for (int64_t i = 0; i < s->n; i++)
        if (isfinite(s->p[i].v) && (!m || s->p[i].v < m->v)) m = &s->p[i];
    return m;
}

static void html(sbuf *b, const char *run_dir, const frame *f, const run_data *r,
                 const ql_eval_summary *ev) {
    sb_printf(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                 "<title>qlora run report: ");
    sb_escaped(b, run_dir);
    sb_printf(b, "</title>\n<style>\nbody{font-family:sans-serif;margin:2em;color:#222}"
                 "table{border-collapse:collapse;margin-top:1em}"
                 "th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}"
                 "th{background:#f4f4f4;font-weight:normal}\n</style>\n</head>\n<body>\n");
    sb_printf(b, "<h1>qlora run report</h1>\n<p>");
    sb_escaped(b, run_dir);
    sb_printf(b, "</p>\n");
    svg_plot(b, f, r);
    sb_printf(b, "<table>\n");
    const series *t = &r->train, *e = &r->eval;
    row(b, "steps", "%lld to %lld (%lld logged, %lld skipped as not finite or empty)",
        (long long)t->p[0].step, (long long)t->p[t->n - 1].step, (long long)t->n,
        (long long)r->skipped_steps);
    const point *tm = min_of(t), *t0 = first_of(t), *t1 = last_of(t);
    row(b, "training loss", "%.4f at step %lld -> %.4f at step %lld (lowest %.4f at step %lld)",
        t0->v, (long long)t0->step, t1->v, (long long)t1->step, tm->v, (long long)tm->step);
    if (e->n) {
        const point *em = min_of(e);
        row(b, "eval loss", "%.4f at step %lld -> %.4f at step %lld (lowest %.4f at step %lld)",
            e->p[0].v, (long long)e->p[0].step, e->p[e->n - 1].v, (long long)e->p[e->n - 1].step,
            em ? em->v : NAN, em ? (long long)em->step : -1LL);
        row(b, "eval perplexity", "%.4g -> %.4g", exp(e->p[0].v), exp(e->p[e->n - 1].v));
    } else {
        row(b, "eval loss", "none logged (no validation set)");
    }
    char el[32];
    fmt_duration(r->elapsed_s, el, sizeof el);
    row(b, "tokens", "%.0f in %s: %.0f tokens/s on average (last step %.0f tokens/s)", r->tokens,
        el, r->elapsed_s > 0 ? r->tokens / r->elapsed_s : 0.0, r->last_tokens_per_s);
    if (ev) {
        if (ev->has_base)
            row(b, "stored evaluation",
                "%s: base model %.4f, with the adapter %.4f (%+.4f) over %lld target tokens",
                ev->data, ev->base_loss, ev->loss, ev->loss - ev->base_loss, (long long)ev->tokens);
        else
            row(b, "stored evaluation", "%s: loss %.4f over %lld target tokens", ev->data, ev->loss,
                (long long)ev->tokens);
    }
    if (stride_of(t) > 1 || stride_of(e) > 1)
        row(b, "plot", "every %lld-th logged step is drawn", (long long)stride_of(t));
    if (r->lines_skipped)
        row(b, "metrics.jsonl", "%lld line(s) not understood and left out",
            (long long)r->lines_skipped);
    sb_printf(b, "</table>\n</body>\n</html>\n");
}

/* --------------------------------------------------------------- the PNG */

/* 5x7 glyphs, rows top to bottom, bit 4 = leftmost column. */
static const char glyph_chars[] = "0123456789.-+eailnoprstv";
static const uint8_t glyphs[][7] = {
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}, {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00},
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}, {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E},
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}, {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E},
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}, {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10},
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}, {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E},
    {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}, {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},
};

enum { C_BG, C_GRID, C_INK, C_TRAIN, C_EVAL };

typedef struct canvas {
    uint8_t *px;
    int w, h;
} canvas;

static void dot(canvas *c, int x, int y, uint8_t col) {
    if (x >= 0 && y >= 0 && x < c->w && y < c->h) c->px[(size_t)y * (size_t)c->w + (size_t)x] = col;
}

static void line(canvas *c, double x0, double y0, double x1, double y1, uint8_t col, int thick) {
    double dx = x1 - x0, dy = y1 - y0, len = fmax(fabs(dx), fabs(dy));
    int n = (int)ceil(len) + 1;
    for (int i = 0; i <= n; i++) {
        double t = n ? (double)i / n : 0;
        int x = (int)lround(x0 + t * dx), y = (int)lround(y0 + t * dy);
        dot(c, x, y, col);
        if (thick) {
            dot(c, x + 1, y, col);
            dot(c, x, y + 1, col);
        }
    }
}

/* Text whose anchor is (x, y): align -1 left, 0 centre, 1 right; y is the
 * middle of the glyphs. */
static void text(canvas *c, int x, int y, const char *s, int align, uint8_t col) {
    int w = (int)strlen(s) * 6 - 1;
    int left = align < 0 ? x : align == 0 ? x - w / 2 : x - w;
    for (int k = 0; s[k]; k++) {
        const char *g = strchr(glyph_chars, s[k]);
        if (!g || s[k] == ' ') continue;
        const uint8_t *rows = glyphs[g - glyph_chars];
        for (int r = 0; r < 7; r++)
            for (int b = 0; b < 5; b++)
                if (rows[r] >> (4 - b) & 1) dot(c, left + 6 * k + b, y - 3 + r, col);
    }
}

static ql_status png_plot(const char *path, const frame *f, const run_data *r) {
    canvas c = {.w = PW, .h = PH};
    c.px = ql_calloc((size_t)PW * PH, 1, "the plot image");
    if (!c.px) return QL_ENOMEM;
    char lab[32];
    for (int i = 0; i < f->nyt; i++) {
        double y = py(f, f->yt[i]);
        line(&c, LEFT, y, PW - RIGHT, y, C_GRID, 0);
        snprintf(lab, sizeof lab, "%g", f->yt[i]);
        text(&c, LEFT - 6, (int)lround(y), lab, 1, C_INK);
    }
    for (int i = 0; i < f->nxt; i++) {
        double x = px(f, f->xt[i]);
        line(&c, x, TOP, x, PH - BOTTOM, C_GRID, 0);
        snprintf(lab, sizeof lab, "%g", f->xt[i]);
        text(&c, (int)lround(x), PH - BOTTOM + 14, lab, 0, C_INK);
    }
    line(&c, LEFT, TOP, PW - RIGHT, TOP, C_INK, 0);
    line(&c, LEFT, PH - BOTTOM, PW - RIGHT, PH - BOTTOM, C_INK, 0);
    line(&c, LEFT, TOP, LEFT, PH - BOTTOM, C_INK, 0);
    line(&c, PW - RIGHT, TOP, PW - RIGHT, PH - BOTTOM, C_INK, 0);
    text(&c, (LEFT + PW - RIGHT) / 2, PH - 14, "step", 0, C_INK);
    text(&c, 8, TOP - 14, "loss", -1, C_INK);
    const series *all[2] = {&r->train, &r->eval};
    for (int k = 0; k < 2; k++) {
        const series *s = all[k];
        int64_t st = stride_of(s);
        uint8_t col = k ? C_EVAL : C_TRAIN;
        double lx = 0, ly = 0;
        int have = 0;
        for (int64_t i = 0; i < s->n; i++) {
            if (!(i % st == 0 || i == s->n - 1) || !isfinite(s->p[i].v)) continue;
            double x = px(f, (double)s->p[i].step), y = py(f, s->p[i].v);
            if (have) line(&c, lx, ly, x, y, col, 1);
            if (k)
                for (int dy = -2; dy <= 2; dy++)
                    for (int dx = -2; dx <= 2; dx++)
                        if (dx * dx + dy * dy <= 5)
                            dot(&c, (int)lround(x) + dx, (int)lround(y) + dy, col);
            lx = x;
            ly = y;
            have = 1;
        }
    }
    int lx = PW - RIGHT - 150, ly = 14;
    line(&c, lx, ly, lx + 20, ly, C_TRAIN, 1);
    text(&c, lx + 25, ly, "train", -1, C_INK);
    if (r->eval.n) {
        line(&c, lx + 75, ly, lx + 95, ly, C_EVAL, 1);
        text(&c, lx + 100, ly, "eval", -1, C_INK);
    }
    static const uint8_t pal[] = {0xFF, 0xFF, 0xFF, 0xE5, 0xE5, 0xE5, 0x44, 0x44,
                                  0x44, 0x1F, 0x77, 0xB4, 0xE4, 0x57, 0x2E};
    ql_status st = ql_png_write_indexed(path, PW, PH, c.px, pal, 5);
    free(c.px);
    return st;
}

/* ---------------------------------------------------------------- public */

ql_status ql_report_write(const char *run_dir, ql_report_info *info) {
    run_data r;
    memset(&r, 0, sizeof r);
    char *metrics = ql_fs_join(run_dir, "metrics.jsonl");
    char *out_html = ql_fs_join(run_dir, QL_REPORT_HTML);
    char *out_png = ql_fs_join(run_dir, QL_REPORT_PNG);
    char *evp = ql_fs_join(run_dir, QL_EVAL_FILE);
    ql_status st = metrics && out_html && out_png && evp ? QL_OK : QL_ENOMEM;
    if (st == QL_OK && !ql_fs_exists(metrics))
        st = ql_error(QL_ENOTFOUND, "%s: no such file (is %s a run directory?)", metrics, run_dir);
    if (st == QL_OK) st = read_metrics(metrics, &r);
    if (st == QL_OK && r.finite == 0)
        st = ql_error(QL_EINVAL, "%s: no training step with a finite loss to plot", metrics);
    ql_eval_summary ev;
    int have_ev = 0;
    if (st == QL_OK && ql_fs_exists(evp)) {
        have_ev = ql_eval_summary_read(evp, &ev) == QL_OK;
        if (!have_ev) ql_error_clear(); /* the report goes on without it */
    }
    frame f;
    sbuf b = {0};
    if (st == QL_OK) {
        make_frame(&r, &f);
        html(&b, run_dir, &f, &r, have_ev ? &ev : NULL);
        if (b.oom) st = ql_error(QL_ENOMEM, "out of memory building %s", out_html);
    }
    if (st == QL_OK) st = ql_fs_write_atomic(out_html, b.s, b.len);
    if (st == QL_OK) st = png_plot(out_png, &f, &r);
    if (st == QL_OK && info) {
        *info = (ql_report_info){.train_points = r.finite,
                                 .eval_points = r.eval.n,
                                 .first_step = r.train.p[0].step,
                                 .last_step = r.train.p[r.train.n - 1].step,
                                 .first_loss = first_of(&r.train)->v,
                                 .last_loss = last_of(&r.train)->v,
                                 .last_eval_loss = r.eval.n ? r.eval.p[r.eval.n - 1].v : NAN,
                                 .skipped_lines = r.lines_skipped};
    }
    free(b.s);
    free(r.train.p);
    free(r.eval.p);
    free(metrics);
    free(out_html);
    free(out_png);
    free(evp);
    return st;
}
