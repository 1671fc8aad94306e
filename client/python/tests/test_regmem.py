"""Registered memory from Python (issue #14): kvtier.SharedMemory,
Client.register / unregister, mget_to / mput_from, the jobs
(submit_mget_to, submit_mput_from, poll) and the poll fd (fileno), with
the names DESIGN.md fixes; an SGLang-style pool (K and V halves apart), a
vLLM-style /dev/shm file (row b at b * row), and the errors.  numpy is
required (tests/integ/test_python.sh skips the suite without it)."""

import errno
import fcntl
import os
import select
import selectors
import unittest

import numpy as np

import kvtier
from kvtd import Daemon


def pattern(n, seed):
    return ((np.arange(n, dtype=np.uint64) * 2654435761 + seed) %
            65521).astype(np.uint16)


class SharedMemoryTest(unittest.TestCase):
    def test_buffer_and_seals(self):
        with kvtier.SharedMemory(1 << 20) as m:
            self.assertEqual(m.size, 1 << 20)
            self.assertEqual(len(m), 1 << 20)
            fd = m.fileno()
            self.assertGreaterEqual(fd, 0)
            a = np.frombuffer(m, np.uint16)
            a[:] = 7
            self.assertEqual(bytes(m[:4]), b"\x07\x00\x07\x00")
            # Sealed against shrinking: no transfer into it can fault.
            with self.assertRaises(OSError) as cm:
                os.ftruncate(fd, 4096)
            self.assertEqual(cm.exception.errno, errno.EPERM)
            # Views keep it open.
            with self.assertRaises(BufferError):
                m.close()
            del a
        self.assertTrue(m.closed)
        with self.assertRaises(ValueError):
            m.fileno()
        m.close()  # idempotent
        with self.assertRaises(kvtier.InvalidArgument):
            kvtier.SharedMemory(0)


class RegmemTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()
        cls.c = kvtier.Client(cls.d.socket)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.d.stop()

    def test_sglang_pages(self):
        """64 MHA pages, K halves in the first half of the pool and V
        halves in the second, stored and read back into another pool."""
        n, half = 64, 64 << 10
        src = kvtier.SharedMemory(2 * n * half)
        dst = kvtier.SharedMemory(2 * n * half)
        rs, rd = self.c.register(src), self.c.register(dst)
        self.assertNotEqual(rs, rd)
        a = np.frombuffer(src, np.uint16)
        a[:] = pattern(a.size, 3)
        keys = [b"page-%d" % i for i in range(n)]

        def segs(r):
            return [[(r, i * half, half), (r, n * half + i * half, half)]
                    for i in range(n)]

        self.assertEqual(self.c.mput_from(keys, segs(rs), ns="sg",
                                          dtype="bf16"), [True] * n)
        a[:] = 0  # copied out already
        lens = self.c.mget_to(keys, segs(rd), ns="sg")
        self.assertEqual(lens, [2 * half] * n)
        b = np.frombuffer(dst, np.uint16)
        self.assertTrue(np.array_equal(b, pattern(b.size, 3)))
        # A miss, and a value of another length (raised after the batch).
        self.assertEqual(self.c.mget_to([b"absent"], [[(rd, 0, 10)]],
                                        ns="sg"), [None])
        with self.assertRaises(kvtier.BufferTooSmall) as cm:
            self.c.mget_to(keys[:2], [[(rd, 0, 2 * half)],
                                      [(rd, 0, half)]], ns="sg")
        self.assertEqual(cm.exception.needed, 2 * half)
        self.assertEqual(cm.exception.statuses, [0, kvtier.ERANGE])
        st = self.c.stats()["regions"]
        self.assertGreaterEqual(st["copies_in"], n)
        self.assertGreaterEqual(st["copied_out_bytes"], 2 * n * half)
        del a, b
        self.c.unregister(rs)
        self.c.unregister(rd)
        with self.assertRaises(kvtier.NotFound):
            self.c.unregister(rd)
        src.close()
        dst.close()

    def test_vllm_slots(self):
        """vLLM's CPU tier: a file in /dev/shm, slot b at b * row."""
        path = "/dev/shm/kvtier-pytest-%d" % os.getpid()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except OSError:
            self.skipTest("no /dev/shm")
        os.unlink(path)
        f = os.fdopen(fd, "r+b")
        row, slots = 96 << 10, 16
        f.truncate(row * slots)
        import mmap
        m = mmap.mmap(f.fileno(), row * slots)
        # primary_kv_view: 2-D int8, row b is slot b.
        view = np.frombuffer(m, np.int8).reshape(slots, row)
        self.assertEqual(memoryview(view).shape, (slots, row))
        r = self.c.register(f)  # anything with fileno()
        for b in range(slots):
            view[b] = b
        keys = [b"blk%d" % b for b in range(slots)]
        ok = self.c.mput_from(keys, [[(r, b * row, row)] for b in range(slots)],
                              ns="vllm")
        self.assertTrue(all(ok))
        m[:] = b"\0" * len(m)
        # Into the slots in reverse.
        got = self.c.mget_to(keys, [[(r, (slots - 1 - b) * row, row)]
                                    for b in range(slots)], ns="vllm")
        self.assertEqual(got, [row] * slots)
        for b in range(slots):
            self.assertTrue((view[slots - 1 - b] == b).all())
        # Truncated under the daemon: a fault, contained, reported.
        f.truncate(0)
        with self.assertRaises(kvtier.RegionFault):
            self.c.mget_to(keys[:1], [[(r, 0, row)]], ns="vllm")
        with self.assertRaises(kvtier.RegionFault):  # broken from now on
            self.c.mget_to(keys[:1], [[(r, 0, row)]], ns="vllm")
        self.c.unregister(r)
        self.assertGreaterEqual(self.c.stats()["regions"]["faults_contained"],
                                1)
        self.assertTrue(self.c.exists(keys[0], ns="vllm"))  # still serving
        del view
        m.close()
        f.close()

    def test_jobs_and_fileno(self):
        n, size = 32, 32 << 10
        shm = kvtier.SharedMemory(2 * n * size)
        r = self.c.register(shm, size=2 * n * size)
        a = np.frombuffer(shm, np.uint8)
        a[:n * size] = np.arange(n * size, dtype=np.uint64) % 251
        fd = self.c.fileno()
        self.assertEqual(self.c.fileno(), fd)
        self.assertEqual(self.c.poll(0), [])
        self.assertEqual(self.c.poll(), [])  # nothing in flight
        keys = [b"j%d" % i for i in range(n)]
        puts = [self.c.submit_mput_from(keys[i:i + 4],
                                        [[(r, k * size, size)]
                                         for k in range(i, i + 4)],
                                        ns="jobs")
                for i in range(0, n, 4)]
        done = []
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        while len(done) < len(puts):
            self.assertTrue(sel.select(5))
            done += self.c.poll(0)
        self.assertEqual([j for j, _ in done], puts)
        self.assertTrue(all(all(res) for _, res in done))
        # Drained: the fd is not readable any more.
        self.assertEqual(select.select([fd], [], [], 0)[0], [])
        gets = [self.c.submit_mget_to([k], [[(r, (n + i) * size, size)]],
                                      ns="jobs")
                for i, k in enumerate(keys)]
        # A synchronous call reads the jobs' replies first; then the fd is
        # readable with nothing left on the socket.
        self.assertTrue(self.c.exists(keys[0], ns="jobs"))
        self.assertEqual(select.select([fd], [], [], 0)[0], [fd])
        res = self.c.poll(0)
        self.assertEqual([j for j, _ in res], gets)
        self.assertEqual([x for _, l in res for x in l], [size] * n)
        self.assertTrue(np.array_equal(a[n * size:], a[:n * size]))
        self.assertEqual(select.select([fd], [], [], 0)[0], [])
        # A refused job: every key carries the refusal.
        j = self.c.submit_mget_to(keys[:2], [[(r + 99, 0, 1)]] * 2, ns="jobs")
        (jid, out), = self.c.poll(5)
        self.assertEqual(jid, j)
        self.assertIsInstance(out[0], kvtier.ProtocolError)
        self.assertEqual(out[0].code, kvtier.EBADREQ)
        del a
        self.c.unregister(r)
        shm.close()

    def test_errors(self):
        with self.assertRaises(kvtier.InvalidArgument):
            self.c.mget_to([b"k"], [])  # a segment list per key
        with self.assertRaises(kvtier.InvalidArgument):
            self.c.mget_to([b"k"], [[(1, 0)]])
        with self.assertRaises(kvtier.ProtocolError):
            self.c.mget_to([b"k"], [[(12345, 0, 1)]])  # no such region
        path = os.path.join(self.d.dir, "on-disk")
        with open(path, "w+b") as f:
            f.truncate(4096)
            with self.assertRaises(kvtier.Denied):
                self.c.register(f)
        # A file open read-only is registered read-only: a source only.
        with kvtier.SharedMemory(8192) as m:
            ro = os.open("/proc/self/fd/%d" % m.fileno(), os.O_RDONLY)
            r = self.c.register(ro)
            self.assertEqual(self.c.mput_from([b"ro"], [[(r, 0, 100)]]),
                             [True])
            with self.assertRaises(kvtier.ProtocolError):
                self.c.mget_to([b"ro"], [[(r, 0, 100)]])
            self.c.unregister(r)
            os.close(ro)
        with self.assertRaises(kvtier.InvalidArgument):
            self.c.register(-1)

    def test_forked(self):
        m = kvtier.SharedMemory(4096)
        r = self.c.register(m)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.c.mget_to([b"k"], [[(r, 0, 1)]])
            except kvtier.ClientForked:
                try:
                    self.c.poll(0)
                except kvtier.ClientForked:
                    code = 0
            except BaseException:
                pass
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.c.mget_to([b"absent"], [[(r, 0, 1)]]), [None])
        self.c.unregister(r)
        m.close()


if __name__ == "__main__":
    unittest.main()
