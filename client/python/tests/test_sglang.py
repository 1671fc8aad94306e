"""kvtier.sglang driven the way SGLang's HiCache drives a dynamic storage
backend, across processes, against a private kvtierd.

Each SGLang process is a child process (this file run as a script) with
the stand-in sglang package (engines/sglang) on its path.  It builds the
backend as SGLang's StorageBackendFactory does for "dynamic" (import the
module, check issubclass(HiCacheStorage), call cls(storage_config,
kwargs), then register_mem_pool_host(pool)) and a host pool laid out as
SGLang's MHA / MLA host pools lay it out, in a memfd as its "shm"
allocator makes it; host_indices are token-level int64 tensors (torch
where importable, numpy otherwise), and calls follow cache_controller.py
(batch_exists, batch_get_v1, batch_set_v1 in batches of pages).  numpy is
required (test_python.sh runs this file only where numpy is installed)."""

import hashlib
import importlib
import json
import mmap
import os
import subprocess
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
STANDINS = os.path.join(HERE, "engines", "sglang")

try:
    import torch
except ImportError:
    torch = None
import numpy as np

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


# --- the engine side (runs in the child processes) --------------------------

def page_hashes(tokens, page_size, prior=None):
    """SGLang's page keys: key_i = sha256(key_{i-1} bytes || the page's
    tokens as u32 LE), as 64-hex strings."""
    out = []
    for i in range(0, len(tokens) - len(tokens) % page_size, page_size):
        h = hashlib.sha256()
        if prior:
            h.update(bytes.fromhex(prior))
        for t in tokens[i:i + page_size]:
            h.update(int(t).to_bytes(4, "little"))
        prior = h.hexdigest()
        out.append(prior)
    return out


class DType:
    """torch.bfloat16's name and size, for a pool without torch."""
    itemsize = 2

    def __str__(self):
        return "torch.bfloat16"


class ShmAllocator:
    """What the pool sees of SGLang's ShmHostTensorAllocator: fds, mms and
    the first of each; each tensor at offset 0 of its own unsealed memfd."""

    def __init__(self):
        self.fds, self.mms = [], []

    @property
    def fd(self):
        return self.fds[0] if self.fds else None

    @property
    def mm(self):
        return self.mms[0] if self.mms else None

    def allocate(self, nbytes):
        fd = os.memfd_create("sglang_host_pool_test", os.MFD_CLOEXEC)
        n = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        os.ftruncate(fd, n)
        mm = mmap.mmap(fd, n, mmap.MAP_SHARED)
        self.fds.append(fd)
        self.mms.append(mm)
        return mm


class DefaultAllocator:
    """The default allocator: anonymous memory, no fd."""

    def allocate(self, nbytes):
        return mmap.mmap(-1, nbytes)


class HostPool:
    """A host KV pool with the attributes and layouts of SGLang's
    MHATokenToKVPoolHost / MLATokenToKVPoolHost (pool_host/mha.py @
    0047d999, mla.py @ 01c0ede3): kv_buffer dims, get_page_buffer_meta()
    pointers, and the flat data pages of the generic path.  Elements are
    bf16, handled as uint16."""

    def __init__(self, mla, layout, pages, page_size=16, layer_num=4,
                 head_num=2, head_dim=64, kv_cache_dim=96, shm=True):
        self.is_mla, self.layout, self.page_size = mla, layout, page_size
        self.layer_num = layer_num
        self.page_num = pages + 1  # SGLang: size // page_size + 1
        self.size = self.page_num * page_size
        self.dtype = torch.bfloat16 if torch is not None else DType()
        self.item = 2
        L, S, P, ps = layer_num, self.size, self.page_num, page_size
        if mla:
            self.kv_lora_rank, self.qk_rope_head_dim = kv_cache_dim - 32, 32
            self.kv_cache_dim = C = kv_cache_dim
            dims = {"layer_first": (L, S, 1, C), "page_first": (S, L, 1, C),
                    "page_first_direct": (P, L, ps, 1, C)}[layout]
        else:
            self.head_num, self.head_dim = H, D = head_num, head_dim
            dims = {"layer_first": (2, L, S, H, D),
                    "page_first": (2, S, L, H, D),
                    "page_first_direct": (2, P, L, ps, H, D)}[layout]
        self.allocator = ShmAllocator() if shm else DefaultAllocator()
        n = int(np.prod(dims))
        self._mm = self.allocator.allocate(n * self.item)
        self.kv_buffer = np.frombuffer(self._mm, dtype=np.uint16,
                                       count=n).reshape(dims)
        self.base = self.kv_buffer.ctypes.data

    def get_page_buffer_meta(self, indices):
        assert len(indices) % self.page_size == 0
        indices = indices.tolist()
        it, L, S, ps = self.item, self.layer_num, self.size, self.page_size
        ptrs = []
        if self.is_mla:
            C = self.kv_cache_dim
            for i in range(0, len(indices), ps):
                if self.layout == "layer_first":
                    for layer in range(L):
                        ptrs.append(self.base + indices[i] * C * it +
                                    layer * S * C * it)
                else:
                    ptrs.append(self.base + indices[i] * L * C * it)
            size = it * ps * C * (1 if self.layout == "layer_first" else L)
            return ptrs, [size] * len(ptrs)
        H, D = self.head_num, self.head_dim
        v_offset = L * S * H * D * it
        for i in range(0, len(indices), ps):
            if self.layout == "layer_first":
                for layer in range(L):
                    k = self.base + indices[i] * H * D * it + \
                        layer * S * H * D * it
                    ptrs += [k, k + v_offset]
            else:
                k = self.base + indices[i] * L * H * D * it
                ptrs += [k, k + v_offset]
        size = it * ps * H * D * (1 if self.layout == "layer_first" else L)
        return ptrs, [size] * len(ptrs)

    def _page(self, index):
        ps = self.page_size
        p = index // ps
        kv = self.kv_buffer
        if self.is_mla:
            return {"layer_first": lambda: kv[:, index:index + ps],
                    "page_first": lambda: kv[index:index + ps],
                    "page_first_direct": lambda: kv[p:p + 1]}[self.layout]()
        return {"layer_first": lambda: kv[:, :, index:index + ps],
                "page_first": lambda: kv[:, index:index + ps],
                "page_first_direct": lambda: kv[:, p:p + 1]}[self.layout]()

    def get_data_page(self, index, flat=True):
        page = self._page(int(index))
        return page.flatten() if flat else page

    def get_dummy_flat_data_page(self):
        return np.zeros(self._page(0).size, dtype=np.uint16)

    def set_from_flat_data_page(self, index, data_page):
        page = self._page(int(index))
        page[...] = np.asarray(data_page).reshape(page.shape)


def pattern(pool, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, size=pool.get_dummy_flat_data_page().size,
                        dtype=np.uint16)


def host_indices(pool, slots):
    """Token-level indices of the pages at slots, as SGLang passes them."""
    idx = np.array([t for s in slots
                    for t in range(s * pool.page_size,
                                   (s + 1) * pool.page_size)],
                   dtype=np.int64)
    return torch.from_numpy(idx) if torch is not None else idx


def storage_config(rank, tp, mla, extra, model=MODEL):
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
    return HiCacheStorageConfig(
        tp_rank=rank, tp_size=tp, pp_rank=0, pp_size=1, attn_cp_rank=0,
        attn_cp_size=1, is_mla_model=mla, enable_storage_metrics=False,
        is_page_first_layout=False, model_name=model, extra_config=extra)


def load_backend(config, pool):
    """What StorageBackendFactory does for "dynamic", then attach's
    register_mem_pool_host()."""
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage
    extra = config.extra_config
    for k in ("backend_name", "module_path", "class_name"):
        assert k in extra, k
    cls = getattr(importlib.import_module(extra["module_path"]),
                  extra["class_name"])
    assert issubclass(cls, HiCacheStorage), cls.__mro__
    backend = cls(config, {})
    backend.register_mem_pool_host(pool)
    return backend


def extra_config(sock, interface_v1=True, allocator="shm"):
    e = {"backend_name": "kvtier", "module_path": "kvtier.sglang",
         "class_name": "KvtierHiCacheStorage", "socket": sock}
    if interface_v1:
        e["interface_v1"] = 1
    if allocator:
        e["allocator"] = allocator
    return e


def check_list(r, n):
    """The v1 calls' contract: a list of n bools, never None."""
    assert isinstance(r, list) and len(r) == n, r
    assert all(isinstance(x, bool) for x in r), r
    return r


def child_store(a):
    """One rank of an instance after prefill: pages written into its host
    pool at a.slots, then backed up (batch_set_v1, or batch_set with
    get_data_page when not interface_v1)."""
    pool = HostPool(a["mla"], a["layout"], a["pages"], shm=a.get("shm", True))
    cfg = storage_config(a["rank"], a["tp"], a["mla"],
                         extra_config(a["socket"], a.get("v1", True)))
    b = load_backend(cfg, pool)
    keys = page_hashes(a["tokens"], pool.page_size)
    slots = a["slots"]
    for i, s in enumerate(slots):
        pool.set_from_flat_data_page(s * pool.page_size,
                                     pattern(pool, a["seed"] + i))
    before = b.batch_exists(keys)
    if a.get("v1", True):
        ok = []
        for i in range(0, len(keys), 128):  # STORAGE_BATCH_SIZE
            part = keys[i:i + 128]
            ok += check_list(b.batch_set_v1(
                part, host_indices(pool, slots[i:i + 128])), len(part))
        assert all(ok), ok
    else:
        data = [pool.get_data_page(s * pool.page_size) for s in slots]
        assert b.batch_set(keys, data) is True
    after = b.batch_exists(keys)
    out = {"ns": b.namespace, "before": before, "after": after}
    b.close()
    return out


def child_load(a):
    """Another instance loads: for each rank a fresh pool, batch_exists,
    then batch_get_v1 (or the generic batch_get with dummy pages) into
    a.slots; the pages must equal the writer's (a.seeds[rank])."""
    out = {}
    keys = page_hashes(a["tokens"], 16)
    for rank in a["ranks"]:
        pool = HostPool(a["mla"], a["layout"], a["pages"])
        cfg = storage_config(rank, a["tp"], a["mla"],
                             extra_config(a["socket"], a.get("v1", True)))
        b = load_backend(cfg, pool)
        slots = a["slots"]
        hit = b.batch_exists(keys)
        if a.get("v1", True):
            got = check_list(b.batch_get_v1(keys, host_indices(pool, slots)),
                             len(keys))
        else:
            dummies = [pool.get_dummy_flat_data_page() for _ in keys]
            data = b.batch_get(keys, dummies)
            got = []
            for i, d in enumerate(data):
                if d is not None:
                    pool.set_from_flat_data_page(slots[i] * pool.page_size, d)
                got.append(d is not None)
        seed = a["seeds"][str(rank)]
        same = [bool(np.array_equal(pool.get_data_page(s * pool.page_size),
                                    pattern(pool, seed + i)))
                for i, s in enumerate(slots)]
        out[str(rank)] = {"ns": b.namespace, "exists": hit, "got": got,
                          "same": same}
        b.close()
    return out


def child_contract(a):
    """Partial hits, per-key results, empty batches, and three threads at
    once (SGLang's prefetch, prefetch I/O and backup threads)."""
    pool = HostPool(False, "page_first", 40)
    b = load_backend(storage_config(0, 1, False, extra_config(a["socket"])),
                     pool)
    keys = page_hashes(list(range(1000, 1000 + 16 * 12)), 16)
    slots = list(range(12))
    for i, s in enumerate(slots):
        pool.set_from_flat_data_page(s * 16, pattern(pool, 500 + i))
    assert b.batch_exists([]) == 0
    assert check_list(b.batch_get_v1([], host_indices(pool, [])), 0) == []
    assert check_list(b.batch_set_v1(keys[:4], host_indices(pool, slots[:4])),
                      4) == [True] * 4
    # pages 4 and 5 missing: batch_exists counts the leading run only
    assert check_list(b.batch_set_v1(keys[6:], host_indices(pool, slots[6:])),
                      6) == [True] * 6
    res = {"exists_gap": b.batch_exists(keys),
           "exists_single": [b.exists(k) for k in keys[3:7]]}
    # a get with holes: True exactly where stored, pages elsewhere untouched
    dst = [20 + i for i in range(12)]
    got = check_list(b.batch_get_v1(keys, host_indices(pool, dst)), 12)
    res["get_holes"] = got
    res["same"] = [bool(np.array_equal(pool.get_data_page(s * 16),
                                       pattern(pool, 500 + i)))
                   for i, s in enumerate(dst)]
    # a wrong host_indices length is the caller's bug: it raises
    try:
        b.batch_get_v1(keys[:2], host_indices(pool, [0]))
        res["short_indices"] = "no error"
    except ValueError:
        res["short_indices"] = "ValueError"
    # three threads at once, as SGLang's storage threads run
    errors = []

    def loop(fn):
        try:
            for _ in range(30):
                fn()
        except Exception as e:  # reported to the parent
            errors.append(repr(e))
    more = page_hashes(list(range(5000, 5000 + 16 * 8)), 16)
    for i in range(8):
        pool.set_from_flat_data_page((32 + i) * 16, pattern(pool, 900 + i))
    threads = [
        threading.Thread(target=loop, args=(lambda: errors.append("exists")
                                            if b.batch_exists(keys[:4]) != 4
                                            else None,)),
        threading.Thread(target=loop, args=(lambda: errors.append("get") if
                         not all(b.batch_get_v1(keys[:4], host_indices(
                             pool, [20, 21, 22, 23]))) else None,)),
        threading.Thread(target=loop, args=(lambda: errors.append("set") if
                         not all(b.batch_set_v1(more[:7], host_indices(
                             pool, list(range(32, 39))))) else None,)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["thread_errors"] = errors
    res["connections"] = len(b._clients.all)
    b.clear()
    res["after_clear"] = b.batch_exists(keys)
    b.close()
    return res


def child_outage(a):
    """A backend that lives through a daemon restart: store, then (the
    parent stops kvtierd) every call fails soft (False, 0, never None, no
    exception), then (the parent starts it again on the same data
    directory) the same backend object reconnects and finds the pages
    (kvtierd spilled them to L3 on SIGTERM)."""
    pool = HostPool(False, "page_first", 12)
    b = load_backend(storage_config(0, 1, False, extra_config(a["socket"])),
                     pool)
    keys = page_hashes(list(range(7000, 7000 + 16 * 8)), 16)
    for i in range(8):
        pool.set_from_flat_data_page(i * 16, pattern(pool, 70 + i))
    assert all(check_list(b.batch_set_v1(keys, host_indices(
        pool, range(8))), 8))
    res = {}
    print("stored", flush=True)
    sys.stdin.readline()  # the parent stopped kvtierd
    res["down_exists"] = b.batch_exists(keys)
    res["down_get"] = check_list(b.batch_get_v1(keys, host_indices(
        pool, range(8))), 8)
    res["down_set"] = check_list(b.batch_set_v1(keys, host_indices(
        pool, range(8))), 8)
    print("tried", flush=True)
    sys.stdin.readline()  # the parent started kvtierd again
    res["up_exists"] = b.batch_exists(keys)
    dst = pool.page_num - 1 - np.arange(8)
    dst = [int(x) for x in dst][:3]
    res["up_get"] = check_list(b.batch_get_v1(keys[:3], host_indices(
        pool, dst)), 3)
    res["same"] = [bool(np.array_equal(pool.get_data_page(s * 16),
                                       pattern(pool, 70 + i)))
                   for i, s in enumerate(dst)]
    b.close()
    return res


CHILDREN = {"store": child_store, "load": child_load,
            "contract": child_contract, "outage": child_outage}


def child_main():
    sys.path.insert(0, STANDINS)
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = json.loads(sys.argv[2])
    out = CHILDREN[sys.argv[1]](args)
    print(json.dumps(out), flush=True)


# --- the tests (parent process) ----------------------------------------------

def child(name, **args):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__),
                             "child", name, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)


def result(p, test):
    out, err = p.communicate(timeout=120)
    test.assertEqual(p.returncode, 0, err)
    return json.loads(out.strip().splitlines()[-1]), err


def tokens(seed, pages):
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, 128000, size=pages * 16 + 5)]


class SGLangTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from kvtd import Daemon
        cls.d = Daemon()
        import kvtier
        cls.c = kvtier.Client(cls.d.socket)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.d.stop()

    def run_child(self, name, **args):
        return result(child(name, socket=self.d.socket, **args), self)

    def traffic(self):
        """(bytes the daemon copied into or out of registered memory, bytes
        that crossed its sockets) so far."""
        s = self.c.stats()
        return (s["regions"]["copied_in_bytes"] +
                s["regions"]["copied_out_bytes"],
                s["bytes_in"] + s["bytes_out"])

    def test_mha_two_tp_ranks_store_another_instance_loads(self):
        """Two TP ranks of one instance store at the same time; a third
        process (another instance, both ranks) loads identical bytes.  The
        pages move through the registered pools: the daemon copies them
        into and out of the memfds, the sockets carry keys and segment
        lists only."""
        page = 2 * 4 * 16 * 2 * 64 * 2  # K and V: layers, tokens, heads, dim, bf16
        copied0, sock0 = self.traffic()
        tok = tokens(1, 20)
        slots = [7, 3, 11, 0, 19, 5, 14, 1, 9, 2, 17, 4, 13, 6, 18, 8, 12,
                 10, 16, 15]
        ps = [child("store", socket=self.d.socket, mla=False,
                    layout="page_first", pages=24, rank=r, tp=2, tokens=tok,
                    slots=slots, seed=1000 * (r + 1)) for r in (0, 1)]
        stores = [result(p, self)[0] for p in ps]
        for r, s in enumerate(stores):
            self.assertEqual((s["before"], s["after"]), (0, 20))
            self.assertIn("/tp%dof2/" % r, s["ns"])
            self.assertIn("page_first/p16/bfloat16/mha-l4h2d64", s["ns"])
        self.assertNotEqual(stores[0]["ns"], stores[1]["ns"])
        got, _ = self.run_child("load", mla=False, layout="page_first",
                                pages=30, ranks=[0, 1], tp=2, tokens=tok,
                                slots=list(range(29, 9, -1)),
                                seeds={"0": 1000, "1": 2000})
        for r in ("0", "1"):
            self.assertEqual(got[r]["exists"], 20)
            self.assertEqual(got[r]["got"], [True] * 20)
            self.assertEqual(got[r]["same"], [True] * 20, "rank " + r)
            self.assertEqual(got[r]["ns"], stores[int(r)]["ns"])
        copied, sock = self.traffic()
        moved = 2 * 2 * 20 * page  # two ranks, stored and loaded
        self.assertGreaterEqual(copied - copied0, moved)
        self.assertLess(sock - sock0, moved // 20, "pages crossed the socket")

    def test_layouts(self):
        """page_first_direct and layer_first (MHA), page_first and
        layer_first (MLA): stored by one process, loaded by another."""
        for n, (mla, layout) in enumerate([(False, "page_first_direct"),
                                           (False, "layer_first"),
                                           (True, "page_first"),
                                           (True, "layer_first")]):
            with self.subTest(mla=mla, layout=layout):
                tok = tokens(10 + n, 6)
                s, _ = self.run_child("store", mla=mla, layout=layout,
                                      pages=8, rank=0, tp=1, tokens=tok,
                                      slots=[5, 1, 6, 0, 2, 3],
                                      seed=3000 + 100 * n)
                self.assertEqual(s["after"], 6)
                self.assertIn(layout + "/", s["ns"])
                g, _ = self.run_child("load", mla=mla, layout=layout,
                                      pages=8, ranks=[0], tp=1, tokens=tok,
                                      slots=[7, 6, 5, 4, 3, 2],
                                      seeds={"0": 3000 + 100 * n})
                self.assertEqual(g["0"]["got"], [True] * 6)
                self.assertEqual(g["0"]["same"], [True] * 6)

    def test_mla_rank1_writes_nothing(self):
        """MLA: TP rank 0 writes; rank 1's backup writes nothing (and says
        True, as SGLang's skipped backup does); every rank reads rank 0's
        pages from the one rank-less namespace."""
        tok = tokens(20, 5)
        s0, _ = self.run_child("store", mla=True, layout="page_first",
                               pages=8, rank=0, tp=2, tokens=tok,
                               slots=[0, 1, 2, 3, 4], seed=4000)
        self.assertEqual(s0["after"], 5)
        self.assertNotIn("/tp", s0["ns"])
        puts = self.c.stats()["puts"]
        s1, _ = self.run_child("store", mla=True, layout="page_first",
                               pages=8, rank=1, tp=2, tokens=tok,
                               slots=[0, 1, 2, 3, 4], seed=4444)
        self.assertEqual(s1["ns"], s0["ns"])
        self.assertEqual(self.c.stats()["puts"], puts, "rank 1 wrote")
        g, _ = self.run_child("load", mla=True, layout="page_first", pages=8,
                              ranks=[0, 1], tp=2, tokens=tok,
                              slots=[7, 6, 5, 4, 3],
                              seeds={"0": 4000, "1": 4000})
        for r in ("0", "1"):
            self.assertEqual(g[r]["same"], [True] * 5, "rank " + r)
        # and a rank-1 store of pages rank 0 never wrote stores nothing
        tok2 = tokens(21, 3)
        s2, _ = self.run_child("store", mla=True, layout="page_first",
                               pages=8, rank=1, tp=2, tokens=tok2,
                               slots=[0, 1, 2], seed=4500)
        self.assertEqual((s2["before"], s2["after"]), (0, 0))

    def test_generic_path_stores_the_same_bytes(self):
        """Without interface_v1 (batch_set of get_data_page tensors,
        batch_get into dummy pages) the values are the same bytes as the
        zero-copy path's, both ways, for MHA layer_first (whose K/V
        pointers are reordered to the flat page's order)."""
        for n, (w, r) in enumerate([(True, False), (False, True)]):
            tok = tokens(30 + n, 4)
            s, _ = self.run_child("store", mla=False, layout="layer_first",
                                  pages=6, rank=0, tp=1, tokens=tok,
                                  slots=[1, 0, 3, 2], seed=5000 + n, v1=w)
            self.assertEqual(s["after"], 4)
            g, _ = self.run_child("load", mla=False, layout="layer_first",
                                  pages=6, ranks=[0], tp=1, tokens=tok,
                                  slots=[5, 4, 3, 2], seeds={"0": 5000 + n},
                                  v1=r)
            self.assertEqual(g["0"]["same"], [True] * 4, (w, r))

    def test_pool_without_memfd_is_copied(self):
        """A pool from the default allocator (no fd) is copied, with a
        warning, and reads back identical in a memfd pool elsewhere."""
        tok = tokens(40, 4)
        copied0, _ = self.traffic()
        s, err = self.run_child("store", mla=False, layout="page_first",
                                pages=6, rank=0, tp=1, tokens=tok,
                                slots=[0, 1, 2, 3], seed=6000, shm=False)
        self.assertEqual(s["after"], 4)
        self.assertEqual(err.count("not in a memfd"), 1, err)
        self.assertEqual(self.traffic()[0], copied0)  # no region used
        g, _ = self.run_child("load", mla=False, layout="page_first",
                              pages=6, ranks=[0], tp=1, tokens=tok,
                              slots=[3, 2, 1, 0], seeds={"0": 6000})
        self.assertEqual(g["0"]["same"], [True] * 4)

    def test_contract(self):
        r, err = self.run_child("contract")
        self.assertEqual(r["exists_gap"], 4)
        self.assertEqual(r["exists_single"], [True, False, False, True])
        self.assertEqual(r["get_holes"], [True] * 4 + [False] * 2 +
                         [True] * 6)
        self.assertEqual(r["same"], [True] * 4 + [False] * 2 + [True] * 6)
        self.assertEqual(r["short_indices"], "ValueError")
        self.assertEqual(r["thread_errors"], [])
        self.assertLessEqual(r["connections"], 3)
        self.assertEqual(r["after_clear"], 0)

    def test_daemon_outage_and_restart(self):
        p = child("outage", socket=self.d.socket)
        self.assertEqual(p.stdout.readline().strip(), "stored")
        self.d.pause()
        try:
            p.stdin.write("\n")
            p.stdin.flush()
            self.assertEqual(p.stdout.readline().strip(), "tried")
        finally:
            self.d.resume()
            self.c.close()
            import kvtier
            type(self).c = kvtier.Client(self.d.socket)
        p.stdin.write("\n")
        p.stdin.flush()
        r, err = result(p, self)
        self.assertEqual(r["down_exists"], 0)
        self.assertEqual(r["down_get"], [False] * 8)
        self.assertEqual(r["down_set"], [False] * 8)
        self.assertEqual(r["up_exists"], 8, err)
        self.assertEqual(r["up_get"], [True] * 3)
        self.assertEqual(r["same"], [True] * 3)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        sys.argv.pop(1)
        child_main()
    else:
        unittest.main()
