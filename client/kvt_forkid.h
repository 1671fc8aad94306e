/*
 * kvt_forkid.h - which process this is, as far as inherited state goes.
 * Internal to libkvtier.
 *
 * A connection (and the process's mapping of the arena) belongs to the
 * process that made it.  After fork() the child holds a copy of the handle
 * and of its socket; a request from the child then interleaves on the
 * parent's socket with the parent's own, and each reads the other's
 * replies: another key's value, silently (issue #17).  Every call
 * therefore compares the id its handle was made under with the caller's,
 * and a child gets KVT_EFORKED instead.
 *
 * The id is a word in a page mapped with MADV_WIPEONFORK, which the kernel
 * hands a child zero-filled: whatever made the child (fork(), _Fork(), a
 * raw clone() without CLONE_VM), with no handler needing to run.  Reading
 * it costs a load; getpid() is a system call on glibc since 2.25 (about
 * 150 ns on the dev VM, as much as the rest of a cheap call).  Where the
 * kernel lacks MADV_WIPEONFORK (before 4.14), a pthread_atfork() child
 * handler zeroes the word instead, which covers fork() but not _Fork().
 */
#ifndef KVT_FORKID_H
#define KVT_FORKID_H

#include <stdint.h>

/*
 * The calling process's id: never 0, the same for every thread of a
 * process, and different in a child from every id its ancestors handed
 * out (so a handle made before a fork never matches the child's id).
 * Thread safe; the first call in a process (or the first since its fork)
 * takes a few atomic operations more.
 */
uint64_t kvt_forkid_get(void);

#endif /* KVT_FORKID_H */
