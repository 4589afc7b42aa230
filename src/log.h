/* log.h - logging to stderr with sd-daemon "<N>" priority prefixes.
 *
 * One write(2) per message, so lines from several threads never mix.
 * log_warn() and log_err() append ": strerror(err)" for an explicit errno
 * value (positive or negative), as in "accept4: Too many open files". */
#ifndef ECHOD_LOG_H
#define ECHOD_LOG_H

#include <syslog.h>

/* Messages above this priority (LOG_ERR .. LOG_DEBUG) are dropped. */
void log_set_level(int level);
int log_get_level(void);

/* Prefix each line with "<N>" (default on). */
void log_set_prefix(int on);

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* As log_msg, with ": strerror(err)" appended; err may be negative. */
void log_errno(int prio, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
