"""Helpers the engine adapters (kvtier.sglang, kvtier.vllm, kvtier.lmcache)
share: namespaces, sizes, warnings logged once, a pool of clients for
callers on several threads, and where a buffer's memory lives.  Standard
library only; nothing here imports an engine."""

import ctypes
import hashlib
import os
import threading

from . import Client, ConnectionClosed, DaemonUnreachable, Error, _lib

NS_MAX = 255  # KVT_NS_MAX: a namespace is at most 255 bytes


def namespace(parts):
    """Joins the non-empty parts with "/" into a kvtier namespace.  A result
    longer than 255 bytes keeps its first 200 bytes and ends in a hash of the
    whole, so that it stays unique and stable."""
    ns = "/".join(str(p) for p in parts if p not in (None, ""))
    b = ns.encode("utf-8")
    if len(b) <= NS_MAX:
        return ns
    tail = "~" + hashlib.sha256(b).hexdigest()[:32]
    head = b[:200].decode("utf-8", "ignore")
    return head + tail


def name_part(s):
    """A model name or other free text as one namespace part: no "/" (which
    separates the parts), no whitespace."""
    return "-".join(str(s).replace("/", "-").split())


_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(v):
    """An int, or a string with an optional K, M, G or T suffix (powers of
    1024, as kvtierd's flags)."""
    if isinstance(v, int):
        n = v
    else:
        s = str(v).strip().upper()
        if s.endswith("B") and len(s) > 1 and s[-2] in "KMGT":
            s = s[:-1]
        suffix = s[-1] if s and s[-1] in "KMGT" else ""
        try:
            n = int(float(s[:len(s) - len(suffix)]) * _SUFFIXES[suffix])
        except ValueError:
            raise ValueError("not a size: %r (a number with K, M, G or T)"
                             % (v,))
    if n < 0:
        raise ValueError("negative size: %r" % (v,))
    return n


class Once:
    """Logs each kind of message once per process object: an adapter called
    thousands of times a second must not flood the engine's log, yet the
    first failure of each kind must be visible."""

    def __init__(self, logger):
        self.logger = logger
        self.seen = set()
        self.lock = threading.Lock()

    def warn(self, kind, msg, *args, **kw):
        with self.lock:
            if kind in self.seen:
                return False
            self.seen.add(kind)
        self.logger.warning(msg, *args, **kw)
        return True


def buffer_address(obj):
    """(address, nbytes) of a C-contiguous buffer's memory (an mmap, a
    memoryview, a numpy array...).  The buffer is released at once: the
    caller keeps obj alive while it uses the address."""
    with _lib.View(obj) as v:
        return v.addr, v.nbytes


def memory_at(addr, nbytes):
    """A writable memoryview (format "B") of nbytes at addr: memory the
    caller owns and keeps alive (an engine's pool, given as pointers)."""
    return memoryview((ctypes.c_char * nbytes).from_address(addr)).cast("B")


memmove = ctypes.memmove  # releases the GIL while it copies


def mapping_of(addr, nbytes, maps="/proc/self/maps"):
    """The file mapped at [addr, addr + nbytes) of this process, from
    /proc/self/maps: (path, file offset of addr, st_dev, st_ino), or None if
    that range is not inside one mapping of a named file (anonymous memory,
    a deleted file, several mappings, or no /proc)."""
    try:
        with open(maps, "r") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) < 6:
            continue
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if not lo <= addr < hi:
            continue
        path = fields[5].rstrip("\n")
        if addr + nbytes > hi or not path.startswith("/") or \
                path.endswith(" (deleted)"):
            return None
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        return (path, int(fields[2], 16) + (addr - lo),
                os.makedev(major, minor), int(fields[4]))
    return None


def torch_buffer(x, writable=False):
    """x as something with the buffer protocol.  A torch CPU tensor (or
    anything with data_ptr(), numel() and element_size()) becomes a ctypes
    array over its memory, without importing torch; a non-contiguous
    tensor is copied when only read, refused when written.  Anything else
    is returned as it is.  Returns (buffer, owner): keep owner alive while
    the buffer is in use."""
    if not (hasattr(x, "data_ptr") and hasattr(x, "element_size")):
        return x, x
    dev = getattr(getattr(x, "device", None), "type", "cpu")
    if dev != "cpu":
        raise ValueError("kvtier moves host memory only; tensor is on %s"
                         % dev)
    if hasattr(x, "is_contiguous") and not x.is_contiguous():
        if writable:
            raise ValueError("cannot receive into a non-contiguous tensor")
        x = x.contiguous()
    n = x.numel() * x.element_size()
    return memory_at(x.data_ptr(), n) if n else bytearray(), x


class ClientPool:
    """Clients for callers on several threads: a Client serves one thread at
    a time, so each call takes an idle client (or connects a new one) and
    gives it back.  on_connect(client) runs once per new client (to
    register memory: registrations belong to a connection).  A client whose
    connection broke is dropped, so that a restarted daemon is reconnected
    to by the next call.  After fork() the parent's clients are left alone
    and the child connects its own."""

    def __init__(self, socket, on_connect=None):
        self.socket = socket
        self.on_connect = on_connect
        self.lock = threading.Lock()
        self.idle = []
        self.all = []
        self.pid = os.getpid()

    def get(self, fresh=False):
        with self.lock:
            if self.pid != os.getpid():
                self.idle, self.all, self.pid = [], [], os.getpid()
            if self.idle and not fresh:
                return self.idle.pop()
        c = Client(self.socket)
        try:
            if self.on_connect is not None:
                self.on_connect(c)
        except BaseException:
            c.close()
            raise
        with self.lock:
            self.all.append(c)
        return c

    def put(self, c, broken=False):
        with self.lock:
            if c.closed or broken or self.pid != os.getpid():
                if c in self.all:
                    self.all.remove(c)
                try:
                    c.close()
                except Error:
                    pass
                return
            self.idle.append(c)

    def call(self, fn):
        """fn(client) with a client of the pool.  A connection error drops
        that client; if it was an idle one (its daemon may have restarted
        since), fn runs once more on a new connection, so fn must be safe
        to repeat (every adapter call is: gets, puts of the same bytes,
        matches)."""
        for fresh in (False, True):
            with self.lock:
                reused = bool(self.idle) and not fresh
            c = self.get(fresh)
            try:
                r = fn(c)
            except (ConnectionClosed, DaemonUnreachable):
                self.put(c, broken=True)
                if reused:
                    continue
                raise
            except Error as e:
                self.put(c, broken=is_fault(e))
                raise
            except BaseException:
                self.put(c)
                raise
            self.put(c)
            return r

    def close(self):
        with self.lock:
            clients, self.all, self.idle = self.all, [], []
            mine = self.pid == os.getpid()
        if not mine:  # a child after fork(): the parent's connections
            return
        for c in clients:
            try:
                c.close()
            except Error:  # in use by another thread: ConcurrentUse
                pass


def is_connection_error(e):
    return isinstance(e, (ConnectionClosed, DaemonUnreachable))


EFAULT = -1018  # KVT_EFAULT: a registered region failed (its file shrank)


def is_fault(e):
    """A registered region is broken (kvtier.RegionFault): its connection
    must register the memory again, on a new connection here."""
    return isinstance(e, Error) and e.code == EFAULT

