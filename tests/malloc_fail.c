/* malloc_fail.c - LD_PRELOAD shim: makes malloc and friends fail at
 * random, on demand, to prove echod survives allocation failures after
 * start-up (tests/functional/test_malloc_fail.py).
 *
 *   MALLOC_FAIL_FLAG=path      failures are injected while this file exists
 *                              (checked at most every 2 ms); without it,
 *                              never.  If the file holds "parent-only",
 *                              only the process that loaded the shim
 *                              fails, not its forked children
 *   MALLOC_FAIL_PERCENT=P      chance of failure per call while armed, in
 *                              percent, 0..100 (default 10)
 *   MALLOC_FAIL_SEED=N         seed of the draws (default 1); the sequence
 *                              is the same for the same interleaving of
 *                              threads
 *   MALLOC_FAIL_FILE=path      where the counts go at exit:
 *                              "calls=N armed_calls=N failed=N"
 *
 * Covered: malloc, calloc, realloc, reallocarray, aligned_alloc, memalign,
 * posix_memalign, valloc, pvalloc (glibc routes its internal allocations,
 * strdup, fopen, asprintf..., through the interposed malloc).  free is
 * left alone.  A forked child (echod's configuration parser) inherits the
 * shim and fails too, unless the flag says "parent-only"; it leaves by
 * _exit(), so only the daemon's own counts are written.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
void *memalign(size_t, size_t);      /* <malloc.h> declares these; */
void *pvalloc(size_t);               /* not every libc has them */

static const char *flag_path;
static unsigned percent = 10;
static uint64_t seed = 1;
static _Atomic uint64_t draw_ctr;
static _Atomic long calls, armed_calls, failed;
static _Atomic long long checked_at_ms = -1000;
static _Atomic int armed;
static pid_t loader;                 /* the process that loaded the shim */

/* 0: not armed; 1: armed; 2: armed for the loader only. */
static int read_flag(void)
{
	char buf[16] = "";
	int fd = open(flag_path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (read(fd, buf, sizeof(buf) - 1) < 0)
		buf[0] = '\0';
	close(fd);
	return strncmp(buf, "parent-only", 11) == 0 ? 2 : 1;
}

__attribute__((constructor)) static void init(void)
{
	const char *s;

	flag_path = getenv("MALLOC_FAIL_FLAG");
	loader = getpid();
	if ((s = getenv("MALLOC_FAIL_PERCENT")) && *s) {
		long v = atol(s);

		percent = v < 0 ? 0 : v > 100 ? 100 : (unsigned)v;
	}
	if ((s = getenv("MALLOC_FAIL_SEED")) && *s)
		seed = strtoull(s, NULL, 10);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t splitmix64(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

/* Whether this call fails; sets errno to ENOMEM when it does. */
static int fail_now(void)
{
	long long t;
	int a;

	atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
	if (!flag_path)
		return 0;
	t = now_ms();
	if (t - atomic_load_explicit(&checked_at_ms, memory_order_relaxed) >= 2) {
		atomic_store_explicit(&checked_at_ms, t, memory_order_relaxed);
		atomic_store_explicit(&armed, read_flag(), memory_order_relaxed);
	}
	a = atomic_load_explicit(&armed, memory_order_relaxed);
	if (!a || (a == 2 && getpid() != loader))
		return 0;
	atomic_fetch_add_explicit(&armed_calls, 1, memory_order_relaxed);
	if (splitmix64(seed ^ atomic_fetch_add_explicit(&draw_ctr, 1, memory_order_relaxed)) % 100
	    >= percent)
		return 0;
	atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);
	errno = ENOMEM;
	return 1;
}

void *malloc(size_t n)
{
	return fail_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	return fail_now() ? NULL : __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	/* realloc(p, 0) frees: never "fails" */
	if (p && n == 0)
		return __libc_realloc(p, n);
	return fail_now() ? NULL : __libc_realloc(p, n);
}

void *reallocarray(void *p, size_t a, size_t b)
{
	size_t n;

	if (__builtin_mul_overflow(a, b, &n)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n);
}

void *memalign(size_t al, size_t n)
{
	return fail_now() ? NULL : __libc_memalign(al, n);
}

void *aligned_alloc(size_t al, size_t n)
{
	return memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
	void *p;

	if (al < sizeof(void *) || (al & (al - 1)))
		return EINVAL;
	if (fail_now())
		return ENOMEM;
	p = __libc_memalign(al, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *valloc(size_t n)
{
	return memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void *pvalloc(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return memalign(pg, (n + pg - 1) & ~(pg - 1));
}

__attribute__((destructor)) static void report(void)
{
	const char *path = getenv("MALLOC_FAIL_FILE");
	FILE *f;

	if (!path)
		return;
	flag_path = NULL;        /* fopen must not fail now */
	f = fopen(path, "w");
	if (!f)
		return;
	fprintf(f, "calls=%ld armed_calls=%ld failed=%ld\n", atomic_load(&calls),
		atomic_load(&armed_calls), atomic_load(&failed));
	fclose(f);
}
