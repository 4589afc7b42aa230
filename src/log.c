/* log.c - see log.h */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static _Atomic int log_level = LOG_INFO;
static _Atomic int log_prefix = 1;

void log_set_level(int level)
{
	atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int log_get_level(void)
{
	return atomic_load_explicit(&log_level, memory_order_relaxed);
}

void log_set_prefix(int on)
{
	atomic_store_explicit(&log_prefix, on, memory_order_relaxed);
}

static void log_vwrite(int prio, int err, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
static void log_vwrite(int prio, int err, const char *fmt, va_list ap)
{
	char line[1024];
	size_t len = 0;
	int n;

	if (prio > log_get_level())
		return;
	if (atomic_load_explicit(&log_prefix, memory_order_relaxed)) {
		n = snprintf(line, sizeof(line), "<%d>", prio);
		len = (size_t)n;
	}
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (n > 0)
		len += (size_t)n;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	if (err) {
		n = snprintf(line + len, sizeof(line) - len, ": %s",
			     strerror(err < 0 ? -err : err));
		if (n > 0)
			len += (size_t)n;
		if (len > sizeof(line) - 2)
			len = sizeof(line) - 2;
	}
	line[len++] = '\n';
	/* best effort: a log line is never worth blocking or failing for */
	while (write(STDERR_FILENO, line, len) < 0 && errno == EINTR)
		;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_vwrite(prio, 0, fmt, ap);
	va_end(ap);
	errno = saved;
}

void log_errno(int prio, int err, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_vwrite(prio, err ? err : EIO, fmt, ap);
	va_end(ap);
	errno = saved;
}
