/* mbuf.h - a growable text buffer: what the metrics exposition and the
 * histograms' rendering append to.  An allocation failure is sticky
 * (oom): later appends do nothing, and the caller checks once at the end.
 */
#ifndef ECHOD_MBUF_H
#define ECHOD_MBUF_H

#include <stdbool.h>
#include <stddef.h>

struct mbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

/* Append printf-formatted text (grows the buffer; on failure sets oom). */
void mbuf_printf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Release the text; b is empty again. */
void mbuf_free(struct mbuf *b);

#endif
