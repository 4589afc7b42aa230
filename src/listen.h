/* listen.h - listening sockets: adopted from systemd or bound by echod.
 *
 * Socket activation: fds passed by the service manager (LISTEN_PID,
 * LISTEN_FDS, LISTEN_FDNAMES, read with sd_listen_fds_with_names()) are
 * validated with sd_is_socket_inet() (SOCK_STREAM, listening).  An fd named
 * "metrics" is the metrics endpoint's; fds named "conn.*" or "data.*"
 * are connections handed over through the fd store (kept in ->handed,
 * see handoff.h); every other inet stream listener is an echo listener,
 * and every other inet datagram socket bound to a port (told apart with
 * sd_is_socket_inet(), i.e. SO_TYPE) a UDP echo socket.  Inherited sockets are never closed, shutdown() or
 * re-listen()ed until exit; the LISTEN_* variables are unset once read.
 */
#ifndef ECHOD_LISTEN_H
#define ECHOD_LISTEN_H

#include <stdbool.h>

#include "config.h"

#define LISTEN_MAX 64

struct listener {
	int fd;
	bool inherited;          /* from the service manager: never close */
	int family;              /* AF_INET or AF_INET6 */
	char name[64];           /* "127.0.0.1:7", "[::1]:7" */
};

/* An fd from the service manager that is not a listener: a connection
 * (or its unsent bytes) a previous echod put in the fd store. */
struct handed_fd {
	int fd;
	char name[256];                /* "conn.ID.FLAGS..." or "data.ID" (handoff.h), whole:
					  systemd's FDNAME has at most 255 characters */
};

struct listen_set {
	unsigned n;                    /* echo listeners */
	struct listener l[LISTEN_MAX];
	unsigned n_udp;                /* UDP echo sockets (datagram) */
	struct listener udp[LISTEN_MAX];
	int metrics_fd;                /* inherited metrics listener, or -1 */
	bool activated;                /* fds came from the service manager */
	struct handed_fd *handed;      /* malloc'd; see handoff.h */
	unsigned n_handed;
};

/* Initialise ls to empty (metrics_fd = -1). */
void listen_set_init(struct listen_set *ls);

/* Adopt socket-activated fds, if any.  Returns the number of echo
 * listeners adopted (0 when not socket-activated) or -errno; an fd that
 * is not a listening inet stream socket is an error (-EINVAL, logged
 * with its number and name), as are malformed LISTEN_* variables
 * (-EINVAL, -ERANGE, -EBADF), more than LISTEN_MAX listeners (-EMFILE)
 * and two "metrics" fds; on error nothing is adopted. */
int listen_adopt(struct listen_set *ls);

/* Bind and listen on every address of cfg (with SO_REUSEADDR, and
 * IPV6_V6ONLY on IPv6 so "0.0.0.0" and "::" can coexist), appending to ls.
 * reuseport sets SO_REUSEPORT (one socket per worker).  Non-blocking and
 * close-on-exec.  Returns 0 or -errno (logged, naming the syscall and the
 * address); on error the sockets bound by this call are closed. */
int listen_bind(struct listen_set *ls, const struct echod_config *cfg, bool reuseport);

/* Bind a UDP socket on every address of cfg->udp (IPV6_V6ONLY on IPv6;
 * SO_REUSEPORT with reuseport: one socket per worker, the kernel keeping
 * a flow on one), appending to ls->udp.  Non-blocking and close-on-exec;
 * options are set by listen_udp_options().  0 or -errno (logged); on
 * error the sockets bound by this call are closed. */
int listen_bind_udp(struct listen_set *ls, const struct echod_config *cfg, bool reuseport);

/* Set the options of every UDP socket of sets[0..nsets), bound or
 * inherited: SO_RXQ_OVFL; UDP_GRO per udp.gro (a kernel without it:
 * ENOPROTOOPT, logged once, then left off); SO_RCVBUF per
 * udp.receive_buffer (SO_RCVBUFFORCE first; a notice when the kernel gave
 * less).  At start-up and on a reload (the live settings).  0 or -errno. */
int listen_udp_options(struct listen_set *sets, unsigned nsets, const struct echod_config *cfg);

/* Bind and listen on one address (the metrics endpoint's), as
 * listen_bind() does.  0 or -errno (logged); out->fd is the socket. */
int listen_bind_addr(const struct config_addr *a, int backlog, struct listener *out);

/* Close the sockets echod bound itself (TCP and UDP); inherited ones stay
 * open. */
void listen_close_own(struct listen_set *ls);

/* Format "addr:port" / "[addr]:port" of a bound socket into buf. */
void listen_sockname(int fd, char *buf, size_t len);

#endif
