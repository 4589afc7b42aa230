/* config_load.c - config_load(): config_parse_file() in a child process.
 *
 * The child is forked with the daemon's signal handlers reset, every fd but
 * stdio and the pipe closed, its CPU time limited to 3 s, its address space
 * to what the daemon has mapped + 256 MiB and no core dump, so that a
 * parser crash, exit() (libconfig 1.5 exit()s on some inputs) or hang
 * cannot take the daemon down.  It writes its result (struct echod_config
 * is flat: no pointers) to a pipe; the parent checks it is well formed.
 * The deadline (5 s) can be changed with the environment variable
 * ECHOD_CONFIG_PARSE_TIMEOUT_MS (1..600000), for tests.  The caller must
 * not reap children it does not know (waitpid(-1, ...)) while config_load()
 * runs.
 */
#include "autoconfig.h"

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PARSE_TIMEOUT_MS     5000
#define PARSE_TIMEOUT_ENV    "ECHOD_CONFIG_PARSE_TIMEOUT_MS"
#define CHILD_AS_EXTRA       (256UL * 1024 * 1024)
#define CHILD_CPU_SECONDS    3

/* Test hook: the unit test defines it to make the config_load() child crash,
 * exit or hang.  Nothing else does, so it is NULL in the daemon. */
void config_test_child_hook(void) __attribute__((weak));

/* What the child writes to the pipe. */
struct load_result {
	int status;                     /* config_parse_file()'s result */
	struct echod_config cfg;        /* valid if status == 0 */
	struct config_errors errs;
};

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Current address space size of this process, in bytes, or 0. */
static unsigned long vm_size(void)
{
	char buf[128];
	unsigned long pages = 0;
	ssize_t n;
	int fd;

	fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%lu", &pages) != 1)
		return 0;
	return pages * (unsigned long)sysconf(_SC_PAGESIZE);
}

/* Lower a limit, never above its current hard limit. */
static void child_limit(int resource, rlim_t soft, rlim_t hard)
{
	struct rlimit rl;

	if (getrlimit(resource, &rl) < 0)
		return;
	if (rl.rlim_max != RLIM_INFINITY && hard > rl.rlim_max)
		hard = rl.rlim_max;
	if (soft > hard)
		soft = hard;
	rl.rlim_cur = soft;
	rl.rlim_max = hard;
	setrlimit(resource, &rl);
}

static void child_setup(int wfd)
{
	static const int dfl[] = {
		SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM,
		SIGCHLD, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGXCPU,
		SIGXFSZ,
	};
	struct sigaction sa;
	struct rlimit rl;
	unsigned long vm;
	sigset_t none;
	size_t i;

	/* the daemon's handlers and mask are not the parser's */
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = SIG_DFL;
	for (i = 0; i < sizeof(dfl) / sizeof(dfl[0]); i++)
		sigaction(dfl[i], &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	/* keep only stdio and the pipe: no listener stays open in a child */
	if (wfd > 3)
		close_range(3, (unsigned)wfd - 1, 0);
	close_range(wfd >= 3 ? (unsigned)wfd + 1 : 3, ~0U, 0);

	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	child_limit(RLIMIT_CPU, CHILD_CPU_SECONDS, CHILD_CPU_SECONDS + 1);
	/* relative to what the daemon already maps: a multi-threaded daemon
	 * easily has more than 256 MiB of address space reserved */
	vm = vm_size();
	if (vm)
		child_limit(RLIMIT_AS, vm + CHILD_AS_EXTRA, vm + CHILD_AS_EXTRA);
}

static void child_run(const char *path, int wfd, struct load_result *unused)
	__attribute__((noreturn));
static void child_run(const char *path, int wfd, struct load_result *unused)
{
	struct load_result *res;

	free(unused);   /* the parent's buffer */
	child_setup(wfd);
	if (config_test_child_hook)
		config_test_child_hook();
	res = calloc(1, sizeof(*res));
	if (!res)
		_exit(125);
	res->status = config_parse_file(path, &res->cfg, &res->errs);
	if (write_all(wfd, res, sizeof(*res)) < 0)
		_exit(126);
	free(res);
	_exit(0);
}

static int parse_timeout_ms(void)
{
	const char *s = getenv(PARSE_TIMEOUT_ENV);
	char *end;
	long v;

	if (!s || !*s)
		return PARSE_TIMEOUT_MS;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > 600000)
		return PARSE_TIMEOUT_MS;
	return (int)v;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether a result read from the child is well formed. */
static bool result_sane(struct load_result *res)
{
	unsigned i, n;

	if (res->status > 0 || res->status < -4095)
		return false;
	n = res->errs.n < CONFIG_MAX_ERRORS ? res->errs.n : CONFIG_MAX_ERRORS;
	for (i = 0; i < n; i++)
		res->errs.msg[i][CONFIG_ERROR_MAX - 1] = '\0';
	if (res->status < 0)
		return res->errs.n > 0;
	if (res->cfg.n_listen > CONFIG_MAX_LISTEN || res->cfg.n_cores > CONFIG_MAX_CORES ||
	    res->cfg.n_allow > CONFIG_MAX_PREFIXES || res->cfg.n_deny > CONFIG_MAX_PREFIXES)
		return false;
	for (i = 0; i < res->cfg.n_allow; i++)
		if (res->cfg.allow[i].len > 128)
			return false;
	for (i = 0; i < res->cfg.n_deny; i++)
		if (res->cfg.deny[i].len > 128)
			return false;
	res->cfg.path[CONFIG_PATH_MAX - 1] = '\0';
	for (i = 0; i < CONFIG_MAX_LISTEN; i++)
		res->cfg.listen[i].text[CONFIG_ADDR_MAX - 1] = '\0';
	res->cfg.metrics.address.text[CONFIG_ADDR_MAX - 1] = '\0';
	return true;
}

int config_load(const char *path, struct echod_config *cfg,
		struct config_errors *errs)
{
	struct load_result *res;
	struct pollfd pfd;
	long long deadline;
	size_t got = 0;
	bool timed_out = false, killed = false, reaped = false;
	int fds[2], status = 0, r;
	pid_t pid;

	if (errs)
		errs->n = 0;
	if (!path || !cfg)
		return -EINVAL;
	res = malloc(sizeof(*res));
	if (!res) {
		config_error(errs, "%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		r = -errno;
		config_error(errs, "%s: pipe: %s", path, strerror(-r));
		free(res);
		return r;
	}
	deadline = now_ms() + parse_timeout_ms();
	pid = fork();
	if (pid < 0) {
		r = -errno;
		config_error(errs, "%s: fork: %s", path, strerror(-r));
		close(fds[0]);
		close(fds[1]);
		free(res);
		return r;
	}
	if (pid == 0) {
		close(fds[0]);
		child_run(path, fds[1], res);
	}
	close(fds[1]);
	/* poll() says when to read; should this fail, a read still returns */
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);

	pfd.fd = fds[0];
	pfd.events = POLLIN;
	while (got < sizeof(*res)) {
		long long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0) {
			timed_out = true;
			break;
		}
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		n = read(fds[0], (char *)res + got, sizeof(*res) - got);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			break;          /* the child is gone */
		else if (errno != EINTR && errno != EAGAIN)
			break;
	}
	close(fds[0]);

	/* reap the child; kill it if it does not end by the deadline */
	if (timed_out && kill(pid, SIGKILL) == 0)
		killed = true;
	for (;;) {
		pid_t w = waitpid(pid, &status, killed ? 0 : WNOHANG);

		if (w == pid) {
			reaped = true;
			break;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break;          /* ECHILD: reaped by someone else */
		if (now_ms() >= deadline) {
			if (kill(pid, SIGKILL) == 0)
				killed = true;
			if (got < sizeof(*res))
				timed_out = true;
			continue;
		} else {
			struct timespec ts = { 0, 1000000 };

			nanosleep(&ts, NULL);
		}
	}

	if (got == sizeof(*res) && result_sane(res)) {
		r = res->status;
		if (r == 0)
			*cfg = res->cfg;
		if (errs)
			*errs = res->errs;
	} else {
		r = -EINVAL;
		if (timed_out)
			config_error(errs, "%s: configuration parser timed out", path);
		else if (reaped && WIFSIGNALED(status))
			config_error(errs, "%s: configuration parser crashed (signal %d)",
				     path, WTERMSIG(status));
		else if (reaped && WIFEXITED(status) && WEXITSTATUS(status) != 0)
			config_error(errs, "%s: configuration parser exited with status %d",
				     path, WEXITSTATUS(status));
		else
			config_error(errs, "%s: configuration parser returned no valid result",
				     path);
	}
	free(res);
	return r;
}
