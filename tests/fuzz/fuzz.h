/* fuzz.h - shared by the libFuzzer targets in tests/fuzz.
 *
 * Each target defines LLVMFuzzerTestOneInput() (and may define
 * LLVMFuzzerInitialize()).  It is linked either with libFuzzer
 * (clang -fsanitize=fuzzer, `./configure --enable-fuzzing`, `make fuzz`)
 * or with replay.c, a main() that feeds every file of the target's seed
 * corpus to it and speaks TAP (`make check`, any compiler).
 *
 * FUZZ_CHECK(cond, fmt, ...) is the oracle: when cond is false it prints
 * the message and aborts, which libFuzzer records as a crash (and the
 * replay test as a failure). */
#ifndef ECHOD_FUZZ_H
#define ECHOD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond, ...)                                                   \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__,  \
				__LINE__, #cond);                               \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			abort();                                                \
		}                                                               \
	} while (0)

/* A reader of the fuzz input: bytes past the end read as 0. */
struct fuzz_in {
	const uint8_t *p;
	size_t n, off;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	return in->off < in->n ? in->p[in->off++] : 0;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t v = fuzz_u8(in);

	return (uint16_t)(v | (uint16_t)fuzz_u8(in) << 8);
}

static inline uint64_t fuzz_u64(struct fuzz_in *in)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)fuzz_u8(in) << (8 * i);
	return v;
}

static inline int fuzz_more(const struct fuzz_in *in)
{
	return in->off < in->n;
}

#endif
