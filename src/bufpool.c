/* bufpool.c - see bufpool.h */
#include "bufpool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int bufpool_init(struct bufpool *p, uint32_t count, uint32_t size)
{
	size_t len = (size_t)count * size;
	void *mem;

	memset(p, 0, sizeof(*p));
	if (!count || !size)
		return -EINVAL;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	p->meta = calloc(count, sizeof(*p->meta));
	p->free = calloc(count, sizeof(*p->free));
	if (!p->meta || !p->free) {
		free(p->meta);
		free(p->free);
		munmap(mem, len);
		memset(p, 0, sizeof(*p));
		return -ENOMEM;
	}
	p->mem = mem;
	p->maplen = len;
	p->count = count;
	p->size = size;
	/* lowest ids on top of the stack, so a quiet worker touches few pages */
	for (uint32_t i = 0; i < count; i++) {
		p->free[i] = count - 1 - i;
		p->meta[i].next = BUF_NONE;
	}
	p->nfree = count;
	return 0;
}

void bufpool_fini(struct bufpool *p)
{
	if (p->mem)
		munmap(p->mem, p->maplen);
	free(p->meta);
	free(p->free);
	memset(p, 0, sizeof(*p));
}
