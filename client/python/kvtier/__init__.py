"""kvtier - Python client of the kvtier tiered KV-cache daemon.

A thin ctypes wrapper of libkvtier (client/kvtier.h is the manual); standard
library only, numpy/torch optional.

    import kvtier
    with kvtier.Client() as c:              # $KVTIER_SOCKET or the default
        c.put(b"key", data, ns="llama3-8b/bf16")
        v = c.get(b"key", ns="llama3-8b/bf16")          # bytes, or None
        n = c.get_into(b"key", array, ns="llama3-8b/bf16")  # no copy

Keys are bytes (or str, encoded as UTF-8); namespaces are str.  Values are
any C-contiguous buffer-protocol object (bytes, bytearray, memoryview,
array.array, numpy arrays, torch CPU tensors through .numpy()); they are
sent from, and received into, the object's own memory without a copy.
A miss is None (or False), never an exception; failures raise subclasses
of kvtier.Error carrying the library's code and message.

Registered memory: an engine's own pool, a kvtier.SharedMemory (a memfd
with the buffer protocol) or any memory-backed file with fileno(), is
registered once (Client.register) and values then move straight into and
out of it, the daemon's workers doing the copies and only keys and segment
lists going over the socket, whatever the client's uid:

    pool = kvtier.SharedMemory(64 << 20)
    region = c.register(pool)
    # key i's value: its K half and its V half, apart in the pool
    lens = c.mget_to(keys, [[(region, k_off(i), half), (region, v_off(i), half)]
                            for i in range(len(keys))], ns="llama3-8b/bf16")
    job = c.submit_mget_to(...)           # the same, returning at once
    for job_id, results in c.poll(timeout=1.0): ...
    # c.fileno(): readable while poll() has something for you

One Client per thread (as one kvt_client per thread in C); ctypes releases
the GIL during every call, so threads with their own clients run in
parallel.  A call on a Client that another thread is using raises
ConcurrentUse at once (share one Client only under your own lock).  A
Client cannot be used in a child process after fork() (multiprocessing's
default on Linux): every call there raises ClientForked; create a new
Client in the child.
"""

import array as _array
import ctypes as _ct
import fcntl as _fcntl
import functools as _functools
import json as _json
import mmap as _mmap
import os as _os
import threading as _threading

from . import _lib

__all__ = ["Client", "SharedMemory", "prefix_keys", "version", "Error",
           "DaemonUnreachable", "ConnectionClosed", "ProtocolError",
           "VersionMismatch", "TooBig", "NoSpace", "Denied", "Busy",
           "ServerError", "BufferTooSmall", "InvalidArgument", "Corrupt",
           "NotFound", "ClientForked", "ConcurrentUse", "RegionFault",
           "DTYPES", "MATCH_KEYS_MAX", "XFER_KEYS_MAX", "XFER_KEY_SEGS_MAX",
           "REGION_READONLY", "REGION_SEALED"]

# kvtier_errors.h
EPROTO, ENOTFOUND, ETOOBIG, EBADREQ, EUNKNOWNOP = -1001, -1002, -1003, -1004, -1005
ENOSPACE, EVERSION, ESERVER, EDENIED, EBUSY = -1006, -1007, -1008, -1009, -1010
ECLOSED, EAGAIN, ERANGE, EINVAL, ECORRUPT = -1011, -1012, -1013, -1014, -1015
EFORKED, ECONCURRENT, EFAULT = -1016, -1017, -1018
ENOMEM = -12

MATCH_KEYS_MAX = 4096
# kvtier_defs.h: registered memory.
XFER_KEYS_MAX = 4096          # keys per request (the library splits more)
XFER_KEY_SEGS_MAX = 512       # segments per key
REGION_READONLY, REGION_SEALED = 0x1, 0x2
DTYPES = {None: 0, "none": 0, "u8": 1, "bf16": 2, "fp16": 3, "fp32": 4}


# --- Errors ------------------------------------------------------------------

class Error(Exception):
    """A libkvtier failure: .code (KVT_E* or -errno), .message (the
    library's message, kvt_client_errmsg()), .strerror (kvt_strerror())."""

    def __init__(self, code, message=None):
        self.code = code
        self.strerror = _strerror(code)
        self.message = message or self.strerror
        Exception.__init__(self, code, self.message)
        if isinstance(self, OSError):  # DaemonUnreachable, Denied...
            self.errno = -code if -1000 < code < 0 else None
            self.strerror = _strerror(code)

    def __str__(self):
        return "%s (%d)" % (self.message, self.code)


class DaemonUnreachable(Error, ConnectionError):
    """kvt_connect() failed: no daemon at the socket, refused, no access."""


class ConnectionClosed(Error, ConnectionError):
    """The connection is closed or broken (KVT_ECLOSED, I/O errors): close
    the client and connect again."""


class ClientForked(ConnectionClosed):
    """The Client was made by another process and this one is its child
    after fork() (KVT_EFORKED): the socket is the parent's, so nothing was
    sent.  Create a new Client in the child (or start workers with
    multiprocessing's "spawn" or "forkserver" method).  Closing the
    inherited Client in the child leaves the parent's connection alone."""


class ConcurrentUse(Error, RuntimeError):
    """Another thread is in a call on this Client (KVT_ECONCURRENT): a
    Client serves one thread at a time.  Nothing was sent; give each thread
    its own Client, or share one under a lock of your own."""


class ProtocolError(Error):
    """The daemon's answer or our request broke the protocol (KVT_EPROTO,
    KVT_EBADREQ, KVT_EUNKNOWNOP)."""


class VersionMismatch(ProtocolError):
    """Client and daemon speak different protocol versions."""


class TooBig(Error):
    """A key, namespace, value or batch exceeds the daemon's limits."""


class NoSpace(Error):
    """The value is larger than the cache can hold at all."""


class Denied(Error, PermissionError):
    """The daemon refused access (namespace bound to another user)."""


class Busy(Error):
    """The daemon is busy (too many clients, try again)."""


class ServerError(Error):
    """The daemon failed internally; its message tells why.  Also a daemon
    answer with an errno code (.code = -errno, e.g. -ENOSPC from a DROP
    whose index write failed): the connection stays usable."""


class BufferTooSmall(Error):
    """The value does not fit the buffer; .needed is its size in bytes."""

    def __init__(self, code, message=None, needed=0):
        self.needed = needed
        Error.__init__(self, code, message)


class InvalidArgument(Error, ValueError):
    """An argument the library refused before sending anything."""


class Corrupt(Error):
    """The stored block failed its checksum and was dropped."""


class RegionFault(Error):
    """Registered memory failed during a transfer (KVT_EFAULT): the file
    behind the region was shrunk while the daemon copied.  The region is
    unusable from then on: unregister it and register the memory again."""


class NotFound(Error):
    """The daemon does not know what the request named (KVT_ENOTFOUND) where
    the call has no None or False to return for it."""


# Every code of kvtier_errors.h; -errno values are placed by _error().
_CLASSES = {
    EPROTO: ProtocolError, ENOTFOUND: NotFound, ETOOBIG: TooBig,
    EBADREQ: ProtocolError, EUNKNOWNOP: ProtocolError, ENOSPACE: NoSpace,
    EVERSION: VersionMismatch, ESERVER: ServerError, EDENIED: Denied,
    EBUSY: Busy, ECLOSED: ConnectionClosed, EAGAIN: Busy,
    ERANGE: BufferTooSmall, EINVAL: InvalidArgument, ECORRUPT: Corrupt,
    EFORKED: ClientForked, ECONCURRENT: ConcurrentUse, EFAULT: RegionFault,
}


def _strerror(code):
    s = _lib.kvt_strerror(code)
    return s.decode("utf-8", "replace") if s else "error %d" % code


def _error(code, message=None, connecting=False, broken=True, **kw):
    """The exception for code.  broken: whether the call left the
    connection unusable (kvt_client_broken()), which an errno code alone
    does not tell: the daemon answers some requests with one (a DROP whose
    index write failed: -ENOSPC) and the connection is fine, while a failed
    recv() breaks it."""
    cls = _CLASSES.get(code)
    if cls is None:
        if code > -1000 and connecting:
            cls = DaemonUnreachable
        elif broken:  # an I/O error (or a code of a later version) broke it
            cls = ConnectionClosed
        elif code == ENOMEM:  # ours or the daemon's; the connection is fine
            cls = Error
        elif -1000 < code < 0:  # the daemon's errno answer to this request
            cls = ServerError
        else:  # a code of a later version: still a request error
            cls = Error
    if cls is BufferTooSmall:
        return BufferTooSmall(code, message, kw.get("needed", 0))
    return cls(code, message)


# --- Argument conversion -----------------------------------------------------

def _key(k):
    if isinstance(k, str):
        k = k.encode("utf-8")
    elif not isinstance(k, bytes):
        k = bytes(k)  # bytearray, memoryview...: keys are small
    if not k:
        raise InvalidArgument(EINVAL, "empty key")
    return k


def _ns(ns):
    if ns is None:
        return b""
    if isinstance(ns, bytes):
        b = ns
    else:
        b = str(ns).encode("utf-8")
    if b"\0" in b:
        raise InvalidArgument(EINVAL, "namespace contains a NUL byte")
    return b


def _keys(keys):
    """(n, char*[] pointing into the bytes objects, size_t[], the list)."""
    ks = [_key(k) for k in keys]
    n = len(ks)
    arr = (_lib.c_char_p * n)(*ks)  # pointers into each bytes, no copy
    lens = (_lib.c_size_t * n)(*[len(k) for k in ks])
    return n, arr, lens, ks


def _dtype_code(view, obj, dtype):
    """kvt_put_opts.dtype: the explicit dtype= or a guess from the buffer."""
    if dtype is not None:
        if isinstance(dtype, int):
            code = dtype
        else:
            code = DTYPES.get(str(dtype).lower())
        if code is None or not 0 <= code <= 4:
            raise InvalidArgument(EINVAL, "dtype must be one of "
                                  "bf16, fp16, fp32, u8, none: %r" % (dtype,))
        return code
    fmt = view.format.lstrip("@=<>!")
    size = view.itemsize
    if size == 1:
        return 1
    if size == 2:
        if fmt == "e":
            return 3
        dt = getattr(obj, "dtype", None)
        if dt is not None and "float16" in str(dt) and "bfloat16" not in str(dt):
            return 3
        return 2  # bfloat16 (torch, ml_dtypes) or unknown 16-bit: bf16
    if size == 4 and fmt == "f":
        return 4
    return 0


def _opts(ttl, code):
    if not ttl and not code:
        return None
    o = _lib.PutOpts()
    if ttl:
        ttl = int(ttl)
        if not 0 < ttl < 2 ** 32:
            raise InvalidArgument(EINVAL, "ttl out of range: %r" % ttl)
        o.ttl_s = ttl
    o.dtype = code
    return _ct.byref(o)


# --- Registered memory -------------------------------------------------------

class SharedMemory(_mmap.mmap):
    """size bytes of memory the daemon can be given (Client.register): a
    memfd, sealed against shrinking and growing (so that no transfer into
    it can fault), mapped shared.  An mmap.mmap, so it has the buffer
    protocol: numpy.frombuffer(shm, dtype), memoryview(shm), slicing.
    .fileno() is the memfd, .size its length; .close() unmaps it and closes
    the memfd (BufferError while views of it exist).  Usable as a context
    manager.  The daemon's mapping of a registered SharedMemory outlives
    close() until the region is unregistered."""

    def __new__(cls, size):
        size = int(size)
        if size <= 0:
            raise InvalidArgument(EINVAL, "SharedMemory size must be > 0")
        fd = _os.memfd_create("kvtier-shm",
                              _os.MFD_CLOEXEC | _os.MFD_ALLOW_SEALING)
        try:
            _os.ftruncate(fd, size)
            _fcntl.fcntl(fd, _fcntl.F_ADD_SEALS,
                         _fcntl.F_SEAL_SHRINK | _fcntl.F_SEAL_GROW)
            self = _mmap.mmap.__new__(cls, fd, size)
        except BaseException:
            _os.close(fd)
            raise
        self._fd = fd
        self._size = size
        return self

    def __init__(self, size):
        pass  # all done in __new__ (mmap takes no __init__ arguments)

    def fileno(self):
        """The memfd (owned by this object: closed by close())."""
        if self._fd is None:
            raise ValueError("SharedMemory is closed")
        return self._fd

    @property
    def size(self):
        """Its length in bytes."""
        return self._size

    def close(self):
        """Unmaps the memory and closes the memfd (idempotent).  Raises
        BufferError, changing nothing, while views of it exist."""
        _mmap.mmap.close(self)
        fd, self._fd = self._fd, None
        if fd is not None:
            _os.close(fd)

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            try:
                _os.close(fd)
            except OSError:
                pass


def _segments(keys, segments, what):
    """The C arrays of a segment batch: (n, keys, key_lens, segs, nsegs,
    the keys' list)."""
    n, karr, klens, ks = _keys(keys)
    segments = list(segments)
    if len(segments) != n:
        raise InvalidArgument(EINVAL, "%s: %d keys but %d segment lists"
                              % (what, n, len(segments)))
    total = 0
    lists = []
    for sl in segments:
        sl = list(sl)
        lists.append(sl)
        total += len(sl)
    segs = (_lib.Seg * (total or 1))()
    nsegs = (_lib.c_size_t * (n or 1))()
    j = 0
    for i, sl in enumerate(lists):
        nsegs[i] = len(sl)
        for seg in sl:
            try:
                region, offset, length = seg
                segs[j].region = int(region)
                segs[j].offset = int(offset)
                segs[j].len = int(length)
            except (TypeError, ValueError, OverflowError):
                raise InvalidArgument(EINVAL, "%s: a segment is "
                                      "(region, offset, length) of "
                                      "non-negative ints: %r"
                                      % (what, seg))
            j += 1
    return n, karr, klens, segs, nsegs, ks


def _put_dtype(dtype):
    if dtype is None:
        return 0
    code = dtype if isinstance(dtype, int) else DTYPES.get(str(dtype).lower())
    if code is None or not 0 <= code <= 4:
        raise InvalidArgument(EINVAL, "dtype must be one of bf16, fp16, "
                              "fp32, u8, none: %r" % (dtype,))
    return code


# --- The client --------------------------------------------------------------

def _exclusive(method):
    """Runs a Client method with the Client to itself.  Its lock is taken
    without waiting: a second thread's call raises ConcurrentUse at once,
    where it used to share the socket with the first (each reading the
    other's replies, or blocked in recv() for ever), and the message of a
    failure is read before another call can replace it."""
    @_functools.wraps(method)
    def call(self, *args, **kw):
        lock = self._lock
        if not lock.acquire(False):
            raise self._refused()
        try:
            return method(self, *args, **kw)
        finally:
            lock.release()
    return call


class Client:
    """A connection to kvtierd.  socket: a path (str or os.PathLike), or None
    for $KVTIER_SOCKET, else the library's default.

    For one thread at a time (a call while another thread is in one raises
    ConcurrentUse), and for the process that made it (in a child after
    fork() every call raises ClientForked)."""

    def __init__(self, socket=None):
        self._c = None
        self._lock = _threading.Lock()
        self._pid = _os.getpid()
        self._jobs = {}  # job id -> (put, n, lens, statuses) until polled
        self._size_hint = 64 * 1024
        path = None
        if socket is not None:
            path = _os.fsencode(socket)
        h = _ct.c_void_p()
        rc = _lib.kvt_connect(_ct.byref(h), path)
        if rc < 0:
            msg = _lib.kvt_client_errmsg(None)
            raise _error(rc, msg.decode("utf-8", "replace") if msg else None,
                         connecting=True)
        self._c = h

    # Connection management.

    def close(self):
        """Closes the connection (idempotent).  In a child after fork() it
        closes only the child's copy: the parent's connection is left
        alone."""
        if self._c is None:
            return
        if self._pid != _os.getpid():
            # The lock is a copy of the parent's, perhaps taken by a thread
            # that does not exist here; the library sends nothing.
            c, self._c = self._c, None
            _lib.kvt_close(c)
            return
        if not self._lock.acquire(False):
            raise self._refused()
        try:
            c, self._c = self._c, None
            if c is not None:
                _lib.kvt_close(c)
        finally:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self):
        return self._c is None

    @property
    @_exclusive
    def shared_memory(self):
        """True if large values move through the daemon's shared memory
        (same user as the daemon, or in its shm-allow-uid list) instead of
        the socket; the bytes are the same either way.  KVTIER_SHM=0 in the
        environment before connecting turns it off."""
        return self._c is not None and _lib.kvt_client_shm(self._c) == 1

    def _h(self):
        if self._c is None:
            raise ConnectionClosed(ECLOSED, "kvtier client is closed")
        return self._c

    def _refused(self):
        """The error for a call that could not take the lock."""
        if self._pid != _os.getpid():
            return self._forked()
        return ConcurrentUse(ECONCURRENT, "this kvtier.Client is in use by "
                             "another thread: a Client serves one thread at "
                             "a time; give each thread its own Client, or "
                             "share one under a lock of your own")

    def _forked(self):
        return ClientForked(EFORKED, "this kvtier.Client was made by process "
                            "%d and cannot be used in process %d, its child "
                            "after fork(): create a new Client in the child "
                            "(or start workers with multiprocessing's "
                            "'spawn' or 'forkserver' method)"
                            % (self._pid, _os.getpid()))

    def _fail(self, rc, **kw):
        """The exception for a failed call; the lock is still held, so the
        message is this call's."""
        if rc == EFORKED:
            return self._forked()
        c = self._c
        msg = _lib.kvt_client_errmsg(c) if c is not None else None
        broken = c is None or _lib.kvt_client_broken(c) != 0
        return _error(rc, msg.decode("utf-8", "replace") if msg else None,
                      broken=broken, **kw)

    # Single values.

    @_exclusive
    def put(self, key, data, ns="", ttl=None, dtype=None):
        """Stores data (any C-contiguous buffer, sent without a copy) under
        key.  ttl: seconds to live (None = no expiry).  dtype: "bf16",
        "fp16", "fp32", "u8" or "none"; None = guessed from the buffer's
        element type."""
        c = self._h()
        k = _key(key)
        n = _ns(ns)
        with _lib.View(data) as v:
            opts = _opts(ttl, _dtype_code(v, data, dtype))
            rc = _lib.kvt_put(c, n, k, len(k), v.addr, v.nbytes, opts)
        if rc < 0:
            raise self._fail(rc)

    @_exclusive
    def get(self, key, ns=""):
        """The value of key as bytes, or None on a miss."""
        c = self._h()
        k = _key(key)
        p = _ct.c_void_p()
        ln = _ct.c_size_t()
        rc = _lib.kvt_get_alloc(c, _ns(ns), k, len(k), _ct.byref(p),
                                _ct.byref(ln))
        if rc == ENOTFOUND:
            return None
        if rc < 0:
            raise self._fail(rc)
        try:
            return _ct.string_at(p.value, ln.value) if ln.value else b""
        finally:
            _lib.free(p)

    @_exclusive
    def get_into(self, key, buffer, ns=""):
        """Receives the value of key straight into buffer (any writable
        C-contiguous buffer: bytearray, memoryview, numpy array...), without
        a copy.  Returns the value's length in bytes, or None on a miss.
        Raises BufferTooSmall (.needed = the value's size) if it does not
        fit; the buffer's content is then unspecified."""
        c = self._h()
        k = _key(key)
        n = _ns(ns)
        ln = _ct.c_size_t()
        with _lib.View(buffer, writable=True) as v:
            rc = _lib.kvt_get(c, n, k, len(k), v.addr, v.nbytes,
                              _ct.byref(ln))
        if rc == ENOTFOUND:
            return None
        if rc < 0:
            raise self._fail(rc, needed=ln.value)
        return ln.value

    @_exclusive
    def exists(self, key, ns=""):
        """True if key is cached (no transfer, no promotion)."""
        c = self._h()
        k = _key(key)
        rc = _lib.kvt_exists(c, _ns(ns), k, len(k))
        if rc < 0:
            raise self._fail(rc)
        return rc == 1

    @_exclusive
    def delete(self, key, ns=""):
        """Removes key; True if it was present, False if not."""
        c = self._h()
        k = _key(key)
        rc = _lib.kvt_del(c, _ns(ns), k, len(k))
        if rc == ENOTFOUND:
            return False
        if rc < 0:
            raise self._fail(rc)
        return True

    # Batches.

    @_exclusive
    def mput(self, items, ns="", ttl=None, dtype=None):
        """Stores many values in one pipelined batch.  items: a dict or an
        iterable of (key, data) pairs; each data is sent without a copy.
        If any item failed, raises the first item's error with .statuses
        (the per-item codes, 0 = stored); the other items were stored."""
        c = self._h()
        if isinstance(items, dict):
            items = items.items()
        pairs = list(items)
        nsb = _ns(ns)
        n, karr, klens, ks = _keys(k for k, _ in pairs)
        views = []
        try:
            code = None
            for _, d in pairs:
                v = _lib.View(d)
                views.append(v)
                dc = _dtype_code(v, d, dtype)
                code = dc if code is None or code == dc else 0
            vals = (_ct.c_void_p * n)(*[v.addr for v in views])
            vlens = (_ct.c_size_t * n)(*[v.nbytes for v in views])
            st = (_ct.c_int * n)()
            rc = _lib.kvt_mput(c, nsb, karr, klens, vals, vlens, n,
                               _opts(ttl, code or 0), st)
        finally:
            for v in views:
                v.release()
        if rc < 0:
            e = self._fail(rc)
            e.statuses = list(st)
            raise e
        bad = [s for s in st if s < 0]
        if bad:
            e = self._fail(bad[0])
            e.statuses = list(st)
            raise e

    @_exclusive
    def mget_into(self, keys, buffers, ns=""):
        """One pipelined batch: the value of keys[i] straight into
        buffers[i] (writable C-contiguous buffers; an iovec per key into
        each buffer's own memory, no copy).  Returns a list: the value's
        length, or None on a miss.  A value larger than its buffer raises
        BufferTooSmall (.needed, .statuses, .lengths) after the batch."""
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, ks = _keys(keys)
        buffers = list(buffers)
        if len(buffers) != n:
            raise InvalidArgument(EINVAL, "%d keys but %d buffers"
                                  % (n, len(buffers)))
        views = []
        try:
            iov = (_lib.IOVec * n)()
            for i, b in enumerate(buffers):
                v = _lib.View(b, writable=True)
                views.append(v)
                iov[i].iov_base = v.addr
                iov[i].iov_len = v.nbytes
            lens = (_ct.c_size_t * n)()
            st = (_ct.c_int * n)()
            rc = _lib.kvt_mget(c, nsb, karr, klens, n, iov, lens, st)
        finally:
            for v in views:
                v.release()
        return self._mget_result(rc, n, lens, st)

    def _mget_result(self, rc, n, lens, st):
        if rc < 0:
            e = self._fail(rc)
            e.statuses = list(st)
            raise e
        out = []
        for i in range(n):
            s = st[i]
            if s == 0:
                out.append(lens[i])
            elif s == ENOTFOUND:
                out.append(None)
            else:
                e = self._fail(s, needed=lens[i])
                e.statuses = list(st)
                e.lengths = list(lens)
                raise e
        return out

    @_exclusive
    def mget(self, keys, ns=""):
        """The values of keys as a list of bytes (None for a miss), fetched
        in one pipelined batch (a second one for values larger than the
        client's running size estimate)."""
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, ks = _keys(keys)
        result = [None] * n
        todo = list(range(n))
        caps = [self._size_hint] * n
        for _ in range(3):  # a value may grow between attempts
            if not todo:
                break
            m = len(todo)
            iov = (_lib.IOVec * m)()
            bufs = []
            try:
                for j, i in enumerate(todo):
                    p = _lib.malloc(max(caps[i], 1))
                    if not p:
                        raise MemoryError("kvtier: cannot allocate %d bytes"
                                          % caps[i])
                    bufs.append(p)
                    iov[j].iov_base = p
                    iov[j].iov_len = caps[i]
                sk = (_lib.c_char_p * m)(*[ks[i] for i in todo])
                sl = (_ct.c_size_t * m)(*[len(ks[i]) for i in todo])
                lens = (_ct.c_size_t * m)()
                st = (_ct.c_int * m)()
                rc = _lib.kvt_mget(c, nsb, sk, sl, m, iov, lens, st)
                if rc < 0:
                    e = self._fail(rc)
                    e.statuses = list(st)
                    raise e
                again = []
                for j, i in enumerate(todo):
                    s = st[j]
                    if s == 0:
                        result[i] = _ct.string_at(bufs[j], lens[j])
                        if lens[j] > self._size_hint:
                            self._size_hint = lens[j]
                    elif s == ERANGE:
                        caps[i] = lens[j]
                        if lens[j] > self._size_hint:
                            self._size_hint = lens[j]
                        again.append(i)
                    elif s != ENOTFOUND:
                        e = self._fail(s)
                        e.statuses = list(st)
                        raise e
                todo = again
            finally:
                for p in bufs:
                    _lib.free(p)
        if todo:
            raise BufferTooSmall(ERANGE, "values kept growing during mget")
        return result

    # Registered memory and jobs.

    @_exclusive
    def register(self, obj_or_fd, size=None, offset=0):
        """Lets the daemon map memory of this process: obj_or_fd is a
        SharedMemory, anything with fileno() (a file in /dev/shm, an
        engine's memfd-backed pool), or a descriptor; the daemon maps size
        bytes (None: to the end of the file) at offset of its file and
        copies values straight into and out of them (mget_to, mput_from).
        A descriptor open read-only is registered read-only (a source of
        mput_from only).  Returns the region id (an int).  Raises Denied
        for a file that is not memory-backed, TooBig past the daemon's
        reg-max / reg-max-bytes."""
        c = self._h()
        fd = obj_or_fd if isinstance(obj_or_fd, int) else obj_or_fd.fileno()
        offset = int(offset)
        length = 0 if size is None else int(size)
        if offset < 0 or length < 0 or (size is not None and length == 0):
            raise InvalidArgument(EINVAL, "offset and size must be >= 0, "
                                  "size > 0")
        flags = 0
        try:
            if _fcntl.fcntl(fd, _fcntl.F_GETFL) & _os.O_ACCMODE == \
                    _os.O_RDONLY:
                flags = REGION_READONLY
        except (OSError, ValueError) as e:
            raise InvalidArgument(EINVAL, "not an open descriptor: %s" % e)
        reg = _lib.Region()
        rc = _lib.kvt_register(c, fd, offset, length, flags, _ct.byref(reg))
        if rc < 0:
            raise self._fail(rc)
        return reg.id

    @_exclusive
    def unregister(self, region):
        """Ends a region (transfers still using it finish first).  Raises
        NotFound if this connection has no such region."""
        c = self._h()
        rc = _lib.kvt_unregister(c, int(region))
        if rc < 0:
            raise self._fail(rc)

    def _xfer_get_results(self, n, lens, st, raise_first):
        """mget_to's list: the value's length, None for a miss; an error
        (mismatch: BufferTooSmall with .needed, a fault: RegionFault) is
        raised after the batch (raise_first) or put in its place."""
        out = []
        first = None
        for i in range(n):
            s = st[i]
            if s == 0:
                out.append(lens[i])
            elif s == ENOTFOUND:
                out.append(None)
            else:
                e = _error(s, None, broken=False, needed=lens[i])
                first = first or e
                out.append(e)
        if raise_first and first is not None:
            first.statuses = list(st)[:n]
            first.lengths = list(lens)[:n]
            raise first
        return out

    @_exclusive
    def mget_to(self, keys, segments, ns=""):
        """Reads each key's value into registered memory: segments[i] is a
        list of (region, offset, length) whose concatenation is key i's
        value (an SGLang MHA page: its K half and its V half).  Returns a
        list: the value's length, or None for a miss.  A value whose length
        is not the sum of its segments writes nothing and raises
        BufferTooSmall (.needed, .statuses, .lengths) after the batch; a
        region whose file was shrunk raises RegionFault the same way."""
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, segs, nsegs, ks = _segments(keys, segments,
                                                    "mget_to")
        lens = (_ct.c_size_t * (n or 1))()
        st = (_ct.c_int * (n or 1))()
        rc = _lib.kvt_mget_to(c, nsb, karr, klens, n, segs, nsegs, lens, st)
        if rc < 0:
            e = self._fail(rc)
            e.statuses = list(st)[:n]
            raise e
        return self._xfer_get_results(n, lens, st, True)

    @_exclusive
    def mput_from(self, keys, segments, ns="", ttl=None, dtype=None):
        """Stores each key's value from registered memory (segments as for
        mget_to); the daemon copies every value out before this returns,
        so the memory may change at once.  Returns a list of bools: stored
        or not (a value larger than the cache, a region whose file was
        shrunk...).  ttl: seconds (None: no expiry); dtype: "bf16", "fp16",
        "fp32", "u8" or None."""
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, segs, nsegs, ks = _segments(keys, segments,
                                                    "mput_from")
        st = (_ct.c_int * (n or 1))()
        rc = _lib.kvt_mput_from(c, nsb, karr, klens, n, segs, nsegs,
                                _opts(ttl, _put_dtype(dtype)), st)
        if rc < 0:
            e = self._fail(rc)
            e.statuses = list(st)[:n]
            raise e
        return [st[i] == 0 for i in range(n)]

    @_exclusive
    def submit_mget_to(self, keys, segments, ns=""):
        """mget_to as a job: returns its id (an int) at once; poll()
        reports it with its results."""
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, segs, nsegs, ks = _segments(keys, segments,
                                                    "submit_mget_to")
        lens = (_ct.c_size_t * (n or 1))()
        st = (_ct.c_int * (n or 1))()
        job = _ct.c_uint64()
        rc = _lib.kvt_submit_mget_to(c, nsb, karr, klens, n, segs, nsegs,
                                     lens, st, _ct.byref(job))
        if rc < 0:
            raise self._fail(rc)
        # The library writes into lens and st until the job is reported.
        self._jobs[job.value] = (False, n, lens, st)
        return job.value

    @_exclusive
    def submit_mput_from(self, keys, segments, ns="", ttl=None, dtype=None):
        """mput_from as a job: returns its id at once; poll() reports it."""
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, segs, nsegs, ks = _segments(keys, segments,
                                                    "submit_mput_from")
        st = (_ct.c_int * (n or 1))()
        job = _ct.c_uint64()
        rc = _lib.kvt_submit_mput_from(c, nsb, karr, klens, n, segs, nsegs,
                                       _opts(ttl, _put_dtype(dtype)), st,
                                       _ct.byref(job))
        if rc < 0:
            raise self._fail(rc)
        self._jobs[job.value] = (True, n, None, st)
        return job.value

    @_exclusive
    def fileno(self):
        """A descriptor to wait on (select, poll, selectors, asyncio's
        add_reader): readable exactly while poll() has something to return
        (or a reply to read), not readable once everything is collected.
        Never read it: call poll(0).  Owned by the Client."""
        c = self._h()
        rc = _lib.kvt_poll_fd(c)
        if rc < 0:
            raise self._fail(rc)
        return rc

    @_exclusive
    def poll(self, timeout=None):
        """Finished jobs, oldest first, as a list of (job id, results):
        waits up to timeout seconds (None: until one finishes; 0: not at
        all) if none has; [] at once when no job is in flight.  results is
        what the synchronous call would return, an exception in place of
        a key that failed: for submit_mget_to the value's length, None for
        a miss, or an Error (BufferTooSmall for a length mismatch,
        RegionFault...; every key of a job the daemon refused carries its
        refusal); for submit_mput_from True or False (stored or not)."""
        c = self._h()
        if timeout is None:
            ms = -1
        else:
            ms = max(0, int(float(timeout) * 1000 + 0.999))
        cap = max(1, min(len(self._jobs), 1024))
        done = (_lib.JobDone * cap)()
        got = _ct.c_size_t()
        out = []
        while True:
            rc = _lib.kvt_poll(c, ms, done, cap, _ct.byref(got))
            if rc < 0:
                raise self._fail(rc)
            for i in range(got.value):
                jid = done[i].job
                put, n, lens, st = self._jobs.pop(jid)
                if put:
                    out.append((jid, [st[k] == 0 for k in range(n)]))
                else:
                    out.append((jid, self._xfer_get_results(n, lens, st,
                                                            False)))
            if got.value < cap:
                return out
            ms = 0  # a full batch: take what else has finished

    # Keys only.

    @_exclusive
    def _keys_call(self, fn, keys, ns):
        c = self._h()
        nsb = _ns(ns)
        n, karr, klens, ks = _keys(keys)
        out = _ct.c_size_t()
        rc = fn(c, nsb, karr, klens, n, _ct.byref(out))
        if rc < 0:
            raise self._fail(rc)
        return out.value

    def match(self, keys, ns=""):
        """How many leading keys are cached (stops at the first absent)."""
        return self._keys_call(_lib.kvt_match, keys, ns)

    def prefetch(self, keys, ns=""):
        """Asks the daemon to move keys up to RAM in the background; returns
        how many moves began."""
        return self._keys_call(_lib.kvt_prefetch, keys, ns)

    def pin(self, keys, ns=""):
        """Pins keys in RAM while this connection lives; returns how many
        keys are now pinned by it."""
        return self._keys_call(_lib.kvt_pin, keys, ns)

    def unpin(self, keys, ns=""):
        """Releases this connection's pins of keys; returns how many."""
        return self._keys_call(_lib.kvt_unpin, keys, ns)

    @_exclusive
    def drop(self, ns):
        """Removes every block of namespace ns; returns how many."""
        c = self._h()
        out = _ct.c_uint64()
        rc = _lib.kvt_drop(c, _ns(ns), _ct.byref(out))
        if rc < 0:
            raise self._fail(rc)
        return out.value

    # Introspection.

    @_exclusive
    def stats(self):
        """The daemon's counters (kvtier stats --json) as a dict."""
        c = self._h()
        p = _ct.c_void_p()
        ln = _ct.c_size_t()
        rc = _lib.kvt_stats_json(c, _ct.byref(p), _ct.byref(ln))
        if rc < 0:
            raise self._fail(rc)
        try:
            s = _ct.string_at(p.value, ln.value)
        finally:
            _lib.free(p)
        return _json.loads(s.decode("utf-8"))

    @_exclusive
    def hot(self, top=10):
        """The most-hit blocks: dicts with ns, key (bytes), tier, size,
        hits, age_s and idle_s (None when unknown / never read)."""
        c = self._h()
        top = int(top)
        if not 1 <= top <= 1000:
            raise InvalidArgument(EINVAL, "top must be 1 to 1000")
        p = _ct.POINTER(_lib.HotEntry)()
        n = _ct.c_size_t()
        rc = _lib.kvt_hot(c, top, _ct.byref(p), _ct.byref(n))
        if rc < 0:
            raise self._fail(rc)
        out = []
        try:
            for i in range(n.value):
                e = p[i]
                out.append({
                    "ns": (e.ns or b"").decode("utf-8", "replace"),
                    "key": _ct.string_at(e.key, e.key_len),
                    "tier": e.tier,
                    "size": e.size,
                    "hits": e.hits,
                    "age_s": None if e.age_s < 0 else e.age_s,
                    "idle_s": None if e.idle_s < 0 else e.idle_s,
                })
        finally:
            _lib.kvt_hot_free(p)
        return out


# --- Prefix keys -------------------------------------------------------------

def prefix_keys(tokens, namespace="", block_tokens=16):
    """The 32-byte prefix key (bytes) of every complete block of
    block_tokens tokens (kvt_prefix_keys(); proto/PROTOCOL.md).  tokens: a
    sequence of ints 0..2**32-1, or a C-contiguous uint32 buffer (numpy
    uint32 array, array.array('I')) used in place without a copy."""
    # Hashed with its length, so any bytes (even NULs) are fine here.
    if isinstance(namespace, (bytes, bytearray, memoryview)):
        nsb = bytes(namespace)
    else:
        nsb = str(namespace or "").encode("utf-8")
    if len(nsb) > 255:
        raise InvalidArgument(EINVAL, "namespace longer than 255 bytes")
    block_tokens = int(block_tokens)
    if block_tokens < 1 or block_tokens >= 2 ** 32:
        raise InvalidArgument(EINVAL, "block_tokens must be 1 to 2**32-1")
    view = None
    try:
        try:
            v = _lib.View(tokens)
        except (TypeError, BufferError):
            v = None
        if v is not None and v.itemsize == 4 and \
                v.format.lstrip("@=") in ("I", "L"):
            view = v
        else:
            if v is not None:
                v.release()
            try:
                arr = _array.array("I", tokens)
            except OverflowError:
                raise InvalidArgument(EINVAL, "token ids must be 0..2**32-1")
            assert arr.itemsize == 4
            view = _lib.View(arr)
        ntok = view.nbytes // 4
        nkeys = ntok // block_tokens
        out = _ct.create_string_buffer(32 * nkeys or 1)
        got = _ct.c_size_t()
        rc = _lib.kvt_prefix_keys(nsb or None, len(nsb), view.addr if ntok else None,
                                  ntok, block_tokens, out, nkeys,
                                  _ct.byref(got))
    finally:
        if view is not None:
            view.release()
    if rc < 0:
        raise _error(rc)
    raw = out.raw
    return [raw[32 * i:32 * i + 32] for i in range(got.value)]


def version():
    """The library's version string, e.g. "0.1.0"."""
    return _lib.kvt_version().decode("ascii")
