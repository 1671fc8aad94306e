"""ctypes bindings of libkvtier (client/kvtier.h): locating the library,
declaring every function used, and borrowing the memory of Python buffers
without copying them."""

import ctypes
import ctypes.util
import glob
import os

c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_size_t = ctypes.c_size_t
c_int = ctypes.c_int
P_size_t = ctypes.POINTER(c_size_t)
P_char_p = ctypes.POINTER(c_char_p)
P_void_p = ctypes.POINTER(c_void_p)

_HERE = os.path.dirname(os.path.abspath(__file__))

try:
    # Written by `make install` (kvtier/_installed.py: LIBDIR, the libdir
    # the library went to); absent in the source tree and in pip installs.
    from . import _installed
except ImportError:
    _installed = None

SONAME = "libkvtier.so.1"


def _candidates():
    """(description, path-or-None) in search order."""
    out = []
    local = sorted(glob.glob(os.path.join(_HERE, "libkvtier.so*")))
    out.append(("next to the package: " + os.path.join(_HERE, "libkvtier.so*"),
                local[0] if local else None))
    env = os.environ.get("KVTIER_LIB")
    out.append(("$KVTIER_LIB" + ("=" + env if env else " (unset)"),
                env or None))
    libdir = getattr(_installed, "LIBDIR", None)
    if libdir:
        # The installed package names its own library, so that a PREFIX
        # outside the dynamic linker's path still works.
        path = os.path.join(libdir, SONAME)
        ok = os.path.exists(path)
        out.append(("the installed library " + path +
                    ("" if ok else " (not found)"), path if ok else None))
    # client/python/kvtier of a source tree: that tree's build/.
    tree = os.path.normpath(os.path.join(_HERE, "..", ".."))
    if os.path.exists(os.path.join(tree, "kvtier.h")):
        repo = os.path.normpath(os.path.join(tree, "..", "build", SONAME))
        ok = os.path.exists(repo)
        out.append((repo + ("" if ok else " (not found)"),
                    repo if ok else None))
    # The dynamic linker's own search by SONAME: LD_LIBRARY_PATH, the
    # ld.so.conf directories (/usr/local/lib after `make install`), /usr/lib.
    out.append(("the dynamic linker's search for " + SONAME, SONAME))
    found = ctypes.util.find_library("kvtier")
    out.append(("ctypes.util.find_library('kvtier')" +
                (" -> " + found if found else " (not found)"), found))
    return out


def _load():
    tried = []
    for what, path in _candidates():
        if path is None:
            tried.append(what)
            continue
        try:
            return ctypes.CDLL(path, use_errno=False)
        except OSError as e:
            tried.append("%s: %s" % (what, e))
    raise ImportError("kvtier: cannot find libkvtier; looked at:\n  " +
                      "\n  ".join(tried) +
                      "\nbuild it (make), install it (make install), or set KVTIER_LIB "
                      "to its path")


lib = _load()


class PutOpts(ctypes.Structure):
    _fields_ = [("ttl_s", ctypes.c_uint32), ("dtype", ctypes.c_uint8)]


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


class Region(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("length", ctypes.c_uint64)]


class Seg(ctypes.Structure):
    _fields_ = [("region", ctypes.c_uint32), ("offset", ctypes.c_uint64),
                ("len", ctypes.c_uint64)]


class JobDone(ctypes.Structure):
    _fields_ = [("job", ctypes.c_uint64), ("status", c_int)]


class HotEntry(ctypes.Structure):
    _fields_ = [("ns", c_char_p),
                ("key", ctypes.POINTER(ctypes.c_uint8)),
                ("key_len", c_size_t),
                ("tier", c_int),
                ("size", ctypes.c_uint64),
                ("hits", ctypes.c_uint64),
                ("age_s", ctypes.c_int64),
                ("idle_s", ctypes.c_int64)]


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


kvt_connect = _fn("kvt_connect", c_int, P_void_p, c_char_p)
kvt_close = _fn("kvt_close", None, c_void_p)
kvt_client_errmsg = _fn("kvt_client_errmsg", c_char_p, c_void_p)
kvt_client_shm = _fn("kvt_client_shm", c_int, c_void_p)
kvt_client_broken = _fn("kvt_client_broken", c_int, c_void_p)
kvt_strerror = _fn("kvt_strerror", c_char_p, c_int)
kvt_version = _fn("kvt_version", c_char_p)
kvt_put = _fn("kvt_put", c_int, c_void_p, c_char_p, c_void_p, c_size_t,
              c_void_p, c_size_t, ctypes.POINTER(PutOpts))
kvt_get = _fn("kvt_get", c_int, c_void_p, c_char_p, c_void_p, c_size_t,
              c_void_p, c_size_t, P_size_t)
kvt_get_alloc = _fn("kvt_get_alloc", c_int, c_void_p, c_char_p, c_void_p,
                    c_size_t, P_void_p, P_size_t)
kvt_del = _fn("kvt_del", c_int, c_void_p, c_char_p, c_void_p, c_size_t)
kvt_exists = _fn("kvt_exists", c_int, c_void_p, c_char_p, c_void_p, c_size_t)
_keys_fn = (c_int, c_void_p, c_char_p, P_char_p, P_size_t, c_size_t, P_size_t)
kvt_match = _fn("kvt_match", *_keys_fn)
kvt_prefetch = _fn("kvt_prefetch", *_keys_fn)
kvt_pin = _fn("kvt_pin", *_keys_fn)
kvt_unpin = _fn("kvt_unpin", *_keys_fn)
kvt_drop = _fn("kvt_drop", c_int, c_void_p, c_char_p,
               ctypes.POINTER(ctypes.c_uint64))
kvt_mput = _fn("kvt_mput", c_int, c_void_p, c_char_p, P_char_p, P_size_t,
               P_void_p, P_size_t, c_size_t, ctypes.POINTER(PutOpts),
               ctypes.POINTER(c_int))
kvt_mget = _fn("kvt_mget", c_int, c_void_p, c_char_p, P_char_p, P_size_t,
               c_size_t, ctypes.POINTER(IOVec), P_size_t,
               ctypes.POINTER(c_int))
kvt_hot = _fn("kvt_hot", c_int, c_void_p, ctypes.c_uint,
              ctypes.POINTER(ctypes.POINTER(HotEntry)), P_size_t)
kvt_hot_free = _fn("kvt_hot_free", None, ctypes.POINTER(HotEntry))
kvt_stats_json = _fn("kvt_stats_json", c_int, c_void_p,
                     ctypes.POINTER(c_void_p), P_size_t)
kvt_register = _fn("kvt_register", c_int, c_void_p, c_int, ctypes.c_uint64,
                   ctypes.c_uint64, ctypes.c_uint32, ctypes.POINTER(Region))
kvt_unregister = _fn("kvt_unregister", c_int, c_void_p, ctypes.c_uint32)
_xfer = (c_void_p, c_char_p, P_char_p, P_size_t, c_size_t,
         ctypes.POINTER(Seg), P_size_t)
kvt_mget_to = _fn("kvt_mget_to", c_int, *_xfer, P_size_t,
                  ctypes.POINTER(c_int))
kvt_mput_from = _fn("kvt_mput_from", c_int, *_xfer, ctypes.POINTER(PutOpts),
                    ctypes.POINTER(c_int))
kvt_submit_mget_to = _fn("kvt_submit_mget_to", c_int, *_xfer, P_size_t,
                         ctypes.POINTER(c_int),
                         ctypes.POINTER(ctypes.c_uint64))
kvt_submit_mput_from = _fn("kvt_submit_mput_from", c_int, *_xfer,
                           ctypes.POINTER(PutOpts), ctypes.POINTER(c_int),
                           ctypes.POINTER(ctypes.c_uint64))
kvt_poll = _fn("kvt_poll", c_int, c_void_p, c_int, ctypes.POINTER(JobDone),
               c_size_t, P_size_t)
kvt_poll_fd = _fn("kvt_poll_fd", c_int, c_void_p)
kvt_prefix_keys = _fn("kvt_prefix_keys", c_int, c_char_p, c_size_t, c_void_p,
                      c_size_t, ctypes.c_uint, c_void_p, c_size_t, P_size_t)

# free() for memory the library returns from malloc(): the process's free,
# which is the sanitizer's when one is preloaded.
_libc = ctypes.CDLL(None)
free = _libc.free
free.restype = None
free.argtypes = [c_void_p]
malloc = _libc.malloc
malloc.restype = c_void_p
malloc.argtypes = [c_size_t]


# --- Borrowing a buffer's memory without a copy ------------------------------
#
# PyObject_GetBuffer() gives the address of any buffer-protocol object's
# memory (bytes, bytearray, memoryview, array.array, mmap, numpy arrays...),
# read-only or writable, and keeps the exporter from resizing or freeing it
# until PyBuffer_Release().  The Py_buffer layout is part of CPython's stable
# ABI (3.11+) and has been identical since 3.3.

class Py_buffer(ctypes.Structure):
    _fields_ = [("buf", c_void_p),
                ("obj", ctypes.py_object),
                ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t),
                ("readonly", c_int),
                ("ndim", c_int),
                ("format", c_char_p),
                ("shape", ctypes.POINTER(ctypes.c_ssize_t)),
                ("strides", ctypes.POINTER(ctypes.c_ssize_t)),
                ("suboffsets", ctypes.POINTER(ctypes.c_ssize_t)),
                ("internal", c_void_p)]


PyBUF_WRITABLE = 0x0001
PyBUF_FORMAT = 0x0004
PyBUF_ND = 0x0008
PyBUF_STRIDES = 0x0010 | PyBUF_ND
PyBUF_C_CONTIGUOUS = 0x0020 | PyBUF_STRIDES

_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_GetBuffer.restype = c_int
_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), c_int]
_Release = ctypes.pythonapi.PyBuffer_Release
_Release.restype = None
_Release.argtypes = [ctypes.POINTER(Py_buffer)]


class View:
    """The memory of a C-contiguous buffer object, borrowed (no copy) until
    release().  .addr, .nbytes, .itemsize, .format (str)."""

    __slots__ = ("_pb", "addr", "nbytes", "itemsize", "format")

    def __init__(self, obj, writable=False):
        self._pb = None
        pb = Py_buffer()
        flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
        if writable:
            flags |= PyBUF_WRITABLE
        # Raises TypeError/BufferError (set by the exporter) on failure.
        _GetBuffer(obj, ctypes.byref(pb), flags)
        self._pb = pb
        self.addr = pb.buf
        self.nbytes = pb.len
        self.itemsize = pb.itemsize
        f = pb.format
        self.format = f.decode("ascii", "replace") if f is not None else "B"

    def release(self):
        pb = self._pb
        if pb is not None:
            self._pb = None
            _Release(ctypes.byref(pb))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        if getattr(self, "_pb", None) is not None:
            self.release()
