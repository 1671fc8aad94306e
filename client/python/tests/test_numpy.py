"""numpy tests of the kvtier Python client.  numpy is required here: an
ImportError fails the module loudly; tests/integ/test_python.sh decides
whether to run it (it prints a skip line when numpy is missing)."""

import subprocess
import sys
import unittest
from unittest import mock

import numpy as np

import kvtier
from kvtd import Daemon

MIB2 = 2 << 20

# Written by another process: a child puts a block that the parent reads.
CHILD = r"""
import sys, numpy as np, kvtier
sock, ns, key, seed = sys.argv[1:5]
a = (np.arange(1 << 20, dtype=np.uint32) * int(seed) % 65521).astype(np.uint16)
with kvtier.Client(sock) as c:
    c.put(key.encode(), a.view(np.float16), ns=ns)
print(a.nbytes)
"""


def expected(seed):
    return (np.arange(1 << 20, dtype=np.uint32) * seed % 65521).astype(np.uint16)


class NumpyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()
        cls.c = kvtier.Client(cls.d.socket)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.d.stop()

    def child_put(self, ns, key, seed):
        r = subprocess.run([sys.executable, "-c", CHILD, self.d.socket, ns,
                            key, str(seed)], capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(int(r.stdout), MIB2)

    def test_cross_process_get_into(self):
        self.child_put("np/fp16", "block0", 7)
        out = np.zeros(1 << 20, dtype=np.float16)
        ptr, ident = out.ctypes.data, id(out)
        n = self.c.get_into(b"block0", out, ns="np/fp16")
        self.assertEqual(n, MIB2)
        # received in place: same object, same memory, the child's values
        self.assertEqual((out.ctypes.data, id(out)), (ptr, ident))
        self.assertTrue(np.array_equal(out.view(np.uint16), expected(7)))
        # ...through shared memory: one copy from the daemon's arena
        self.assertTrue(self.c.shared_memory)
        self.assertGreaterEqual(self.c.stats()["shm"]["gets"], 1)
        # and the socket path returns the very same bytes
        with mock.patch.dict("os.environ", {"KVTIER_SHM": "0"}):
            sock = kvtier.Client(self.d.socket)
        with sock:
            self.assertFalse(sock.shared_memory)
            out2 = np.zeros(1 << 20, dtype=np.float16)
            self.assertEqual(sock.get_into(b"block0", out2, ns="np/fp16"),
                             MIB2)
            self.assertTrue(np.array_equal(out2.view(np.uint16),
                                           out.view(np.uint16)))
        self.assertIsNone(self.c.get_into(b"absent", out, ns="np/fp16"))
        with self.assertRaises(kvtier.BufferTooSmall) as cm:
            self.c.get_into(b"block0", np.zeros(100, np.float16),
                            ns="np/fp16")
        self.assertEqual(cm.exception.needed, MIB2)

    def test_mget_into_arrays(self):
        for i in range(3):
            self.child_put("np/bf16", "L%d" % i, 11 + i)
        keys = [b"L0", b"gap", b"L1", b"L2"]
        # bfloat16-like: uint16 arrays, plus a 2-D one and a slice view
        outs = [np.zeros(1 << 20, np.uint16), np.zeros(16, np.uint16),
                np.zeros((1024, 1024), np.uint16),
                np.zeros(3 << 20, np.uint16)[1 << 20:2 << 20]]
        ptrs = [a.ctypes.data for a in outs]
        self.assertEqual(self.c.match(keys, ns="np/bf16"), 1)
        lens = self.c.mget_into(keys, outs, ns="np/bf16")
        self.assertEqual(lens, [MIB2, None, MIB2, MIB2])
        self.assertEqual([a.ctypes.data for a in outs], ptrs)
        self.assertTrue(np.array_equal(outs[0], expected(11)))
        self.assertTrue(np.array_equal(outs[2].ravel(), expected(12)))
        self.assertTrue(np.array_equal(outs[3], expected(13)))
        got = self.c.mget(keys, ns="np/bf16")
        self.assertEqual(got[0], expected(11).tobytes())
        self.assertIsNone(got[1])

    def test_non_contiguous_refused(self):
        a = np.zeros((64, 64), np.uint16)
        with self.assertRaises((BufferError, TypeError, ValueError)):
            self.c.put(b"nc", a[:, ::2])
        with self.assertRaises((BufferError, TypeError, ValueError)):
            self.c.get_into(b"nc", a[:, ::2])

    def test_dtype_hint(self):
        from kvtier._lib import View

        def guess(a, dtype=None):
            with View(a) as v:
                return kvtier._dtype_code(v, a, dtype)
        self.assertEqual(guess(np.zeros(4, np.float16)), 3)   # fp16
        self.assertEqual(guess(np.zeros(4, np.uint16)), 2)    # bf16-like
        self.assertEqual(guess(np.zeros(4, np.float32)), 4)   # fp32
        self.assertEqual(guess(np.zeros(4, np.uint8)), 1)     # u8
        self.assertEqual(guess(np.zeros(4, np.float64)), 0)
        self.assertEqual(guess(np.zeros(4, np.int32)), 0)
        self.assertEqual(guess(np.zeros(4, np.float16), "bf16"), 2)
        # values are borrowed in place: the address is the array's own,
        # also for a read-only array
        a = np.arange(1000, dtype=np.float32)[10:]
        a.flags.writeable = False
        with View(a) as v:
            self.assertEqual((v.addr, v.nbytes), (a.ctypes.data, 990 * 4))
        # and the hint is accepted by the daemon for each kind
        for dt in (np.float16, np.uint16, np.float32, np.uint8, np.float64):
            a = (np.arange(4096) % 200).astype(dt)
            self.c.put(b"dt", a, ns="np/dt")
            self.assertEqual(self.c.get(b"dt", ns="np/dt"), a.tobytes())

    def test_prefix_keys_uint32_no_copy(self):
        toks = np.arange(1, 241, dtype=np.uint32)
        want = kvtier.prefix_keys(list(range(1, 241)), "m")
        # the array is used in place: the list->array.array path is unused
        with mock.patch.object(kvtier._array, "array",
                               side_effect=AssertionError("copied")):
            self.assertEqual(kvtier.prefix_keys(toks, "m"), want)
        # other integer arrays are converted (and range-checked)
        self.assertEqual(kvtier.prefix_keys(toks.astype(np.int64), "m"), want)
        with self.assertRaises(kvtier.InvalidArgument):
            kvtier.prefix_keys(np.array([-1] * 16, np.int64))


if __name__ == "__main__":
    unittest.main()
