"""kvtier.sglang - kvtier as SGLang's HiCache storage backend (its "L3").

SGLang loads it as a dynamic backend (engine code read:
sgl-project/sglang @ 001067ff, see README "Use with SGLang / vLLM /
LMCache"):

    python3 -m sglang.launch_server --model-path MODEL --page-size 64 \\
        --enable-hierarchical-cache --hicache-mem-layout page_first \\
        --hicache-storage-backend dynamic \\
        --hicache-storage-backend-extra-config '{"backend_name":"kvtier",
            "module_path":"kvtier.sglang","class_name":"KvtierHiCacheStorage",
            "interface_v1":1,"allocator":"shm","socket":"/run/kvtier/kvtier.sock"}'

SGLang builds it as KvtierHiCacheStorage(storage_config, kwargs) and then
calls register_mem_pool_host(host_pool).  With "allocator": "shm" the host
pool lives in a memfd; every connection of this backend registers that
memfd once, and pages then move between the pool and kvtierd as segment
batches (MGET_TO / MPUT_FROM): the daemon's workers copy, decompress or
read from SSD straight into the pool, and the bytes never cross the
socket.  Without a memfd (another allocator) pages are copied through the
ordinary batch calls instead, and a warning says so once.

One kvtier value per SGLang page, under SGLang's own key (the 64-hex
SHA-256 chain string, as ASCII bytes, so `kvtier get --ns NS KEY` finds
it): the bytes of the page's flat data page (get_data_page(flat=True)),
that is K then V for MHA, the one latent vector per layer for MLA.  The
namespace holds everything that changes those bytes: model, page size,
dtype, layout, head geometry, TP rank and size (MHA only: MLA data is the
same on every rank, and only TP rank 0 writes it), PP and CP rank and
size.  Two SGLang instances started alike therefore share one store.

Extra-config keys read here: "socket" (kvtierd's socket; default
$KVTIER_SOCKET, else the library default), "namespace" (the first part of
every namespace, default "sglang"), "ttl" (seconds, default none),
"model" (when SGLang passes no model name).

SGLang calls batch_exists on its prefetch thread, batch_get_v1 on the
prefetch I/O thread and batch_set_v1 on the backup thread, at the same
time: each call takes its own connection from a small pool.  The v1 calls
never return None or a short list (SGLang's threads die on that, and are
never restarted): a failure is False for the pages it hit, logged once per
kind.
"""

import logging
import os
import threading
import weakref

import kvtier

from . import Error, MATCH_KEYS_MAX
from . import _engine

try:  # The base class SGLang's loader checks with issubclass().
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage as _Base
except ImportError:  # SGLang not installed: still importable, for tools and tests
    _Base = object

__all__ = ["KvtierHiCacheStorage"]

log = logging.getLogger(__name__)

# Segments one value may have (KVT_XFER_KEY_SEGS_MAX): a page with more
# (MHA layer_first with more than 256 layers) is copied instead.
_SEGMENTS_MAX = getattr(kvtier, "XFER_KEY_SEGS_MAX", 512)

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16",
           "float32": "fp32", "float": "fp32"}


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _kvtier_dtype(dtype):
    """kvtier's dtype hint for L2's byte planes: bf16, fp16, fp32, u8 for
    the 1-byte types (fp8, int8), else None."""
    name = _dtype_name(dtype)
    if name in _DTYPES:
        return _DTYPES[name]
    size = getattr(dtype, "itemsize", None)
    return "u8" if size == 1 or "8" in name else None


def _key(k):
    if isinstance(k, bytes):
        return k
    return str(k).encode("utf-8")


class _Range:
    """One memfd of the host pool: its mapping [addr, addr + size) in this
    process is bytes [0, size) of fd."""

    __slots__ = ("addr", "size", "fd")

    def __init__(self, addr, size, fd):
        self.addr, self.size, self.fd = addr, size, fd


class KvtierHiCacheStorage(_Base):
    """SGLang HiCacheStorage backed by kvtierd (module docstring)."""

    def __init__(self, storage_config=None, kwargs=None, **extra):
        cfg = dict(getattr(storage_config, "extra_config", None) or {})
        cfg.update(kwargs or {})
        cfg.update(extra)
        self._cfg = cfg
        self._socket = cfg.get("socket") or None
        self._ttl = int(cfg["ttl"]) if cfg.get("ttl") else None
        sc = storage_config

        def field(name, default):
            # Older HiCacheStorageConfig versions lack the attn_cp_* and
            # dp_* fields.
            v = getattr(sc, name, None)
            return default if v is None else v

        self.tp_rank = int(field("tp_rank", 0))
        self.tp_size = int(field("tp_size", 1))
        self.pp_rank = int(field("pp_rank", 0))
        self.pp_size = int(field("pp_size", 1))
        self.cp_rank = int(field("attn_cp_rank", 0))
        self.cp_size = int(field("attn_cp_size", 1))
        self.is_mla = bool(field("is_mla_model", False))
        self.model = field("model_name", None) or cfg.get("model") or \
            "unnamed-model"
        self._prefix = cfg.get("namespace") or "sglang"
        # MLA K/V is the same on every TP rank: SGLang backs it up from
        # rank 0 only (its backup thread skips the others); so do we, in
        # case a version calls the others too.
        self._writes = not (self.is_mla and self.tp_rank != 0)
        self.mem_pool_host = None
        self._ns = None
        self._ranges = []      # memfds of the pool, for the zero-copy path
        # client -> its region id per range (registrations belong to a
        # connection)
        self._regions = weakref.WeakKeyDictionary()
        self._regions_lock = threading.Lock()
        self._once = _engine.Once(log)
        self._clients = _engine.ClientPool(self._socket, self._on_connect)
        # Fail at start-up, where SGLang reports it, if kvtierd is not there.
        self._clients.call(lambda c: None)

    # --- set-up -----------------------------------------------------------

    def register_mem_pool_host(self, mem_pool_host):
        """Remembers the host pool, names the namespace after its geometry
        and finds the memfd(s) it lives in (allocator "shm")."""
        self.mem_pool_host = mem_pool_host
        pool = mem_pool_host
        layout = getattr(pool, "layout", "layer_first")
        page = int(pool.page_size)
        if self.is_mla:
            geom = "mla-l%dc%d" % (pool.layer_num, pool.kv_cache_dim)
        else:
            geom = "mha-l%dh%dd%d" % (pool.layer_num, pool.head_num,
                                      pool.head_dim)
            v_head_dim = getattr(pool, "v_head_dim", None)
            if v_head_dim and v_head_dim != pool.head_dim:
                geom += "v%d" % v_head_dim
        parts = [self._prefix, _engine.name_part(self.model), layout,
                 "p%d" % page, _dtype_name(pool.dtype), geom]
        if not self.is_mla:
            parts.append("tp%dof%d" % (self.tp_rank, self.tp_size))
        parts.append("pp%dof%d" % (self.pp_rank, self.pp_size))
        parts.append("cp%dof%d" % (self.cp_rank, self.cp_size))
        self._ns = _engine.namespace(parts)
        self._dtype = _kvtier_dtype(pool.dtype)
        self._ranges = self._find_ranges(pool)
        if not self._ranges:
            self._once.warn("copy", "kvtier.sglang: the host pool is not in "
                            "a memfd (start SGLang with \"allocator\":\"shm\" "
                            "in --hicache-storage-backend-extra-config): "
                            "pages are copied through the socket or the "
                            "daemon's shared memory, not moved in place")
        self._clients.close()  # registrations are made per connection
        log.info("kvtier.sglang: namespace %s, %s, %d memfd(s)", self._ns,
                 "writes" if self._writes else "reads only (MLA, TP rank %d)"
                 % self.tp_rank, len(self._ranges))

    @staticmethod
    def _find_ranges(pool):
        """The pool's memfds with their mappings.  The shm allocator keeps
        the fds (allocator.fds, allocator.fd for the first) and their
        mmaps (allocator.mms); each tensor starts at offset 0 of its fd."""
        alloc = getattr(pool, "allocator", None)
        fds = list(getattr(alloc, "fds", None) or [])
        if not fds and getattr(alloc, "fd", None) is not None:
            fds = [alloc.fd]
        if not fds:
            return []
        mms = list(getattr(alloc, "mms", None) or [])
        if not mms and getattr(alloc, "mm", None) is not None:
            mms = [alloc.mm]
        out = []
        if len(mms) == len(fds):
            for fd, mm in zip(fds, mms):
                addr, size = _engine.buffer_address(mm)
                out.append(_Range(addr, size, fd))
            return out
        # No mmaps to ask: the tensors themselves, in allocation order.
        bufs = pool.kv_buffer
        if not isinstance(bufs, (list, tuple)):
            bufs = [bufs]
        for fd, buf in zip(fds, bufs):
            out.append(_Range(buf.data_ptr(), os.fstat(fd).st_size, fd))
        return out

    def _on_connect(self, c):
        if self._ranges:
            regions = [c.register(r.fd, size=r.size, offset=0)
                       for r in self._ranges]
            with self._regions_lock:
                self._regions[c] = regions

    # --- the v1 (zero-copy) interface -------------------------------------

    def _pages(self, keys, host_indices):
        """(keys as bytes, per page its [(ptr, size)] in value order)."""
        pool = self.mem_pool_host
        if pool is None:
            raise RuntimeError("kvtier.sglang: register_mem_pool_host() "
                               "was not called")
        n = len(keys)
        if len(host_indices) != n * pool.page_size:
            raise ValueError("kvtier.sglang: %d keys but %d host indices "
                             "(page size %d)" % (n, len(host_indices),
                                                 pool.page_size))
        if n == 0:
            return [], []
        ptrs, sizes = pool.get_page_buffer_meta(host_indices)
        if len(ptrs) % n or len(sizes) != len(ptrs):
            raise ValueError("kvtier.sglang: get_page_buffer_meta gave %d "
                             "pointers for %d pages" % (len(ptrs), n))
        per = len(ptrs) // n
        pages = []
        for i in range(n):
            seg = list(zip(ptrs[i * per:(i + 1) * per],
                           sizes[i * per:(i + 1) * per]))
            if not self.is_mla and getattr(pool, "layout", "") == \
                    "layer_first" and per > 2:
                # K0 V0 K1 V1...: reordered to K0 K1... V0 V1..., the order
                # of the flat data page, so that the interface_v1 and the
                # generic path store the same bytes.
                seg = seg[0::2] + seg[1::2]
            pages.append(seg)
        return [_key(k) for k in keys], pages

    def _segments(self, c, pages):
        """Per page its (region, offset, length) list in c's regions, or
        None if a pointer lies outside the pool's memfds."""
        with self._regions_lock:
            regions = self._regions.get(c)
        if not regions:
            return None
        out = []
        for page in pages:
            if len(page) > _SEGMENTS_MAX:
                return None
            segs = []
            for p, s in page:
                for r, reg in zip(self._ranges, regions):
                    if r.addr <= p and p + s <= r.addr + r.size:
                        segs.append((reg, p - r.addr, s))
                        break
                else:
                    return None
            out.append(segs)
        return out

    def _failed(self, what, n, e):
        if isinstance(e, Error):
            self._once.warn((what, type(e), e.code), "kvtier.sglang: %s of "
                            "%d pages failed: %s", what, n, e)
        else:
            self._once.warn((what, type(e)), "kvtier.sglang: %s of %d pages "
                            "failed", what, n, exc_info=True)
        return [False] * n

    def batch_exists(self, keys, extra_info=None):
        """How many leading keys kvtierd holds (one MATCH per 4096 keys)."""
        if self._ns is None or not keys:
            return 0
        ks = [_key(k) for k in keys]

        def match(c):
            hit = 0
            for i in range(0, len(ks), MATCH_KEYS_MAX):
                part = ks[i:i + MATCH_KEYS_MAX]
                m = c.match(part, ns=self._ns)
                hit += m
                if m < len(part):
                    break
            return hit
        try:
            return self._clients.call(match)
        except Exception as e:
            self._failed("exists", len(ks), e)
            return 0

    def batch_get_v1(self, keys, host_indices, extra_info=None):
        """Fills the pages host_indices names with the values of keys, in
        place; a list of len(keys) bools (True: the page holds the value)."""
        ks, pages = self._pages(keys, host_indices)
        if not ks:
            return []
        try:
            return self._clients.call(lambda c: self._get_pages(c, ks, pages))
        except Exception as e:
            return self._failed("get", len(ks), e)

    def batch_set_v1(self, keys, host_indices, extra_info=None):
        """Stores the pages host_indices names under keys; a list of
        len(keys) bools.  Pages already stored (the leading run that MATCH
        finds, as prefixes are) are not sent again."""
        ks, pages = self._pages(keys, host_indices)
        if not ks:
            return []
        if not self._writes:
            return [True] * len(ks)
        try:
            return self._clients.call(lambda c: self._set_pages(c, ks, pages))
        except Exception as e:
            return self._failed("set", len(ks), e)

    def _get_pages(self, c, ks, pages):
        want = [sum(s for _, s in page) for page in pages]
        segs = self._segments(c, pages)
        if segs is None:
            return self._get_copy(c, ks, pages, want)
        try:
            got = c.mget_to(ks, segs, ns=self._ns)
        except Error as e:
            # A value of another length (BufferTooSmall, raised after the
            # batch): the other keys' results stand.  A region fault, a
            # refused request or a connection error: raised (the pool drops
            # the connection, so the next call registers again).
            if _engine.is_fault(e) or not hasattr(e, "lengths"):
                raise
            got = [g if st == 0 else None
                   for g, st in zip(e.lengths, e.statuses)]
        return [g is not None and g == w for g, w in zip(got, want)]

    def _set_pages(self, c, ks, pages):
        done = c.match(ks[:MATCH_KEYS_MAX], ns=self._ns)
        ks, pages = ks[done:], pages[done:]
        if not ks:
            return [True] * done
        segs = self._segments(c, pages)
        if segs is not None:
            ok = c.mput_from(ks, segs, ns=self._ns, ttl=self._ttl,
                             dtype=self._dtype)
            return [True] * done + [bool(x) for x in ok]
        return [True] * done + self._set_copy(c, ks, pages)

    # The copying path: a pool that is not in a memfd, or a page of more
    # segments than one value may have.

    def _get_copy(self, c, ks, pages, want):
        bufs = []
        for page, w in zip(pages, want):
            if len(page) == 1:  # received straight into the pool
                bufs.append(_engine.memory_at(page[0][0], w))
            else:
                bufs.append(bytearray(w))
        try:
            got = c.mget_into(ks, bufs, ns=self._ns)
        except Error as e:
            # BufferTooSmall after the batch: a value of another size; the
            # other keys' statuses still count.
            if not hasattr(e, "lengths"):
                raise
            got = [g if s == 0 else None
                   for g, s in zip(e.lengths, e.statuses)]
        out = []
        for page, buf, g, w in zip(pages, bufs, got, want):
            ok = g is not None and g == w
            if ok and len(page) > 1:
                src = _engine.buffer_address(buf)[0]
                off = 0
                for p, s in page:
                    _engine.memmove(p, src + off, s)
                    off += s
            out.append(ok)
        return out

    def _set_copy(self, c, ks, pages):
        items = []
        for k, page in zip(ks, pages):
            if len(page) == 1:
                items.append((k, _engine.memory_at(page[0][0], page[0][1])))
                continue
            buf = bytearray(sum(s for _, s in page))
            dst = _engine.buffer_address(buf)[0]
            off = 0
            for p, s in page:
                _engine.memmove(dst + off, p, s)
                off += s
            items.append((k, buf))
        try:
            c.mput(items, ns=self._ns, ttl=self._ttl, dtype=self._dtype)
        except Error as e:
            st = getattr(e, "statuses", None)
            if st is None or _engine.is_connection_error(e):
                raise
            return [s == 0 for s in st]
        return [True] * len(items)

    # --- the generic interface (without "interface_v1") -------------------

    def _ns_or_fail(self):
        if self._ns is None:
            raise RuntimeError("kvtier.sglang: register_mem_pool_host() "
                               "was not called")
        return self._ns

    def exists(self, key):
        ns = self._ns_or_fail()
        try:
            return self._clients.call(lambda c: c.exists(_key(key), ns=ns))
        except Exception as e:
            self._failed("exists", 1, e)
            return False

    def get(self, key, target_location=None, target_sizes=None):
        """The value into target_location (a tensor, e.g. SGLang's dummy
        flat page), returned; or a new tensor (bytes without torch); None
        on a miss or failure."""
        r = self.batch_get([key], [target_location]
                           if target_location is not None else None)
        return r[0]

    def batch_get(self, keys, target_locations=None, target_sizes=None):
        ns = self._ns_or_fail()
        ks = [_key(k) for k in keys]
        if target_locations is None:
            try:
                vals = self._clients.call(lambda c: c.mget(ks, ns=ns))
            except Exception as e:
                return [None] * len(self._failed("get", len(ks), e))
            return [None if v is None else self._tensor(v) for v in vals]
        pairs = [_engine.torch_buffer(t, writable=True)
                 for t in target_locations]
        bufs = [b for b, _ in pairs]
        want = [_engine.buffer_address(b)[1] for b in bufs]
        try:
            got = self._clients.call(lambda c: c.mget_into(ks, bufs, ns=ns))
        except Exception as e:
            return [None] * len(self._failed("get", len(ks), e))
        return [t if g is not None and g == w else None
                for t, g, w in zip(target_locations, got, want)]

    def _tensor(self, data):
        dtype = getattr(self.mem_pool_host, "dtype", None)
        try:
            import torch
        except ImportError:
            return data
        return torch.frombuffer(bytearray(data), dtype=dtype or torch.uint8)

    def set(self, key, value=None, target_location=None, target_sizes=None):
        if value is None and target_location is not None and target_sizes:
            value = _engine.memory_at(int(target_location), int(target_sizes))
        return self.batch_set([key], [value])

    def batch_set(self, keys, values=None, target_locations=None,
                  target_sizes=None):
        ns = self._ns_or_fail()
        if values is None and target_locations is not None:
            values = [_engine.memory_at(int(p), int(s))
                      for p, s in zip(target_locations, target_sizes)]
        if values is None or len(values) != len(keys):
            raise ValueError("kvtier.sglang: batch_set needs one value per key")
        if not self._writes:
            return True
        pairs = [_engine.torch_buffer(v) for v in values]
        items = [(_key(k), b) for k, (b, _) in zip(keys, pairs)]
        try:
            self._clients.call(lambda c: c.mput(items, ns=ns, ttl=self._ttl,
                                                dtype=self._dtype))
        except Exception as e:
            self._failed("set", len(items), e)
            return False
        return True

    # --- housekeeping -----------------------------------------------------

    def clear(self):
        """Drops this backend's namespace in kvtierd: every instance that
        shares it loses those pages too."""
        if self._ns is not None:
            try:
                self._clients.call(lambda c: c.drop(self._ns))
            except Exception as e:
                self._failed("clear", 0, e)

    def get_stats(self):
        return None

    def close(self):
        """Closes the connections (SGLang calls it on detach)."""
        self._clients.close()
        with self._regions_lock:
            self._regions.clear()

    @property
    def namespace(self):
        """The kvtier namespace this backend reads and writes (set by
        register_mem_pool_host)."""
        return self._ns
