/* The data report printed at the start of training and by `qlora data stats`. */
#include <inttypes.h>
#include <stdio.h>

#include "data/records.h"

static double pct(int64_t a, int64_t b) { return b > 0 ? 100.0 * (double)a / (double)b : 0.0; }

void ql_records_report_print(const ql_records_report *r, const char *path, FILE *f) {
    fprintf(f, "data: %s\n", path);
    fprintf(f, "  %-10s %" PRId64 " read, %" PRId64 " kept", "records", r->read, r->kept);
    const char *sep = " (";
    for (int i = 0; i < QL_REC__N; i++)
        if (r->kept_by[i]) {
            fprintf(f, "%s%s %" PRId64, sep, ql_record_format_name((ql_record_format)i),
                    r->kept_by[i]);
            sep = ", ";
        }
    fprintf(f, "%s\n", sep[0] == ',' ? ")" : "");
    fprintf(f, "  %-10s %" PRId64, "skipped", r->skipped);
    sep = " (";
    for (int i = 0; i < QL_BAD__N; i++)
        if (r->skipped_by[i]) {
            fprintf(f, "%s%s %" PRId64, sep, ql_bad_reason_name((ql_bad_reason)i),
                    r->skipped_by[i]);
            sep = ", ";
        }
    fprintf(f, "%s\n", sep[0] == ',' ? ")" : "");
    fprintf(f,
            "  %-10s %" PRId64 " records (%.1f%%) cut to %" PRId64 " tokens, %" PRId64
            " tokens lost\n",
            "truncated", r->truncated, pct(r->truncated, r->read), r->max_seq_len, r->tokens_lost);
    fprintf(f,
            "  %-10s %" PRId64 " records over %" PRId64 " tokens (%" PRId64 " tokens), %" PRId64
            " with no token that has loss\n",
            "dropped", r->dropped, r->max_seq_len, r->tokens_dropped, r->no_loss);
    fprintf(f, "  %-10s %" PRId64 " kept, %" PRId64 " with loss (%.1f%%)\n", "tokens", r->tokens,
            r->loss_tokens, pct(r->loss_tokens, r->tokens));
    fprintf(f,
            "  %-10s p50 %" PRId64 ", p90 %" PRId64 ", p99 %" PRId64 ", max %" PRId64
            " tokens (before truncation)\n",
            "length", r->len_p50, r->len_p90, r->len_p99, r->len_max);
    if (r->chat_template[0]) fprintf(f, "  %-10s %s\n", "template", r->chat_template);
    if (r->prompt_merged)
        fprintf(f,
                "  %-10s %" PRId64 " prompt/completion records tokenize differently across "
                "the boundary (masked by the prompt's token count, as TRL does)\n",
                "note", r->prompt_merged);
    if (r->first_skip[0]) fprintf(f, "  %-10s %s\n", "first bad", r->first_skip);
}
