/*
 * noring.c - runs a command in a sandbox that refuses io_uring, the way a
 * container's seccomp profile does: io_uring_setup, io_uring_enter and
 * io_uring_register fail with EPERM, every other system call is allowed.
 *
 *   noring COMMAND [ARG...]
 *
 * Raw prctl(PR_SET_NO_NEW_PRIVS) + prctl(PR_SET_SECCOMP) with a four-line
 * BPF program, so that the test needs no libseccomp.  Exits 77 (skip) on an
 * architecture it does not know, 126 if the filter cannot be installed,
 * 127 if COMMAND cannot be run.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NORING_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NORING_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define NORING_ARCH AUDIT_ARCH_RISCV64
#endif

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

int main(int argc, char **argv)
{
#ifdef NORING_ARCH
	struct sock_filter prog[] = {
		/* A foreign ABI could reach io_uring by other numbers: deny. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NORING_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1,
			 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K,
			 SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
	};
	struct sock_fprog fprog = {
		.len = (unsigned short)(sizeof(prog) / sizeof(prog[0])),
		.filter = prog,
	};

	if (argc < 2) {
		fprintf(stderr, "usage: noring COMMAND [ARG...]\n");
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0)) {
		fprintf(stderr, "noring: cannot install the seccomp filter: %s\n",
			strerror(errno));
		return 126;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "noring: cannot run %s: %s\n", argv[1],
		strerror(errno));
	return 127;
#else
	(void)argc;
	(void)argv;
	fprintf(stderr, "noring: unknown architecture, cannot filter\n");
	return 77;
#endif
}
