/* seccomp_deny.c - run a program with io_uring_setup(2) failing.
 *
 *   seccomp_deny ERRNO PROGRAM [ARG]...
 *
 * Installs a seccomp filter that makes io_uring_setup return -ERRNO
 * (EPERM, ENOSYS, EINVAL or a number), as a container runtime's profile
 * or a hardened unit would, then execs PROGRAM.  Used by the tests of
 * the io_uring fallback. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "seccomp_deny: unsupported architecture"
#endif

static int parse_errno(const char *s)
{
	char *end;
	long v;

	if (!strcmp(s, "EPERM"))
		return EPERM;
	if (!strcmp(s, "ENOSYS"))
		return ENOSYS;
	if (!strcmp(s, "EINVAL"))
		return EINVAL;
	if (!strcmp(s, "EACCES"))
		return EACCES;
	v = strtol(s, &end, 10);
	return (*s && !*end && v > 0 && v < 4096) ? (int)v : -1;
}

int main(int argc, char **argv)
{
	int err;

	if (argc < 3 || (err = parse_errno(argv[1])) < 0) {
		fprintf(stderr, "usage: seccomp_deny EPERM|ENOSYS|EINVAL|N PROGRAM [ARG]...\n");
		return 2;
	}
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = sizeof(filter) / sizeof(filter[0]),
		.filter = filter,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		perror("seccomp_deny: prctl PR_SET_NO_NEW_PRIVS");
		return 1;
	}
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		perror("seccomp_deny: prctl PR_SET_SECCOMP");
		return 1;
	}
	execvp(argv[2], argv + 2);
	fprintf(stderr, "seccomp_deny: exec %s: %s\n", argv[2], strerror(errno));
	return 127;
}
