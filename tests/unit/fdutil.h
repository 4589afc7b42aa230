/* fdutil.h - file descriptors and sockets for the socket activation tests
 * (tests/unit/test_listen.c, tests/fuzz/fuzz_listen.c) and fd leak checks. */
#ifndef ECHOD_FDUTIL_H
#define ECHOD_FDUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* fd moved to the lowest free fd >= min, close-on-exec (fd is closed): the
 * new fd, or -1; a negative fd is returned as it is. */
int fdu_move_above(int fd, int min);

/* Close fds lo .. hi - 1. */
void fdu_close_range(int lo, int hi);

/* The loopback address of family (AF_INET or AF_INET6) and port in *ss; its length. */
socklen_t fdu_loopback(int family, uint16_t port, struct sockaddr_storage *ss);

/* A blocking socket of family and type, bound to an ephemeral loopback
 * port if do_bind, listening if do_listen: the fd, or -1. */
int fdu_loopback_socket(int family, int type, bool do_bind, bool do_listen);

/* Set LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, or unset those given as NULL. */
void fdu_set_listen_env(const char *pid, const char *fds, const char *names);

/* None of LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES is set. */
bool fdu_listen_env_clean(void);

/* fd is open and O_NONBLOCK. */
bool fdu_nonblock(int fd);

/* fd is open and FD_CLOEXEC. */
bool fdu_cloexec(int fd);

/* How many fds the process has open, or -1. */
int fdu_count(void);

#endif
