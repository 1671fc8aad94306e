"""kvtier.vllm - kvtier as a secondary tier of vLLM's tiered KV offloading.

vLLM's OffloadingConnector with the TieringOffloadingSpec keeps a primary
CPU tier in a file under /dev/shm and moves blocks between it and the
secondary tiers it is given (engine code read: vllm-project/vllm, the
tiering API of PR #51007 and after; see README "Use with SGLang / vLLM /
LMCache"):

    PYTHONHASHSEED=0 vllm serve MODEL --kv-transfer-config '{
        "kv_connector":"OffloadingConnector","kv_role":"kv_both",
        "kv_connector_extra_config":{"spec_name":"TieringOffloadingSpec",
            "cpu_bytes_to_use":34359738368,"block_size":64,
            "secondary_tiers":[{"type":"KvtierSecondaryTier",
                "module_path":"kvtier.vllm","socket":"/run/kvtier/kvtier.sock"}]}}'

"type" is the class name; every other key of the tier's dict arrives as a
keyword argument: "socket" (kvtierd's socket; default $KVTIER_SOCKET, else
the library default), "namespace" (the first part of the namespace,
default "vllm"), "shm_path" (the primary tier's file, found from the
mapping of primary_kv_view when absent), "ttl" (seconds).

The primary tier's file is registered with kvtierd once; a store or load
job is one segment batch (MPUT_FROM / MGET_TO) submitted without waiting:
the daemon's workers copy the block rows out of, or into, the file, and
get_finished_jobs() collects what completed.  Every method returns at once
except drain_jobs() (which vLLM calls to wait) and shutdown().  lookup()
asks the daemon whether a key is present (one round trip on a connection
of its own, answered from the daemon's index; no data moves), and answers
RETRY (None in the bool API) for a key whose store or load is in flight.

Keys are vLLM's offload keys as they are (block hash + 4-byte group
index).  vLLM seeds its block-hash chain from PYTHONHASHSEED; unset, the
seed is random per process, so no key ever matches across processes or
restarts: set it (to the same value) for every vLLM process that should
share the cache.  A warning says so once when it is unset.
"""

import dataclasses
import inspect
import logging
import mmap
import os
import threading
import time

from . import Client, Error, MATCH_KEYS_MAX
from . import _engine

try:
    from vllm.v1.kv_offload.tiering import base as _tb
except ImportError:  # vLLM not installed: still importable
    _tb = None
try:
    from vllm.v1.kv_offload import base as _ob
except ImportError:
    _ob = None

__all__ = ["KvtierSecondaryTier"]

log = logging.getLogger(__name__)

_Base = getattr(_tb, "SecondaryTierManager", object)
_LookupResult = getattr(_ob, "LookupResult", None)
_RequestOffloadingContext = getattr(_ob, "RequestOffloadingContext", None)


@dataclasses.dataclass
class _LocalJobResult:
    """vLLM's JobResult(job_id, success) when vLLM is not importable."""
    job_id: int
    success: bool


_JobResult = getattr(_tb, "JobResult", _LocalJobResult)
_JOB_RESULT_FIELDS = {f.name for f in dataclasses.fields(_JobResult)} \
    if dataclasses.is_dataclass(_JobResult) else {"job_id", "success"}

_hashseed_warned = False


def _lookup_style():
    """"enum" if this vLLM's lookup() answers LookupResult (HIT, MISS,
    RETRY; vLLM 0.25 and later), "bool" if True / False / None."""
    if _Base is object or _LookupResult is None:
        return "bool"
    ann = inspect.signature(_Base.lookup).return_annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    if "LookupResult" in text:
        return "enum"
    if "bool" in text:
        return "bool"
    return "enum"


def _base_init_args():
    """The argument names of the base class's __init__ (they differ between
    vLLM versions: vllm_config, or offloading_spec and tier_type)."""
    if _Base is object:
        return ()
    try:
        return tuple(inspect.signature(_Base.__init__).parameters)[1:]
    except (TypeError, ValueError):
        return ()


class _Job:
    """One vLLM job: its kvtier jobs (one per 4096 keys) and their keys."""

    __slots__ = ("job_id", "store", "keys", "want", "left", "ok",
                 "is_promotion", "orig_keys", "done")

    def __init__(self, job_id, store, keys, orig_keys, want, is_promotion):
        self.job_id = job_id
        self.store = store
        self.keys = keys
        self.orig_keys = orig_keys
        self.want = want          # value length per key
        self.left = 0             # kvtier jobs not completed yet
        self.ok = [False] * len(keys)
        self.is_promotion = is_promotion
        self.done = False


class KvtierSecondaryTier(_Base):
    """vLLM SecondaryTierManager backed by kvtierd (module docstring)."""

    def __init__(self, offloading_spec=None, primary_kv_view=None,
                 tier_type="KvtierSecondaryTier", **tier_config):
        vllm_config = tier_config.pop("vllm_config", None)
        if vllm_config is None:
            vllm_config = getattr(offloading_spec, "vllm_config", None)
        names = _base_init_args()
        if "offloading_spec" in names:
            _Base.__init__(self, offloading_spec=offloading_spec,
                           primary_kv_view=primary_kv_view,
                           tier_type=tier_type)
        elif "vllm_config" in names:
            _Base.__init__(self, vllm_config=vllm_config,
                           primary_kv_view=primary_kv_view)
        self.tier_type = tier_type
        self._lookup_enum = _lookup_style() == "enum"
        cfg = tier_config
        self._socket = cfg.pop("socket", None)
        self._ttl = int(cfg.pop("ttl")) if cfg.get("ttl") else None
        ns = cfg.pop("namespace", None)
        shm_path = cfg.pop("shm_path", None)
        if cfg:
            log.warning("kvtier.vllm: ignoring unknown tier settings %s",
                        sorted(cfg))
        _warn_hashseed()

        view = memoryview(primary_kv_view)
        if view.ndim >= 2:
            self._nblocks = view.shape[0]
        else:
            raise ValueError("kvtier.vllm: primary_kv_view must be 2-D "
                             "(blocks, row bytes), not %d-D" % view.ndim)
        self._view = view
        self._row = view.nbytes // self._nblocks if self._nblocks else 0
        self._ns = self._namespace(ns or "vllm", offloading_spec,
                                   vllm_config)
        self._file = self._primary_file(offloading_spec, view, shm_path)
        self._once = _engine.Once(log)
        self._lock = threading.Lock()
        self._jobs = {}         # kvtier job id -> (_Job, first key index, n)
        self._pending = {}      # vLLM job id -> _Job
        self._busy = {}         # key -> jobs in flight using it
        self._finished = []
        self._data = None       # async store / load connection
        self._region = None
        self._ctl = None        # lookup connection
        self._fault = None      # a region fault seen in a job's results
        self._connect()
        log.info("kvtier.vllm: namespace %s, primary tier %s (%d blocks of "
                 "%d bytes at offset %d), lookup answers %s", self._ns,
                 self._file[0], self._nblocks, self._row, self._file[1],
                 "LookupResult" if self._lookup_enum else "bool | None")

    # --- set-up -----------------------------------------------------------

    def _namespace(self, prefix, spec, vllm_config):
        """PREFIX/MODEL/DTYPE/tpN/ppN/bTOKENS/rROWBYTES: what changes the
        bytes of a row of the primary tier (PREFIX: "vllm", or the tier's
        "namespace" setting)."""
        mc = getattr(vllm_config, "model_config", None)
        cc = getattr(vllm_config, "cache_config", None)
        pc = getattr(vllm_config, "parallel_config", None)
        model = getattr(mc, "served_model_name", None) or \
            getattr(mc, "model", None) or "unnamed-model"
        if isinstance(model, (list, tuple)):
            model = model[0] if model else "unnamed-model"
        dtype = getattr(cc, "cache_dtype", None)
        if dtype in (None, "auto"):
            dtype = str(getattr(mc, "dtype", "") or "auto").replace("torch.",
                                                                    "")
        tokens = None
        for src, name in ((spec, "offloaded_block_size"), (spec, "block_size"),
                          (getattr(spec, "extra_config", None), "block_size")):
            tokens = src.get(name) if isinstance(src, dict) else \
                getattr(src, name, None)
            if tokens:
                break
        return _engine.namespace([
            prefix, _engine.name_part(model), dtype,
            "tp%s" % getattr(pc, "tensor_parallel_size", 1),
            "pp%s" % getattr(pc, "pipeline_parallel_size", 1),
            "b%s" % tokens if tokens else None, "r%d" % self._row])

    def _primary_file(self, spec, view, shm_path):
        """(path, file offset of row 0) of the file the primary tier maps:
        the mapping of primary_kv_view in /proc/self/maps, else shm_path,
        else the spec's own /dev/shm file."""
        addr, nbytes = _engine.buffer_address(view)
        found = _engine.mapping_of(addr, nbytes)
        if shm_path is None:
            shm_path = getattr(getattr(spec, "_scheduler_mmap", None),
                               "mmap_path", None)
            if found is not None:
                shm_path = found[0]
        if shm_path is None:
            raise ValueError("kvtier.vllm: primary_kv_view is not a mapping "
                             "of a file; give the primary tier's file as "
                             "\"shm_path\" in the tier's config")
        if found is None:
            return shm_path, 0
        st = os.stat(shm_path)
        if (st.st_dev, st.st_ino) != (found[2], found[3]):
            raise ValueError("kvtier.vllm: shm_path %s is not the file "
                             "primary_kv_view maps (%s)" % (shm_path, found[0]))
        return shm_path, found[1]

    def _connect(self):
        """Connects both connections and registers the primary tier's file
        (again after a connection broke)."""
        if self._ctl is None:
            self._ctl = Client(self._socket)
        if self._data is None:
            path, off = self._file
            start = off - off % mmap.PAGESIZE
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                c = Client(self._socket)
                try:
                    self._region = c.register(
                        fd, size=off - start + self._nblocks * self._row,
                        offset=start)
                except BaseException:
                    c.close()
                    raise
            finally:
                os.close(fd)  # the daemon holds its own
            self._data = c
            self._base = off - start

    def _reset(self, which, e):
        """Drops a broken connection; the next call connects again.  The
        data connection's jobs in flight fail."""
        self._once.warn(("conn", which, type(e)), "kvtier.vllm: %s "
                        "connection failed: %s (reconnecting on the next "
                        "call)", which, e)
        if which == "data":
            c, self._data = self._data, None
            for kjob in list(self._jobs):
                self._complete(kjob, None)
        else:
            c, self._ctl = self._ctl, None
        try:
            c.close()
        except Error:
            pass

    # --- jobs -------------------------------------------------------------

    def _segments(self, job):
        ids = getattr(job, "chunk_ids", None)
        if ids is None:
            ids = job.block_ids
        ids = [int(b) for b in (ids.tolist() if hasattr(ids, "tolist")
                                else ids)]
        keys = list(job.keys)
        if not keys or len(ids) % len(keys):
            raise ValueError("kvtier.vllm: job %s has %d keys and %d slots"
                             % (job.job_id, len(keys), len(ids)))
        per = len(ids) // len(keys)
        segs = []
        for i in range(len(keys)):
            mine = ids[i * per:(i + 1) * per]
            if min(mine) < 0 or max(mine) >= self._nblocks:
                raise ValueError("kvtier.vllm: slot out of range in job %s"
                                 % job.job_id)
            s = []
            for b in mine:  # adjacent slots make one segment
                off = self._base + b * self._row
                if s and s[-1][1] + s[-1][2] == off:
                    s[-1] = (self._region, s[-1][1], s[-1][2] + self._row)
                else:
                    s.append((self._region, off, self._row))
            segs.append(s)
        return keys, segs, per * self._row

    def _submit(self, job, store):
        with self._lock:
            try:
                if self._data is None:
                    self._connect()
            except (Error, OSError) as e:
                self._once.warn(("connect", type(e)), "kvtier.vllm: cannot "
                                "reach kvtierd: %s", e)
                self._finished.append(self._result(job.job_id, False, None))
                return
            keys, segs, want = self._segments(job)
            ks = [bytes(k) for k in keys]
            j = _Job(job.job_id, store, ks, keys, want,
                     bool(getattr(job, "is_promotion", False)))
            self._pending[job.job_id] = j
            for k in ks:
                self._busy[k] = self._busy.get(k, 0) + 1
            # One kvtier job per 4096 keys; keys of a part that could not
            # be submitted stay failed.
            for i in range(0, len(ks), MATCH_KEYS_MAX):
                part = slice(i, i + MATCH_KEYS_MAX)
                try:
                    if store:
                        kj = self._data.submit_mput_from(
                            ks[part], segs[part], ns=self._ns, ttl=self._ttl)
                    else:
                        kj = self._data.submit_mget_to(ks[part], segs[part],
                                                       ns=self._ns)
                except Error as e:
                    if _engine.is_connection_error(e):
                        self._reset("data", e)
                    else:
                        self._once.warn(("submit", type(e)), "kvtier.vllm: "
                                        "submit failed: %s", e)
                    break
                j.left += 1
                self._jobs[kj] = (j, i, len(ks[part]))
            if j.left == 0:
                self._finish(j)

    def submit_store(self, job_metadata):
        """Stores the job's rows of the primary tier under its keys; returns
        at once (the daemon copies the rows before it completes the job)."""
        self._submit(job_metadata, True)

    def submit_load(self, job_metadata):
        """Loads the job's keys into its rows of the primary tier; returns at
        once."""
        self._submit(job_metadata, False)

    def _complete(self, kjob, results):
        """Books the results of kvtier job kjob (None: it failed whole)."""
        j, first, n = self._jobs.pop(kjob)
        if results is not None and not isinstance(results, BaseException):
            for i, r in enumerate(list(results)[:n]):
                if _engine.is_fault(r):
                    self._fault = r
                if j.store:
                    ok = r is True or (r is not None and
                                       not isinstance(r, BaseException) and
                                       bool(r))
                else:
                    ok = isinstance(r, int) and not isinstance(r, bool) and \
                        r == j.want
                j.ok[first + i] = ok
        j.left -= 1
        if j.left == 0:
            self._finish(j)

    def _finish(self, j):
        if j.done:
            return
        j.done = True
        for k in j.keys:
            left = self._busy.get(k, 0) - 1
            if left > 0:
                self._busy[k] = left
            else:
                self._busy.pop(k, None)
        self._pending.pop(j.job_id, None)
        good = None
        if not all(j.ok) and j.is_promotion:
            good = [k for k, ok in zip(j.orig_keys, j.ok) if ok]
        self._finished.append(self._result(j.job_id, all(j.ok), good))

    @staticmethod
    def _result(job_id, success, successful_keys):
        if successful_keys is not None and \
                "successful_keys" in _JOB_RESULT_FIELDS:
            return _JobResult(job_id=job_id, success=success,
                              successful_keys=successful_keys)
        return _JobResult(job_id=job_id, success=success)

    def _collect(self, timeout):
        """Books the completions kvtier has (waiting up to timeout
        seconds for the first; 0: not at all)."""
        if not self._jobs or self._data is None:
            return
        try:
            done = self._data.poll(timeout)
        except Error as e:
            self._reset("data", e)
            return
        for kj, results in done:
            if kj in self._jobs:
                self._complete(kj, results)
        if self._fault is not None:
            # The primary tier's file was shrunk under a transfer: the
            # region is broken for good; register it again on a new
            # connection.
            fault, self._fault = self._fault, None
            self._reset("data", fault)

    def get_finished_jobs(self):
        """The jobs completed since the last call (JobResult)."""
        with self._lock:
            self._collect(0)
            out, self._finished = self._finished, []
        return out

    get_finished = get_finished_jobs  # the name in vLLM before 0.25

    def has_pending_work(self):
        return bool(self._pending or self._finished)

    def drain_jobs(self):
        """Waits until every submitted job has completed; their results
        still come out of get_finished_jobs()."""
        with self._lock:
            while self._jobs and self._data is not None:
                self._collect(1.0)

    # --- lookups ----------------------------------------------------------

    def lookup(self, key, req_context=None):
        """HIT / MISS (True / False), or RETRY (None) while a store or load
        of key is in flight."""
        k = bytes(key)
        with self._lock:
            if k in self._busy:
                return _LookupResult.RETRY if self._lookup_enum else None
            try:
                if self._ctl is None:
                    self._connect()
                hit = self._ctl.exists(k, ns=self._ns)
            except (Error, OSError) as e:
                if _engine.is_connection_error(e):
                    self._reset("lookup", e)
                else:
                    self._once.warn(("lookup", type(e)), "kvtier.vllm: "
                                    "lookup failed: %s", e)
                hit = False
        if self._lookup_enum:
            return _LookupResult.HIT if hit else _LookupResult.MISS
        return hit

    def touch(self, keys, req_context=None):
        """Nothing: kvtierd's LRU learns from reads."""

    # --- requests (the hooks of the newer API; defaults) ------------------

    def on_new_request(self, req_context):
        return _RequestOffloadingContext() \
            if _RequestOffloadingContext is not None else None

    get_request_offloading_context = on_new_request  # vLLM before 0.25

    def on_request_finished(self, req_context):
        pass

    request_finished = on_request_finished

    @staticmethod
    def get_tier_type():
        return "KvtierSecondaryTier"

    @classmethod
    def build_metric_definitions(cls, extra_config):
        return {}

    def get_stats(self):
        return None

    # --- shutdown ---------------------------------------------------------

    def shutdown(self, timeout=30.0):
        """Waits (up to timeout seconds) for the jobs in flight, then closes
        both connections."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._jobs and self._data is not None and \
                    time.monotonic() < deadline:
                self._collect(min(1.0, max(0.0, deadline - time.monotonic())))
            for c in (self._data, self._ctl):
                if c is not None:
                    try:
                        c.close()
                    except Error:
                        pass
            self._data = self._ctl = None
            self._jobs.clear()

    def stop_executor(self):
        """Nothing: this tier runs no threads of its own."""

    @property
    def namespace(self):
        return self._ns


def _warn_hashseed():
    global _hashseed_warned
    if os.environ.get("PYTHONHASHSEED") is None and not _hashseed_warned:
        _hashseed_warned = True
        log.warning("kvtier.vllm: PYTHONHASHSEED is not set: vLLM seeds its "
                    "block hashes at random in each process, so no other "
                    "process (and no restart) will ever find the blocks this "
                    "one stores; set PYTHONHASHSEED to the same value for "
                    "every vLLM process that shares kvtierd")
