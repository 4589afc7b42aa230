/* malloc_count.c - LD_PRELOAD shim: counts the allocations made by
 * echod's worker threads (named "echod-w*") once armed, to prove the data
 * path allocates nothing after start-up.
 *
 *   MALLOC_COUNT_FILE=path        where the counts go at exit
 *   MALLOC_COUNT_AFTER_MS=N       counting starts N ms after the process
 *                                 started (the test loads echod after that)
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic long worker_allocs, worker_bytes, before;
static long long arm_at_ms = -1;
static __thread int is_worker = -1;     /* -1: not known yet */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((constructor)) static void init(void)
{
	const char *s = getenv("MALLOC_COUNT_AFTER_MS");

	arm_at_ms = now_ms() + (s ? atoll(s) : 0);
}

static void count(size_t n)
{
	if (is_worker < 0) {
		char name[17] = "";

		prctl(PR_GET_NAME, name, 0, 0, 0);
		if (strncmp(name, "echod-w", 7) == 0)
			is_worker = 1;       /* named: settled */
	}
	if (is_worker != 1)
		return;
	if (arm_at_ms < 0 || now_ms() < arm_at_ms) {
		atomic_fetch_add(&before, 1);     /* start-up: expected */
		return;
	}
	atomic_fetch_add(&worker_allocs, 1);
	atomic_fetch_add(&worker_bytes, (long)n);
}

void *malloc(size_t n)
{
	count(n);
	return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	count(a * b);
	return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	count(n);
	return __libc_realloc(p, n);
}

void *aligned_alloc(size_t al, size_t n)
{
	count(n);
	return __libc_memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
	count(n);
	*out = __libc_memalign(al, n);
	return *out ? 0 : 12;
}

__attribute__((destructor)) static void report(void)
{
	const char *path = getenv("MALLOC_COUNT_FILE");
	FILE *f;

	if (!path || !(f = fopen(path, "w")))
		return;
	fprintf(f, "startup_allocs=%ld worker_allocs=%ld worker_bytes=%ld\n",
		atomic_load(&before), atomic_load(&worker_allocs), atomic_load(&worker_bytes));
	fclose(f);
}
