/* fuzz_listen.c - socket activation (src/listen.c, listen_adopt()):
 * LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as the fuzz input writes
 * them, over fds 3, 4, ... of the kinds it chooses, as tests/unit/
 * test_listen.c does by hand.
 *
 * Input: a header (how many fds to place and of which kind: IPv4 or IPv6
 * TCP listener, bound TCP socket not listening, UDP socket, pipe, AF_UNIX
 * listener, or a gap; how LISTEN_PID and LISTEN_FDS are written; how many
 * listeners the set already holds), then NUL-separated strings used for
 * the variables the header says are free-form.
 *
 * The oracle: whatever the input, the LISTEN_* variables are unset
 * afterwards and no placed fd is closed or replaced; on an error nothing
 * is adopted and no fd is touched (still blocking); on success every
 * adopted fd is one of the placed IPv4/IPv6 listeners, inherited,
 * non-blocking and close-on-exec, in fd order, and something is adopted
 * only for a plain decimal LISTEN_PID equal to ours and a plain decimal
 * LISTEN_FDS.  When the variables are well-formed (plain numbers, simple
 * names) the fuzzer knows the exact answer: the number of echo
 * listeners, the metrics fd, the handed-over fds, or an error for a gap,
 * a socket that is not a TCP listener, two "metrics" fds or more than
 * LISTEN_MAX listeners.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdutil.h"
#include "fuzz.h"
#include "listen.h"
#include "log.h"

#define MAX_PLACED 6
#define MASTER_FD  900          /* the fuzzer's own sockets live here */

enum kind { K_TCP4, K_TCP6, K_BOUND, K_UDP, K_PIPE, K_UNIX, K_GAP, K__COUNT };

static int master[K__COUNT];
static ino_t master_ino[K__COUNT];

static int high(int fd)
{
	static int next = MASTER_FD;
	int nfd;

	FUZZ_CHECK(fd >= 0, "socket setup failed");
	nfd = fdu_move_above(fd, next++);
	FUZZ_CHECK(nfd >= MASTER_FD, "F_DUPFD");
	return nfd;
}

static int tcp(int family, bool do_listen)
{
	int fd = fdu_loopback_socket(family, SOCK_STREAM, true, do_listen);

	FUZZ_CHECK(fd >= 0, "loopback socket (family %d)", family);
	return high(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int p[2], u;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;

	(void)argc;
	(void)argv;
	if (master[K_TCP4])
		return 0;
	/* fds 3 and up are the activation's: one inherited there (from make,
	 * a shell...) is not ours to keep */
	fdu_close_range(3, 3 + MAX_PLACED + 2);
	master[K_TCP4] = tcp(AF_INET, true);
	master[K_TCP6] = tcp(AF_INET6, true);
	master[K_BOUND] = tcp(AF_INET, false);
	master[K_UDP] = high(socket(AF_INET, SOCK_DGRAM, 0));
	FUZZ_CHECK(pipe(p) == 0, "pipe");
	master[K_PIPE] = high(p[0]);
	close(p[1]);
	u = socket(AF_UNIX, SOCK_STREAM, 0);
	/* an abstract name: nothing to clean up */
	snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1, "echod-fuzz-listen-%d", (int)getpid());
	FUZZ_CHECK(u >= 0 && bind(u, (struct sockaddr *)&sun, sizeof(sun)) == 0 && listen(u, 4) == 0,
		   "unix listener");
	master[K_UNIX] = high(u);
	master[K_GAP] = -1;
	for (int k = 0; k < K_GAP; k++) {
		FUZZ_CHECK(fstat(master[k], &st) == 0, "fstat");
		master_ino[k] = st.st_ino;
	}
	log_set_level(LOG_EMERG);
	return 0;
}

/* A plain decimal as systemd writes it (what listen.c insists on). */
static bool plain_decimal(const char *s)
{
	if (!s || *s < '1' || *s > '9' || strlen(s) > 9)
		return false;
	while (*++s)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Names simple enough for the exact oracle: [a-z0-9.]+ joined by ':'. */
static int simple_names(const char *s, char names[][16], int max)
{
	int n = 0;
	size_t len = 0;

	for (;; s++) {
		if (*s == ':' || *s == '\0') {
			if (!len || n == max)
				return -1;
			names[n++][len] = '\0';
			len = 0;
			if (!*s)
				return n;
			continue;
		}
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.') ||
		    len >= 15 || n == max)
			return -1;
		names[n][len++] = *s;
	}
}

static bool handed(const char *name)
{
	return !strncmp(name, "conn.", 5) || !strncmp(name, "data.", 5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size, 0 };
	enum kind kinds[MAX_PLACED];
	char pidbuf[32], fdsbuf[16], *strs[3] = { NULL, NULL, NULL }, *text;
	const char *pid, *fds, *fdnames;
	char names[MAX_PLACED + 2][16];
	struct listen_set ls;
	uint8_t h0, h1, h2;
	unsigned placed, prefill;
	int r;

	if (!master[K_TCP4])
		LLVMFuzzerInitialize(NULL, NULL);
	h0 = fuzz_u8(&in);
	h1 = fuzz_u8(&in);
	h2 = fuzz_u8(&in);
	placed = h0 % (MAX_PLACED + 1);
	for (unsigned i = 0; i < MAX_PLACED; i++)
		kinds[i] = (enum kind)(fuzz_u8(&in) % K__COUNT);
	prefill = h2 & 0x80 ? LISTEN_MAX - (h2 & 7) : h2 % 4;

	/* the free-form strings: the rest, NUL-separated */
	text = malloc(in.n - in.off + 1);
	FUZZ_CHECK(text, "malloc");
	memcpy(text, in.p + in.off, in.n - in.off);
	text[in.n - in.off] = '\0';
	for (size_t off = 0, i = 0; i < 3 && off <= in.n - in.off; i++) {
		strs[i] = text + off;
		off += strlen(text + off) + 1;
	}

	switch ((h1 >> 0) & 3) {                /* LISTEN_PID */
	case 0:
		pid = NULL;
		break;
	case 1:
		snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
		pid = pidbuf;
		break;
	case 2:
		snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid() + 1 + (h1 >> 4));
		pid = pidbuf;
		break;
	default:
		pid = strs[0] ? strs[0] : "";
		break;
	}
	switch ((h1 >> 2) & 3) {                /* LISTEN_FDS */
	case 0:
		fds = NULL;
		break;
	case 1:
	case 2:
		snprintf(fdsbuf, sizeof(fdsbuf), "%u", (h0 >> 4) % (MAX_PLACED + 2));
		fds = fdsbuf;
		break;
	default:
		fds = strs[1] ? strs[1] : "";
		break;
	}
	fdnames = h1 & 0x80 ? (strs[2] ? strs[2] : "") : NULL;

	/* place the fds (blocking, no FD_CLOEXEC, as after exec) */
	fdu_close_range(3, 3 + MAX_PLACED + 2);
	for (unsigned i = 0; i < placed; i++) {
		if (kinds[i] == K_GAP)
			continue;
		fcntl(master[kinds[i]], F_SETFL, fcntl(master[kinds[i]], F_GETFL) & ~O_NONBLOCK);
		FUZZ_CHECK(dup2(master[kinds[i]], 3 + (int)i) == 3 + (int)i, "dup2");
	}
	fdu_set_listen_env(pid, fds, fdnames);

	listen_set_init(&ls);
	ls.n = prefill;          /* listeners bound before (fds not used here) */
	r = listen_adopt(&ls);

	/* always */
	FUZZ_CHECK(fdu_listen_env_clean(), "LISTEN_* left in the environment (r %d)", r);
	for (unsigned i = 0; i < placed; i++) {
		struct stat st;

		if (kinds[i] == K_GAP)
			continue;
		FUZZ_CHECK(fstat(3 + (int)i, &st) == 0 && st.st_ino == master_ino[kinds[i]],
			   "fd %u closed or replaced", 3 + i);
	}
	FUZZ_CHECK(r >= -4095, "r %d", r);
	if (r < 0 || !ls.activated) {
		FUZZ_CHECK(ls.n == prefill && ls.metrics_fd == -1 && !ls.handed && !ls.n_handed &&
			   !ls.activated, "r %d: something adopted", r);
		if (r < 0)
			for (unsigned i = 0; i < placed; i++)
				FUZZ_CHECK(kinds[i] == K_GAP || !fdu_nonblock(3 + (int)i),
					   "r %d: fd %u made non-blocking", r, 3 + i);
	} else {
		FUZZ_CHECK(plain_decimal(pid) && atoi(pid) == (int)getpid() && plain_decimal(fds),
			   "adopted with LISTEN_PID=%s LISTEN_FDS=%s", pid, fds);
		FUZZ_CHECK(ls.n == prefill + (unsigned)r, "n %u, prefill %u, r %d", ls.n, prefill, r);
		for (unsigned i = prefill; i < ls.n; i++) {
			int fd = ls.l[i].fd;

			FUZZ_CHECK(fd >= 3 && fd < 3 + (int)placed &&
				   (kinds[fd - 3] == K_TCP4 || kinds[fd - 3] == K_TCP6),
				   "fd %d adopted as a listener", fd);
			FUZZ_CHECK(i == prefill || fd > ls.l[i - 1].fd, "listeners out of order");
			FUZZ_CHECK(ls.l[i].inherited && fdu_nonblock(fd) && fdu_cloexec(fd),
				   "fd %d: inherited, O_NONBLOCK, FD_CLOEXEC", fd);
			FUZZ_CHECK(ls.l[i].family == (kinds[fd - 3] == K_TCP4 ? AF_INET : AF_INET6),
				   "fd %d: family %d", fd, ls.l[i].family);
		}
		if (ls.metrics_fd >= 0)
			FUZZ_CHECK(ls.metrics_fd >= 3 && ls.metrics_fd < 3 + (int)placed &&
				   (kinds[ls.metrics_fd - 3] == K_TCP4 || kinds[ls.metrics_fd - 3] == K_TCP6),
				   "metrics fd %d", ls.metrics_fd);
		for (unsigned i = 0; i < ls.n_handed; i++)
			FUZZ_CHECK(handed(ls.handed[i].name) && ls.handed[i].fd >= 3 &&
				   ls.handed[i].fd < 3 + (int)placed, "handed fd %d (%s)",
				   ls.handed[i].fd, ls.handed[i].name);
	}

	/* the exact answer, for well-formed variables */
	if (pid && plain_decimal(pid) && atoi(pid) == (int)getpid() && fds && plain_decimal(fds)) {
		int n = atoi(fds), nn = -1;
		bool bad = false;
		int echo = 0, metrics = -1, nhanded = 0;

		if (n == 0) {
			FUZZ_CHECK(r == 0 && !ls.activated, "LISTEN_FDS=0: %d", r);
			nn = -1;
		} else if (!fdnames) {
			nn = n;
			for (int i = 0; i < n && i < MAX_PLACED + 2; i++)
				strcpy(names[i], "unknown");
		} else {
			nn = simple_names(fdnames, names, MAX_PLACED + 2);
		}
		if (nn >= 0) {
			if (nn != n)
				bad = true;              /* libsystemd: -EINVAL */
			for (int i = 0; i < n && !bad; i++) {
				enum kind k = i < (int)placed ? kinds[i] : K_GAP;

				if (k == K_GAP) {
					bad = true;      /* -EBADF */
				} else if (handed(names[i])) {
					nhanded++;
				} else if (k != K_TCP4 && k != K_TCP6) {
					bad = true;      /* not a listening TCP socket */
				} else if (!strcmp(names[i], "metrics")) {
					if (metrics >= 0)
						bad = true;
					metrics = 3 + i;
				} else {
					echo++;
				}
			}
			if (prefill + (unsigned)echo > LISTEN_MAX)
				bad = true;              /* -EMFILE */
			if (bad)
				FUZZ_CHECK(r < 0, "LISTEN_FDS=%s LISTEN_FDNAMES=%s: %d, expected an error",
					   fds, fdnames ? fdnames : "(unset)", r);
			else
				FUZZ_CHECK(r == echo && ls.metrics_fd == metrics &&
					   ls.n_handed == (unsigned)nhanded && ls.activated,
					   "LISTEN_FDS=%s LISTEN_FDNAMES=%s: r %d metrics %d handed %u, "
					   "expected %d %d %d", fds, fdnames ? fdnames : "(unset)", r,
					   ls.metrics_fd, ls.n_handed, echo, metrics, nhanded);
		}
	} else if (!pid || (plain_decimal(pid) && atoi(pid) != (int)getpid())) {
		FUZZ_CHECK(r == 0 && !ls.activated, "LISTEN_PID=%s: %d", pid ? pid : "(unset)", r);
	}

	free(ls.handed);
	free(text);
	fdu_close_range(3, 3 + MAX_PLACED + 2);
	return 0;
}
