/*
 * kvt_valgrind.h - telling memcheck about bytes the kernel wrote.
 *
 * valgrind does not see the kernel write into a buffer through io_uring,
 * and would report those bytes uninitialised.  The `make valgrind` build
 * (-DKVT_VALGRIND) tells memcheck that the bytes a completion reports are
 * defined; in any other build KVT_IO_DEFINED is nothing.
 */
#ifndef KVT_VALGRIND_H
#define KVT_VALGRIND_H

#ifdef KVT_VALGRIND
#include <valgrind/memcheck.h>
#define KVT_IO_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#else
#define KVT_IO_DEFINED(p, n) ((void)sizeof(p), (void)sizeof(n))
#endif

#endif /* KVT_VALGRIND_H */
