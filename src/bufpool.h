/* bufpool.h - a worker's fixed pool of equal-sized I/O buffers.
 *
 * buffer_count buffers of buffer_size bytes, allocated once at start-up
 * (page-aligned, so the io_uring backend can register them as a provided
 * buffer ring).  Each buffer has a small metadata record, through which a
 * connection chains the buffers it holds (its queue of unsent bytes); the
 * pool never allocates after bufpool_init().
 *
 * The free stack is for backends that choose buffers themselves (epoll);
 * the io_uring backend hands free buffers to the kernel instead.
 */
#ifndef ECHOD_BUFPOOL_H
#define ECHOD_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

#define BUF_NONE UINT32_MAX

struct bufmeta {
	uint32_t next;      /* next buffer in a connection's queue, or BUF_NONE */
	uint32_t off;       /* first unsent byte */
	uint32_t len;       /* bytes from off not yet sent */
};

struct bufpool {
	uint8_t *mem;
	uint32_t count;
	uint32_t size;
	struct bufmeta *meta;
	uint32_t *free;     /* stack of free buffer ids */
	uint32_t nfree;
	size_t maplen;
};

/* Allocate count buffers of size bytes, all free.  0 or -errno. */
int bufpool_init(struct bufpool *p, uint32_t count, uint32_t size);
void bufpool_fini(struct bufpool *p);

static inline uint8_t *bufpool_ptr(const struct bufpool *p, uint32_t bid)
{
	return p->mem + (size_t)bid * p->size;
}

/* Take a free buffer off the stack, or BUF_NONE. */
static inline uint32_t bufpool_get(struct bufpool *p)
{
	return p->nfree ? p->free[--p->nfree] : BUF_NONE;
}

/* Return a buffer to the stack. */
static inline void bufpool_put(struct bufpool *p, uint32_t bid)
{
	p->free[p->nfree++] = bid;
}

#endif
