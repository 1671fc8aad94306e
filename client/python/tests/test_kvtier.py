"""Tests of the kvtier Python client against a private kvtierd (standard
library only)."""

import array
import ctypes
import os
import unittest

import kvtier
from kvtd import ROOT, Daemon


def addr(buf):
    """Address of a writable buffer's memory."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class KvtierTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()
        cls.c = kvtier.Client(cls.d.socket)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.d.stop()

    def test_version(self):
        self.assertEqual(kvtier.version(), "0.1.0")

    def test_put_get(self):
        c = self.c
        v = os.urandom(100000)
        c.put(b"pg", v)
        self.assertEqual(c.get(b"pg"), v)
        self.assertTrue(c.exists(b"pg"))
        # str keys are UTF-8
        c.put("clé", b"x")
        self.assertEqual(c.get("clé".encode("utf-8")), b"x")
        # empty value, bytearray / memoryview / array values
        c.put(b"empty", b"")
        self.assertEqual(c.get(b"empty"), b"")
        c.put(b"ba", bytearray(b"abc"))
        self.assertEqual(c.get(b"ba"), b"abc")
        c.put(b"mv", memoryview(v)[10:20])
        self.assertEqual(c.get(b"mv"), v[10:20])
        a = array.array("f", [1.0, 2.0, 3.0])
        c.put(b"arr", a)
        self.assertEqual(c.get(b"arr"), a.tobytes())
        c.put(b"ttl", b"t", ttl=3600, dtype="fp16")
        self.assertEqual(c.get(b"ttl"), b"t")

    def test_miss(self):
        self.assertIsNone(self.c.get(b"no-such-key"))
        self.assertIsNone(self.c.get_into(b"no-such-key", bytearray(10)))
        self.assertFalse(self.c.exists(b"no-such-key"))
        self.assertFalse(self.c.delete(b"no-such-key"))

    def test_get_into_bytearray_zero_copy(self):
        c = self.c
        v = os.urandom(300000)
        c.put(b"gi", v)
        buf = bytearray(400000)
        before = (id(buf), addr(buf), len(buf))
        n = c.get_into(b"gi", buf)
        self.assertEqual(n, len(v))
        # same object, same memory, same size: received in place
        self.assertEqual((id(buf), addr(buf), len(buf)), before)
        self.assertEqual(bytes(buf[:n]), v)

    def test_put_sends_from_object_memory(self):
        """put hands libkvtier the address of the object's own memory."""
        from unittest import mock
        from kvtier import _lib
        seen = []
        real = _lib.kvt_put

        def spy(c, ns, key, klen, val, vlen, opts):
            seen.append((val, vlen))
            return real(c, ns, key, klen, val, vlen, opts)
        b = os.urandom(70000)
        b_addr = ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value
        ba = bytearray(b)
        with mock.patch.object(_lib, "kvt_put", spy):
            self.c.put(b"zc1", b)                         # read-only bytes
            self.c.put(b"zc2", memoryview(b)[100:600])    # read-only slice
            self.c.put(b"zc3", ba)                        # writable
        self.assertEqual(seen, [(b_addr, 70000), (b_addr + 100, 500),
                                (addr(ba), 70000)])
        self.assertEqual(self.c.get(b"zc2"), b[100:600])

    def test_get_into_memoryview_slice(self):
        c = self.c
        v = os.urandom(5000)
        c.put(b"gimv", v)
        backing = bytearray(b"\xee" * 10000)
        n = c.get_into(b"gimv", memoryview(backing)[1000:7000])
        self.assertEqual(n, 5000)
        # written at offset 1000 of the backing store, nothing around it
        self.assertEqual(bytes(backing[1000:6000]), v)
        self.assertEqual(backing[:1000], b"\xee" * 1000)
        self.assertEqual(backing[7000:], b"\xee" * 3000)

    def test_get_into_rejects_readonly(self):
        self.c.put(b"ro", b"abc")
        with self.assertRaises((TypeError, BufferError)):
            self.c.get_into(b"ro", b"xxxxxxxx")

    def test_buffer_too_small(self):
        c = self.c
        c.put(b"big", b"y" * 1000)
        with self.assertRaises(kvtier.BufferTooSmall) as cm:
            c.get_into(b"big", bytearray(10))
        e = cm.exception
        self.assertIsInstance(e, kvtier.Error)
        self.assertEqual(e.code, kvtier.ERANGE)
        self.assertEqual(e.needed, 1000)
        self.assertTrue(e.message)
        # the connection stays usable
        self.assertEqual(c.get(b"big"), b"y" * 1000)

    def test_namespaces(self):
        c = self.c
        c.put(b"k", b"in-a", ns="ns-a")
        c.put(b"k", b"in-b", ns="ns-b")
        self.assertEqual(c.get(b"k", ns="ns-a"), b"in-a")
        self.assertEqual(c.get(b"k", ns="ns-b"), b"in-b")
        self.assertIsNone(c.get(b"k", ns="ns-c"))
        self.assertIsNone(c.get(b"k"))

    def test_batches(self):
        c = self.c
        ns = "batch"
        vals = {b"b%d" % i: os.urandom(1000 * (i + 1)) for i in range(8)}
        c.mput(vals, ns=ns)
        c.mput([(b"c0", b"zero"), ("c1", bytearray(b"one"))], ns=ns)
        keys = [b"b0", b"missing", b"b3", b"c1", b"b7", b"nope"]
        got = c.mget(keys, ns=ns)
        self.assertEqual(got, [vals[b"b0"], None, vals[b"b3"], b"one",
                               vals[b"b7"], None])
        self.assertEqual(c.mget([], ns=ns), [])
        # values above the running size estimate are fetched again
        big = os.urandom(300000)
        c.put(b"huge", big, ns=ns)
        c._size_hint = 1024
        self.assertEqual(c.mget([b"b0", b"huge"], ns=ns),
                         [vals[b"b0"], big])
        # mget_into: one iovec per key into each buffer's memory
        bufs = [bytearray(8000) for _ in keys]
        addrs = [addr(b) for b in bufs]
        lens = c.mget_into(keys, bufs, ns=ns)
        self.assertEqual(lens, [1000, None, 4000, 3, 8000, None])
        self.assertEqual([addr(b) for b in bufs], addrs)
        self.assertEqual(bytes(bufs[0][:1000]), vals[b"b0"])
        self.assertEqual(bytes(bufs[2][:4000]), vals[b"b3"])
        self.assertEqual(bytes(bufs[3][:3]), b"one")
        self.assertEqual(bytes(bufs[4]), vals[b"b7"])
        with self.assertRaises(kvtier.BufferTooSmall) as cm:
            c.mget_into([b"b0", b"b7"], [bytearray(1000), bytearray(10)],
                        ns=ns)
        self.assertEqual(cm.exception.needed, 8000)
        with self.assertRaises(kvtier.InvalidArgument):
            c.mget_into([b"b0"], [], ns=ns)

    def test_match(self):
        c = self.c
        ns = "match"
        keys = [b"m%d" % i for i in range(6)]
        c.mput([(k, b"v") for k in keys[:3] + keys[4:]], ns=ns)  # hole at 3
        self.assertEqual(c.match(keys, ns=ns), 3)
        self.assertEqual(c.match(keys[:2], ns=ns), 2)
        self.assertEqual(c.match(keys[3:], ns=ns), 0)
        self.assertEqual(c.match([], ns=ns), 0)

    def test_delete(self):
        c = self.c
        c.put(b"del", b"v")
        self.assertTrue(c.delete(b"del"))
        self.assertIsNone(c.get(b"del"))
        self.assertFalse(c.delete(b"del"))

    def test_drop(self):
        c = self.c
        c.mput({b"d%d" % i: b"v" for i in range(5)}, ns="todrop")
        c.put(b"d0", b"keep", ns="other")
        self.assertEqual(c.drop("todrop"), 5)
        self.assertIsNone(c.get(b"d0", ns="todrop"))
        self.assertEqual(c.get(b"d0", ns="other"), b"keep")
        self.assertEqual(c.drop("todrop"), 0)

    def test_prefetch_pin_unpin(self):
        c = self.c
        ns = "pins"
        keys = [b"p%d" % i for i in range(4)]
        c.mput([(k, b"x" * 4096) for k in keys], ns=ns)
        started = c.prefetch(keys + [b"absent"], ns=ns)
        self.assertTrue(0 <= started <= 4)
        self.assertEqual(c.pin(keys + [b"absent"], ns=ns), 4)
        self.assertEqual(c.unpin(keys[:2], ns=ns), 2)
        self.assertEqual(c.unpin(keys, ns=ns), 2)

    def test_stats(self):
        s = self.c.stats()
        for k in ("l1", "l2", "l3", "gets", "puts", "misses", "promotions",
                  "demotions", "evictions", "uptime_s"):
            self.assertIn(k, s)
        for t in ("l1", "l2", "l3"):
            for k in ("entries", "bytes", "capacity_bytes", "hits"):
                self.assertIn(k, s[t])
        self.assertEqual(s["l1"]["capacity_bytes"], 8 << 20)

    def test_hot(self):
        c = self.c
        c.put(b"hotkey", b"h" * 100, ns="hotns")
        for _ in range(50):
            c.get(b"hotkey", ns="hotns")
        h = c.hot(top=5)
        self.assertTrue(1 <= len(h) <= 5)
        e = h[0]
        self.assertEqual(set(e), {"ns", "key", "tier", "size", "hits",
                                  "age_s", "idle_s"})
        self.assertEqual((e["ns"], e["key"], e["size"]),
                         ("hotns", b"hotkey", 100))
        self.assertGreaterEqual(e["hits"], 50)
        self.assertIn(e["tier"], (1, 2, 3))
        for x in h:
            self.assertIsInstance(x["key"], bytes)
            self.assertTrue(x["idle_s"] is None or x["idle_s"] >= 0)
        with self.assertRaises(kvtier.InvalidArgument):
            c.hot(top=0)

    def test_errors(self):
        with self.assertRaises(kvtier.DaemonUnreachable) as cm:
            kvtier.Client(os.path.join(self.d.dir, "no-such.sock"))
        e = cm.exception
        self.assertIsInstance(e, ConnectionError)
        self.assertIsInstance(e, kvtier.Error)
        self.assertTrue(e.code < 0)
        self.assertIn("no-such.sock", e.message)
        c2 = kvtier.Client(self.d.socket)
        with c2:
            c2.put(b"cm", b"v")
        self.assertTrue(c2.closed)
        with self.assertRaises(kvtier.ConnectionClosed):
            c2.get(b"cm")
        c2.close()  # idempotent
        with self.assertRaises(kvtier.InvalidArgument):
            self.c.put(b"", b"v")
        with self.assertRaises(kvtier.InvalidArgument):
            self.c.put(b"k", b"v", dtype="fp64")
        with self.assertRaises(kvtier.TooBig):
            self.c.put(b"k" * 5000, b"v")
        with self.assertRaises(kvtier.InvalidArgument):
            self.c.put(b"k", b"v", ns="x" * 300)
        with self.assertRaises(TypeError):
            self.c.put(b"k", 12345)

    def test_default_socket_env(self):
        old = os.environ.get("KVTIER_SOCKET")
        os.environ["KVTIER_SOCKET"] = self.d.socket
        try:
            with kvtier.Client() as c:
                c.put(b"envsock", b"1")
                self.assertEqual(c.get(b"envsock"), b"1")
        finally:
            if old is None:
                del os.environ["KVTIER_SOCKET"]
            else:
                os.environ["KVTIER_SOCKET"] = old

    def test_dtype_guess(self):
        g = kvtier._dtype_code
        from kvtier._lib import View

        def guess(obj, dtype=None):
            with View(obj) as v:
                return g(v, obj, dtype)
        self.assertEqual(guess(b"abc"), 1)
        self.assertEqual(guess(array.array("f", [1.0])), 4)
        self.assertEqual(guess(array.array("d", [1.0])), 0)
        self.assertEqual(guess(array.array("H", [1])), 2)
        self.assertEqual(guess(array.array("f", [1.0]), "bf16"), 2)
        self.assertEqual(guess(b"x", "none"), 0)


def read_vectors():
    path = os.path.join(ROOT, "tests", "vectors", "prefix_keys.txt")
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            ns_hex, b, toks, arrow, keys = line.split(" ")
            assert arrow == "->"
            ns = b"" if ns_hex == "-" else bytes.fromhex(ns_hex)
            tokens = []
            if toks != "-":
                for item in toks.split(","):
                    if ".." in item:
                        a, z = item.split("..")
                        tokens.extend(range(int(a), int(z) + 1))
                    else:
                        tokens.append(int(item))
            ks = [] if keys == "-" else [bytes.fromhex(k)
                                         for k in keys.split(",")]
            out.append((ns, int(b), tokens, ks))
    return out


class PrefixKeysTest(unittest.TestCase):
    def test_vectors(self):
        vecs = read_vectors()
        self.assertGreater(len(vecs), 10)
        for ns, b, tokens, keys in vecs:
            with self.subTest(ns=ns, b=b, n=len(tokens)):
                # bytes namespaces pass through (they may not be UTF-8)
                self.assertEqual(kvtier.prefix_keys(tokens, ns, b), keys)
                self.assertEqual(kvtier.prefix_keys(
                    array.array("I", tokens), ns, b), keys)

    def test_shared_prefix(self):
        k240 = kvtier.prefix_keys(range(1, 241))
        k40 = kvtier.prefix_keys(list(range(1, 41)))
        self.assertEqual(len(k240), 15)
        self.assertEqual(len(k40), 2)
        self.assertEqual(k240[:2], k40)
        self.assertTrue(all(len(k) == 32 for k in k240))
        self.assertNotEqual(kvtier.prefix_keys(range(1, 41), "m/bf16"), k40)
        self.assertEqual(kvtier.prefix_keys(range(1, 41), block_tokens=8),
                         kvtier.prefix_keys(tuple(range(1, 41)), "", 8))

    def test_bad_tokens(self):
        with self.assertRaises(kvtier.InvalidArgument):
            kvtier.prefix_keys([1, -1])
        with self.assertRaises(kvtier.InvalidArgument):
            kvtier.prefix_keys([2 ** 32])
        with self.assertRaises(kvtier.InvalidArgument):
            kvtier.prefix_keys([1, 2], block_tokens=0)
        with self.assertRaises(kvtier.InvalidArgument):
            kvtier.prefix_keys([1, 2], "n" * 256)
        self.assertEqual(kvtier.prefix_keys([]), [])


if __name__ == "__main__":
    unittest.main()
