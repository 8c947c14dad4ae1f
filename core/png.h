/* A small PNG writer for palette images (plots), with no library behind it.
 *
 * The image data is compressed by a minimal deflate (RFC 1951) of our own:
 * fixed Huffman codes and matches at distance 1 (a run of one colour) or one
 * row up (a row like the one above), which is what plots are made of; a
 * 800x480 plot comes out at a few kilobytes. The zlib stream (RFC 1950) and
 * the chunks carry their Adler-32 and CRC-32 as PNG requires, so any PNG
 * reader accepts the file. */
#ifndef QL_PNG_H
#define QL_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* `pixels` holds w*h palette indices, row by row; `palette` n_colors RGB
 * triples (n_colors <= 256). Written atomically to `path`. */
ql_status ql_png_write_indexed(const char *path, int w, int h, const uint8_t *pixels,
                               const uint8_t *palette, int n_colors);

/* The zlib stream of `data` (for tests): malloc'd into *out. */
ql_status ql_png_zlib(const uint8_t *data, size_t n, size_t stride, uint8_t **out, size_t *out_len);

#endif
