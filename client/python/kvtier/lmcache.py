"""kvtier.lmcache - kvtier as an L2 adapter of LMCache's multi-process server.

LMCache loads it as a "native_plugin" L2 adapter (engine code read:
LMCache/LMCache, lmcache/v1/distributed/l2_adapters @ 68c638a6; see README
"Use with SGLang / vLLM / LMCache"):

    lmcache server --chunk-size 256 --l1-size-gb 64 --eviction-policy LRU \\
        --l2-adapter '{"type":"native_plugin","module_path":"kvtier.lmcache",
            "class_name":"KvtierL2Client","max_capacity_gb":0,
            "adapter_params":{"socket":"/run/kvtier/kvtier.sock",
                              "namespace":"lmcache"}}'

(older releases: python3 -m lmcache.v1.multiprocess.server with the same
flags).  LMCache builds KvtierL2Client(**adapter_params) and wraps it in
its NativeConnectorL2Adapter, which submits batches from its store and
prefetch threads, polls event_fd() from a third thread and then calls
drain_completions(); it never reads the fd.  So event_fd() is readable
exactly while completions wait to be drained, and drain_completions()
makes it unreadable again.

adapter_params: "socket" (kvtierd's socket; default $KVTIER_SOCKET, else
the library default), "namespace" (default "lmcache"; LMCache's keys
already name the model, the KV rank and the chunk hash, so instances of
one model with the same chunk size and KV layout may share it), "ttl"
(seconds), "staging_size" (default "256M", see below).

LMCache's L1 memory has no file descriptor, so kvtierd cannot be handed
it: values go through a staging area of this adapter's own (a sealed
memfd registered with kvtierd, kvtier.SharedMemory).  A get is an
MGET_TO into staging and one copy into LMCache's buffer; a set is one
copy into staging and an MPUT_FROM (the daemon has copied the value out
before the job completes).  A mover thread does those copies and
submits, so the submit calls only queue; staging_size bounds the bytes in
flight (a batch larger than it is moved in parts; a single value larger
than it fails).  Exists and delete run on a thread and connection of their
own, so that they never wait behind bulk transfers: exists is one MATCH
per run of present keys (per_key is exact), delete one DEL per key.
"""

import collections
import itertools
import logging
import mmap
import os
import select
import threading

from . import Client, Error, MATCH_KEYS_MAX
from . import _engine, _lib

__all__ = ["KvtierL2Client"]

log = logging.getLogger(__name__)


def _eventfd():
    """A non-blocking eventfd (a pipe's read end where os.eventfd is
    missing), and how to set and clear it."""
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return r, w


def _signal(wfd):
    try:
        os.write(wfd, (1).to_bytes(8, "little"))
    except BlockingIOError:  # already readable (a full pipe)
        pass


def _clear(rfd):
    try:
        while os.read(rfd, 4096):
            pass
    except BlockingIOError:
        pass


class _Free:
    """First-fit allocator of the staging area: page-aligned ranges."""

    def __init__(self, size):
        self.size = size
        self.ranges = [(0, size)]  # sorted, coalesced (offset, length)

    def alloc(self, n):
        n = -(-n // mmap.PAGESIZE) * mmap.PAGESIZE
        for i, (off, ln) in enumerate(self.ranges):
            if ln >= n:
                if ln == n:
                    del self.ranges[i]
                else:
                    self.ranges[i] = (off + n, ln - n)
                return off, n
        return None

    def free(self, off, n):
        r = self.ranges
        i = 0
        while i < len(r) and r[i][0] < off:
            i += 1
        r.insert(i, (off, n))
        if i + 1 < len(r) and off + n == r[i + 1][0]:
            r[i] = (off, n + r[i + 1][1])
            del r[i + 1]
        if i > 0 and r[i - 1][0] + r[i - 1][1] == off:
            r[i - 1] = (r[i - 1][0], r[i - 1][1] + r[i][1])
            del r[i]


class _Future:
    __slots__ = ("fid", "kind", "per_key", "left", "err")

    def __init__(self, fid, kind, n):
        self.fid, self.kind = fid, kind
        self.per_key = [False] * n
        self.left = n
        self.err = ""


class _Item:
    """One key of a get or set: its buffer and, once moving, its staging."""
    __slots__ = ("fut", "i", "key", "view", "addr", "nbytes", "off", "alloc")

    def __init__(self, fut, i, key, view):
        self.fut, self.i, self.key = fut, i, key
        self.view = view  # an _lib.View held until the item completes
        self.addr, self.nbytes = view.addr, view.nbytes
        self.off = self.alloc = None


class KvtierL2Client:
    """LMCache native_plugin L2 client backed by kvtierd (module
    docstring).  Thread-safe: submits from any thread, drains from
    another."""

    def __init__(self, socket=None, namespace="lmcache", ttl=None,
                 staging_size="256M"):
        self._socket = socket
        self._ns = namespace
        self._ttl = int(ttl) if ttl else None
        size = _engine.parse_size(staging_size)
        self._size = max(mmap.PAGESIZE,
                         -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._incoming = collections.deque()  # items for the mover
        self._ctl_queue = collections.deque()  # (future, keys) for exists/delete
        self._done = []                       # drained by drain_completions
        self._closing = False
        self._ev_r, self._ev_w = _eventfd()     # event_fd(): completions wait
        self._wake_r, self._wake_w = _eventfd()  # wakes the mover
        self._ctl_cv = threading.Condition(self._lock)
        self._staging = None
        self._data = None
        self._ctl = None
        self._once = _engine.Once(log)
        try:
            from . import SharedMemory
            self._staging = SharedMemory(self._size)
            self._staging_view = _lib.View(self._staging, writable=True)
            self._base = self._staging_view.addr
            # Connect now, so that a wrong socket fails LMCache's start-up.
            self._ctl = Client(self._socket)
            self._connect()
        except BaseException:
            self._release()
            raise
        self._free = _Free(self._size)
        self._jobs = {}           # kvtier job id -> (set?, [items])
        self._waiting = collections.deque()  # items without staging yet
        self._mover = threading.Thread(target=self._move, daemon=True,
                                       name="kvtier-l2-mover")
        self._controller = threading.Thread(target=self._control, daemon=True,
                                            name="kvtier-l2-ctl")
        self._mover.start()
        self._controller.start()

    def _connect(self):
        c = Client(self._socket)
        try:
            self._region = c.register(self._staging)
        except BaseException:
            c.close()
            raise
        self._data = c

    # --- LMCache's native client interface ---------------------------------

    def event_fd(self):
        """Readable while completions wait for drain_completions()."""
        return self._ev_r

    def submit_batch_get(self, keys, memoryviews):
        """Fills memoryviews[i] with the value of keys[i]; a future id."""
        return self._submit("get", keys, memoryviews)

    def submit_batch_set(self, keys, memoryviews):
        """Stores memoryviews[i] under keys[i]; a future id.  The views are
        read before the future completes."""
        return self._submit("set", keys, memoryviews)

    def submit_batch_exists(self, keys):
        """per_key[i]: whether keys[i] is stored; a future id."""
        return self._submit_ctl("exists", keys)

    def submit_batch_delete(self, keys):
        """Deletes keys; per_key[i]: whether keys[i] was there."""
        return self._submit_ctl("delete", keys)

    def drain_completions(self):
        """[(future_id, ok, error, per_key)] of every future completed since
        the last call; event_fd() is unreadable afterwards until the next
        completion."""
        with self._lock:
            _clear(self._ev_r)
            out, self._done = self._done, []
        return out

    def close(self):
        """Stops the threads, closes the connections and frees staging.
        Futures still in flight never complete."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._ctl_cv.notify_all()
        _signal(self._wake_w)
        for t in (self._mover, self._controller):
            if t is not threading.current_thread():
                t.join(30)
        self._release()

    # --- submitting ---------------------------------------------------------

    def _key(self, k):
        return k.encode("utf-8") if isinstance(k, str) else bytes(k)

    def _submit(self, kind, keys, views):
        keys = [self._key(k) for k in keys]
        views = list(views)
        if len(views) != len(keys):
            raise ValueError("kvtier.lmcache: %d keys but %d buffers"
                             % (len(keys), len(views)))
        held = []
        try:
            for v in views:
                held.append(_lib.View(v, writable=(kind == "get")))
        except BaseException:
            for h in held:
                h.release()
            raise
        with self._lock:
            if self._closing:
                for h in held:
                    h.release()
                raise RuntimeError("kvtier.lmcache: client is closed")
            fut = _Future(next(self._ids), kind, len(keys))
            if not keys:
                self._publish(fut)
            for i, (k, h) in enumerate(zip(keys, held)):
                self._incoming.append(_Item(fut, i, k, h))
        _signal(self._wake_w)
        return fut.fid

    def _submit_ctl(self, kind, keys):
        keys = [self._key(k) for k in keys]
        with self._lock:
            if self._closing:
                raise RuntimeError("kvtier.lmcache: client is closed")
            fut = _Future(next(self._ids), kind, len(keys))
            self._ctl_queue.append((fut, keys))
            self._ctl_cv.notify()
        return fut.fid

    def _publish(self, fut):
        """Makes fut a completion (the lock is held)."""
        ok = fut.kind in ("exists", "delete", "get") and not fut.err or \
            fut.kind == "set" and all(fut.per_key)
        if fut.kind == "set" and not ok and not fut.err:
            fut.err = "%d of %d values not stored" % (
                fut.per_key.count(False), len(fut.per_key))
        self._done.append((fut.fid, bool(ok), fut.err, list(fut.per_key)))
        _signal(self._ev_w)

    def _item_done(self, item, ok, err=None):
        """Books one key's outcome (the lock is held)."""
        fut = item.fut
        fut.per_key[item.i] = bool(ok)
        if err and not fut.err:
            fut.err = err
        item.view.release()
        fut.left -= 1
        if fut.left == 0:
            self._publish(fut)

    # --- the mover thread: staging, submits, completions -----------------

    def _move(self):
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        polled = None  # (client, fd) registered with p
        idle_wakeups = 0
        while True:
            if polled is not None and polled[0] is not self._data:
                p.unregister(polled[1])  # closed or replaced
                polled = None
            if polled is None and self._data is not None:
                polled = (self._data, self._data.fileno())
                p.register(polled[1], select.POLLIN)
            try:
                events = p.poll(1000 if self._jobs else None)
            except InterruptedError:
                events = []
            _clear(self._wake_r)
            with self._lock:
                closing = self._closing
                while self._incoming:
                    self._waiting.append(self._incoming.popleft())
            if closing:
                return
            # Also when no job is in flight: a readable poll fd then means
            # the connection ended (kvtierd stopped), which poll() reports.
            ready = polled is not None and \
                any(fd == polled[1] for fd, _ in events)
            if self._data is not None and (self._jobs or ready):
                try:
                    done = self._data.poll(0)
                except Error as e:
                    self._broken(e)
                    done = []
                for kj, results in done:
                    if kj in self._jobs:
                        self._finish_job(kj, results)
                # A descriptor that stays readable with nothing to collect
                # would spin this loop: drop that connection.
                idle_wakeups = idle_wakeups + 1 if ready and not done and \
                    not self._jobs else 0
                if idle_wakeups > 100 and self._data is not None:
                    self._broken(ConnectionError("poll descriptor readable "
                                                 "with nothing to collect"))
                    idle_wakeups = 0
            self._start_jobs()

    def _broken(self, e):
        """The data connection failed: its jobs fail, it is closed, and the
        next job connects again."""
        self._once.warn(("data", type(e)), "kvtier.lmcache: connection to "
                        "kvtierd failed: %s (reconnecting)", e)
        for kj in list(self._jobs):
            self._finish_job(kj, None, str(e))
        try:
            self._data.close()
        except Error:
            pass
        self._data = None

    def _finish_job(self, kj, results, err=None):
        is_set, items = self._jobs.pop(kj)
        oks = []
        if isinstance(results, BaseException):
            err, results = str(results), None
        for n, item in enumerate(items):
            r = results[n] if results is not None and n < len(results) \
                else None
            if is_set:
                ok = r is True or (r is not None and bool(r) and
                                   not isinstance(r, BaseException))
            else:
                ok = isinstance(r, int) and not isinstance(r, bool) and \
                    r == item.nbytes
                if ok and item.nbytes:
                    _engine.memmove(item.addr, self._base + item.off,
                                    item.nbytes)
            oks.append(ok)
        with self._lock:
            for item, ok in zip(items, oks):
                self._item_done(item, ok, err)
        for item in items:
            if item.alloc is not None:
                self._free.free(item.off, item.alloc)

    def _start_jobs(self):
        """Gives staging to the waiting items in order and submits them: one
        kvtier job per run of items of one future (at most 4096).  Stops at
        the first item staging has no room for: completions free it."""
        while self._waiting:
            fut = self._waiting[0].fut
            group = []
            full = False
            while self._waiting and len(group) < MATCH_KEYS_MAX and \
                    self._waiting[0].fut is fut:
                item = self._waiting[0]
                if item.nbytes > self._size:
                    self._waiting.popleft()
                    with self._lock:
                        self._item_done(item, False, "value of %d bytes is "
                                        "larger than staging_size (%d)"
                                        % (item.nbytes, self._size))
                    continue
                if item.nbytes:
                    got = self._free.alloc(item.nbytes)
                    if got is None:
                        full = True
                        break
                    item.off, item.alloc = got
                else:
                    item.off = 0
                group.append(self._waiting.popleft())
            if group:
                self._submit_group(group)
            if full:
                return

    def _submit_group(self, group):
        is_set = group[0].fut.kind == "set"
        for item in group:
            if is_set and item.nbytes:
                _engine.memmove(self._base + item.off, item.addr, item.nbytes)
        keys = [item.key for item in group]
        segs = [[(self._region, item.off, item.nbytes)] if item.nbytes else []
                for item in group]
        try:
            if self._data is None:
                self._connect()
            if is_set:
                kj = self._data.submit_mput_from(keys, segs, ns=self._ns,
                                                 ttl=self._ttl)
            else:
                kj = self._data.submit_mget_to(keys, segs, ns=self._ns)
        except Error as e:
            if _engine.is_connection_error(e) and self._data is not None:
                self._broken(e)  # its jobs in flight fail too
            else:
                self._once.warn(("submit", type(e)), "kvtier.lmcache: "
                                "submit failed: %s", e)
            with self._lock:
                for item in group:
                    self._item_done(item, False, str(e))
            for item in group:
                if item.alloc is not None:
                    self._free.free(item.off, item.alloc)
            return
        self._jobs[kj] = (is_set, group)

    # --- the control thread: exists and delete ------------------------------

    def _control(self):
        while True:
            with self._lock:
                while not self._ctl_queue and not self._closing:
                    self._ctl_cv.wait()
                if self._closing:
                    return
                fut, keys = self._ctl_queue.popleft()
            try:
                if self._ctl is None:
                    self._ctl = Client(self._socket)
                if fut.kind == "exists":
                    per_key = self._exists(keys)
                else:
                    per_key = [self._ctl.delete(k, ns=self._ns) for k in keys]
                err = ""
            except Error as e:
                self._once.warn(("ctl", fut.kind, type(e)), "kvtier.lmcache: "
                                "%s failed: %s", fut.kind, e)
                if _engine.is_connection_error(e) and self._ctl is not None:
                    try:
                        self._ctl.close()
                    except Error:
                        pass
                    self._ctl = None
                per_key, err = [False] * len(keys), str(e) or fut.kind
            with self._lock:
                fut.per_key, fut.err = per_key, err
                self._publish(fut)

    def _exists(self, keys):
        """Exact per-key presence from MATCH: one round trip per run of
        present keys (plus one per absent key that ends a run)."""
        out = [False] * len(keys)
        i = 0
        while i < len(keys):
            part = keys[i:i + MATCH_KEYS_MAX]
            m = self._ctl.match(part, ns=self._ns)
            for j in range(i, i + m):
                out[j] = True
            i += m if m == len(part) else m + 1
        return out

    # --- teardown -------------------------------------------------------------

    def _release(self):
        for c in (getattr(self, "_data", None), getattr(self, "_ctl", None)):
            if c is not None:
                try:
                    c.close()
                except Error:
                    pass
        self._data = self._ctl = None
        with self._lock:
            items = list(self._incoming) + list(getattr(self, "_waiting", ()))
            for _, group in getattr(self, "_jobs", {}).values():
                items.extend(group)
            self._incoming.clear()
        for item in items:
            item.view.release()
        v = getattr(self, "_staging_view", None)
        if v is not None:
            v.release()
            self._staging_view = None
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        for fd in {self._ev_r, self._ev_w, self._wake_r, self._wake_w}:
            try:
                os.close(fd)
            except OSError:
                pass
        self._ev_r = self._ev_w = self._wake_r = self._wake_w = -1
