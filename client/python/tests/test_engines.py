"""The engine adapters' modules import without their engines, subclass the
engines' base classes where those import, and their shared helpers
(kvtier._engine) behave.  Standard library only."""

import mmap
import os
import subprocess
import sys
import unittest
import uuid

from kvtier import _engine

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.normpath(os.path.join(HERE, ".."))

IMPORT = r"""
import json, sys
import kvtier.sglang, kvtier.vllm, kvtier.lmcache
out = {
    "sglang_bases": [c.__module__ + "." + c.__name__
                     for c in kvtier.sglang.KvtierHiCacheStorage.__mro__[1:]],
    "vllm_bases": [c.__module__ + "." + c.__name__
                   for c in kvtier.vllm.KvtierSecondaryTier.__mro__[1:]],
    "lmcache_bases": [c.__name__ for c in kvtier.lmcache.KvtierL2Client.__mro__[1:]],
    "engines": sorted(m for m in sys.modules
                      if m.split(".")[0] in ("sglang", "vllm", "lmcache", "torch")),
}
print(json.dumps(out))
"""


def run_import(extra_path=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        ([extra_path] if extra_path else []) + [PKG] +
        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout)


class ImportTest(unittest.TestCase):
    def test_without_engines(self):
        r = run_import()
        self.assertEqual(r["sglang_bases"], ["builtins.object"])
        self.assertEqual(r["vllm_bases"], ["builtins.object"])
        self.assertEqual(r["lmcache_bases"], ["object"])
        self.assertEqual(r["engines"], [])

    def test_engine_base_classes(self):
        r = run_import(os.path.join(HERE, "engines", "sglang"))
        self.assertEqual(r["sglang_bases"][0],
                         "sglang.srt.mem_cache.hicache_storage.HiCacheStorage")
        for tag in ("vllm_b", "vllm_c"):
            r = run_import(os.path.join(HERE, "engines", tag))
            self.assertEqual(r["vllm_bases"][0], "vllm.v1.kv_offload."
                             "tiering.base.SecondaryTierManager", tag)


class HelperTest(unittest.TestCase):
    def test_namespace(self):
        self.assertEqual(_engine.namespace(["a", None, "", "b", 3]), "a/b/3")
        long = _engine.namespace(["x" * 300, "y"])
        self.assertLessEqual(len(long.encode()), 255)
        self.assertNotEqual(long, _engine.namespace(["x" * 300, "z"]))
        self.assertEqual(long, _engine.namespace(["x" * 300, "y"]))
        self.assertEqual(_engine.name_part("meta-llama/Llama 3"),
                         "meta-llama-Llama-3")

    def test_parse_size(self):
        self.assertEqual(_engine.parse_size("256M"), 256 << 20)
        self.assertEqual(_engine.parse_size("1g"), 1 << 30)
        self.assertEqual(_engine.parse_size("4KB"), 4096)
        self.assertEqual(_engine.parse_size(123), 123)
        with self.assertRaises(ValueError):
            _engine.parse_size("lots")

    def test_mapping_of(self):
        path = "/dev/shm/kvtier-test-%s" % uuid.uuid4().hex
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, 4 * mmap.PAGESIZE)
            mm = mmap.mmap(fd, 3 * mmap.PAGESIZE, offset=mmap.PAGESIZE)
            addr, n = _engine.buffer_address(mm)
            st = os.fstat(fd)
            self.assertEqual(_engine.mapping_of(addr + 100, 200),
                             (path, mmap.PAGESIZE + 100, st.st_dev,
                              st.st_ino))
            self.assertIsNone(_engine.mapping_of(addr, n + 1))
            mm.close()
        finally:
            os.close(fd)
            os.unlink(path)
        anon = mmap.mmap(-1, mmap.PAGESIZE)
        self.assertIsNone(_engine.mapping_of(*_engine.buffer_address(anon)))
        anon.close()

    def test_torch_like_buffer(self):
        class T:  # what the helper needs of a torch CPU tensor
            def __init__(self, buf):
                self.buf = buf
                self.device = type("D", (), {"type": "cpu"})()

            def data_ptr(self):
                return _engine.buffer_address(self.buf)[0]

            def numel(self):
                return len(self.buf) // 2

            def element_size(self):
                return 2

            def is_contiguous(self):
                return True
        b = bytearray(b"abcdef")
        buf, owner = _engine.torch_buffer(T(b), writable=True)
        self.assertEqual(bytes(buf), b"abcdef")
        buf[0] = ord("z")
        self.assertEqual(b[:1], b"z")
        self.assertIs(_engine.torch_buffer(b)[0], b)


if __name__ == "__main__":
    unittest.main()
