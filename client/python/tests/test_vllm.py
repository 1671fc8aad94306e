"""kvtier.vllm driven the way vLLM's TieringOffloadingSpec drives a
secondary tier, across processes, against a private kvtierd.

Each vLLM scheduler is a child process (this file run as a script) with a
stand-in vllm package on its path: engines/vllm_c (the LookupResult API:
TransferJob with chunk_ids, get_finished_jobs, drain_jobs) or
engines/vllm_b (the older bool | None API: JobMetadata with block_ids,
get_finished).  The child makes the primary CPU tier as vLLM's
SharedOffloadRegion does (a file /dev/shm/vllm_offload_<engine id>.mmap,
mapped MAP_SHARED, viewed as a 2-D int8 memoryview (blocks, row bytes)),
loads the tier as SecondaryTierFactory does for a "module_path" entry
(import, getattr(module, type), issubclass(SecondaryTierManager), then
cls(offloading_spec=, primary_kv_view=, tier_type=, **the other keys)),
and calls it as the tiering manager does: submits, lookups, polling for
finished jobs, all from one thread.  numpy is required."""

import importlib
import json
import mmap
import os
import subprocess
import sys
import time
import types
import unittest
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROW = 64 * 1024  # bytes of one block row (a multiple of the page size)
BLOCKS = 32


def block_hash(seed, i):
    import hashlib
    return hashlib.sha256(b"%d/%d" % (seed, i)).digest()


class Primary:
    """vLLM's primary CPU tier for one engine: the /dev/shm file, its
    mapping, and the view secondary tiers get."""

    def __init__(self, blocks=BLOCKS, row=ROW):
        self.engine_id = "kvtier-test-" + uuid.uuid4().hex[:12]
        self.path = "/dev/shm/vllm_offload_%s.mmap" % self.engine_id
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, blocks * row)
            self.mm = mmap.mmap(fd, blocks * row, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.rows = np.frombuffer(self.mm, dtype=np.int8).reshape(blocks, row)
        self.view = memoryview(self.rows)  # 2-D, format 'b', C-contiguous

    def fill(self, b, seed):
        rng = np.random.default_rng(seed)
        self.rows[b] = rng.integers(-128, 128, size=self.rows.shape[1],
                                    dtype=np.int8)

    def same(self, b, seed):
        rng = np.random.default_rng(seed)
        return bool(np.array_equal(self.rows[b], rng.integers(
            -128, 128, size=self.rows.shape[1], dtype=np.int8)))

    def cleanup(self):
        os.unlink(self.path)


def offloading_spec(primary):
    """The attributes of vLLM's OffloadingSpec the tier may read."""
    ns = types.SimpleNamespace
    vllm_config = ns(
        model_config=ns(model="meta-llama/Llama-3.1-8B-Instruct",
                        served_model_name=None, dtype="torch.bfloat16"),
        cache_config=ns(cache_dtype="auto", block_size=16),
        parallel_config=ns(tensor_parallel_size=2, pipeline_parallel_size=1))
    return ns(vllm_config=vllm_config, extra_config={"block_size": 64},
              _engine_id=primary.engine_id,
              _scheduler_mmap=ns(mmap_path=primary.path))


def create_tier(primary, tier_config):
    """SecondaryTierFactory.create_secondary_tier for a module_path entry."""
    from vllm.v1.kv_offload.tiering.base import SecondaryTierManager
    mod = importlib.import_module(tier_config["module_path"])
    cls = getattr(mod, tier_config["type"])
    assert issubclass(cls, SecondaryTierManager), cls.__mro__
    cls.build_metric_definitions(dict(tier_config))
    config = dict(tier_config)
    tier_type = config.pop("type")
    config.pop("module_path", None)
    return cls(offloading_spec=offloading_spec(primary),
               primary_kv_view=primary.view, tier_type=tier_type, **config)


class Api:
    """The calls of one tiering API generation."""

    def __init__(self):
        from vllm.v1.kv_offload import base as ob
        from vllm.v1.kv_offload.tiering import base as tb
        self.ob, self.tb = ob, tb
        self.new = hasattr(tb, "TransferJob")

    def job(self, job_id, keys, ids, promotion=False):
        ctx = self.ob.ReqContext(req_id="req-%d" % job_id)
        ids = np.asarray(ids, dtype=np.int64)
        if self.new:
            return self.tb.TransferJob(job_id=job_id, keys=keys,
                                       chunk_ids=ids, is_promotion=promotion,
                                       req_context=ctx)
        return self.tb.JobMetadata(job_id=job_id, keys=keys, block_ids=ids,
                                   is_promotion=promotion, req_context=ctx)

    def finished(self, tier):
        return list(tier.get_finished_jobs() if self.new
                    else tier.get_finished())

    def lookup(self, tier, key):
        """"hit", "miss" or "retry", whichever generation answered."""
        r = tier.lookup(key, self.ob.ReqContext(req_id="lookup"))
        if self.new:
            assert isinstance(r, self.ob.LookupResult), r
            return {"HIT": "hit", "MISS": "miss", "RETRY": "retry"}[r.name]
        assert r is None or isinstance(r, bool), r
        return {True: "hit", False: "miss", None: "retry"}[r]

    def key(self, seed, i):
        return self.ob.make_offload_key(block_hash(seed, i), 0)


def wait_jobs(api, tier, ids, timeout=60):
    """Polls as the scheduler does (every step) until ids finished."""
    got = {}
    deadline = time.monotonic() + timeout
    while set(ids) - set(got):
        for r in api.finished(tier):
            got[r.job_id] = r
        assert time.monotonic() < deadline, "jobs %s unfinished" % ids
        time.sleep(0.001)
    return got


def tier_config(sock, **extra):
    c = {"type": "KvtierSecondaryTier", "module_path": "kvtier.vllm",
         "socket": sock}
    c.update(extra)
    return c


def child_store(a):
    """An instance stores blocks 0..n-1 (at scattered rows) to the tier."""
    api = Api()
    p = Primary()
    try:
        tier = create_tier(p, tier_config(a["socket"]))
        n = a["n"]
        keys = [api.key(a["seed"], i) for i in range(n)]
        rows = [(7 * i + 3) % BLOCKS for i in range(n)]
        for i, r in enumerate(rows):
            p.fill(r, a["seed"] * 1000 + i)
        before = [api.lookup(tier, k) for k in keys]
        tier.submit_store(api.job(1, keys, rows))
        during = api.lookup(tier, keys[0])
        pending = tier.has_pending_work() if hasattr(
            tier, "has_pending_work") else None
        res = wait_jobs(api, tier, [1])[1]
        after = [api.lookup(tier, k) for k in keys]
        out = {"before": before, "during": during, "pending": pending,
               "success": res.success, "after": after, "ns": tier.namespace}
        tier.shutdown()
        return out
    finally:
        p.cleanup()


def child_load(a):
    """Another instance (its own primary file): lookups, then loads into
    other rows; RETRY while the load is in flight; identical bytes."""
    api = Api()
    p = Primary()
    try:
        tier = create_tier(p, tier_config(a["socket"]))
        n = a["n"]
        keys = [api.key(a["seed"], i) for i in range(n)]
        rows = [BLOCKS - 1 - i for i in range(n)]
        out = {"lookup": [api.lookup(tier, k) for k in keys],
               "unknown": api.lookup(tier, api.key(99999, 0))}
        tier.submit_load(api.job(7, keys, rows))
        # Not collected yet: in transfer, whether or not the bytes landed.
        out["in_flight"] = [api.lookup(tier, k) for k in keys]
        out["pending"] = tier.has_pending_work() if hasattr(
            tier, "has_pending_work") else None
        res = wait_jobs(api, tier, [7])[7]
        out["success"] = res.success
        out["same"] = [p.same(r, a["seed"] * 1000 + i)
                       for i, r in enumerate(rows)]
        out["after"] = api.lookup(tier, keys[0])
        # A job of two rows per key (adjacent rows make one segment), then
        # read back; and a load that misses fails (a promotion names the
        # keys that made it, where the API has successful_keys).
        two = [api.key(a["seed"] + 1, i) for i in range(2)]
        p.fill(0, 11)
        p.fill(1, 12)
        p.fill(2, 13)
        p.fill(3, 14)
        tier.submit_store(api.job(8, two, [0, 1, 2, 3]))
        out["two_rows"] = wait_jobs(api, tier, [8])[8].success
        p.rows[4:8] = 0
        tier.submit_load(api.job(9, two, [4, 5, 6, 7]))
        out["two_rows_back"] = wait_jobs(api, tier, [9])[9].success and \
            all(p.same(4 + i, 11 + i) for i in range(4))
        miss = [keys[0], api.key(99999, 1)]
        tier.submit_load(api.job(10, miss, [8, 9], promotion=True))
        r = wait_jobs(api, tier, [10])[10]
        out["miss_success"] = r.success
        good = getattr(r, "successful_keys", None)
        out["miss_good"] = None if good is None else \
            [bytes(k) == bytes(keys[0]) for k in good]
        if hasattr(tier, "drain_jobs") and api.new:
            tier.submit_load(api.job(11, keys[:2], [10, 11]))
            tier.drain_jobs()
            out["drained"] = [(r.job_id, r.success)
                              for r in api.finished(tier)]
        tier.shutdown()
        return out
    finally:
        p.cleanup()


def child_hashseed(a):
    """Two tiers in one process: the PYTHONHASHSEED warning comes once."""
    p = Primary()
    try:
        for _ in range(2):
            tier = create_tier(p, tier_config(a["socket"]))
            tier.shutdown()
        return {}
    finally:
        p.cleanup()


def child_errors(a):
    """Misconfigurations fail at construction, loudly."""
    p = Primary()
    out = {}
    try:
        try:
            create_tier(p, tier_config(a["socket"], shm_path="/dev/null"))
            out["wrong_path"] = "no error"
        except ValueError as e:
            out["wrong_path"] = str(e)
        try:
            create_tier(p, tier_config(a["socket"] + ".absent"))
            out["no_daemon"] = "no error"
        except Exception as e:
            out["no_daemon"] = type(e).__name__
        return out
    finally:
        p.cleanup()


def child_outage(a):
    """A tier that lives through a daemon restart: while kvtierd is down,
    lookups miss and jobs fail (nothing raises, nothing blocks); once it
    is back (on the same data directory) the same tier reconnects and
    loads what it stored before (spilled to L3 on SIGTERM)."""
    api = Api()
    p = Primary()
    try:
        tier = create_tier(p, tier_config(a["socket"]))
        keys = [api.key(777, i) for i in range(4)]
        for i in range(4):
            p.fill(i, 7770 + i)
        tier.submit_store(api.job(1, keys, [0, 1, 2, 3]))
        assert wait_jobs(api, tier, [1])[1].success
        print("stored", flush=True)
        sys.stdin.readline()  # the parent stopped kvtierd
        out = {"down_lookup": api.lookup(tier, keys[0])}
        tier.submit_load(api.job(2, keys, [4, 5, 6, 7]))
        out["down_load"] = wait_jobs(api, tier, [2])[2].success
        tier.submit_store(api.job(3, keys, [0, 1, 2, 3]))
        out["down_store"] = wait_jobs(api, tier, [3])[3].success
        print("tried", flush=True)
        sys.stdin.readline()  # the parent started kvtierd again
        out["up_lookup"] = [api.lookup(tier, k) for k in keys]
        p.rows[8:12] = 0
        tier.submit_load(api.job(4, keys, [8, 9, 10, 11]))
        out["up_load"] = wait_jobs(api, tier, [4])[4].success
        out["same"] = [p.same(8 + i, 7770 + i) for i in range(4)]
        tier.shutdown()
        return out
    finally:
        p.cleanup()


CHILDREN = {"store": child_store, "load": child_load,
            "hashseed": child_hashseed, "errors": child_errors,
            "outage": child_outage}


def child_main():
    sys.path.insert(0, os.path.join(HERE, "engines", sys.argv[1]))
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))
    print(json.dumps(out), flush=True)


# --- the tests ----------------------------------------------------------------

class VLLMTest(unittest.TestCase):
    api = None  # "vllm_c" or "vllm_b"

    @classmethod
    def setUpClass(cls):
        from kvtd import Daemon
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def run_child(self, name, env=None, **args):
        e = dict(os.environ)
        e.setdefault("PYTHONHASHSEED", "0")
        e.update(env or {})
        e = {k: v for k, v in e.items() if v is not None}
        args["socket"] = self.d.socket
        r = subprocess.run([sys.executable, os.path.abspath(__file__),
                            "child", self.api, name, json.dumps(args)],
                           capture_output=True, text=True, timeout=120, env=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr

    def traffic(self):
        import kvtier
        with kvtier.Client(self.d.socket) as c:
            s = c.stats()
        return (s["regions"]["copied_in_bytes"] +
                s["regions"]["copied_out_bytes"],
                s["bytes_in"] + s["bytes_out"])

    def test_store_then_another_instance_loads(self):
        """Rows move between the primary tier's file and the daemon as
        registered memory; the sockets carry keys and segments only."""
        seed = 100 + len(self.api)
        copied0, sock0 = self.traffic()
        s, _ = self.run_child("store", n=12, seed=seed)
        self.assertEqual(s["before"], ["miss"] * 12)
        self.assertEqual(s["during"], "retry")
        if s["pending"] is not None:
            self.assertTrue(s["pending"])
        self.assertTrue(s["success"])
        self.assertEqual(s["after"], ["hit"] * 12)
        self.assertIn("/tp2/", s["ns"])
        self.assertTrue(s["ns"].endswith("/b64/r%d" % ROW), s["ns"])
        g, _ = self.run_child("load", n=12, seed=seed)
        self.assertEqual(g["lookup"], ["hit"] * 12)
        self.assertEqual(g["unknown"], "miss")
        self.assertEqual(g["in_flight"], ["retry"] * 12)
        if g["pending"] is not None:
            self.assertTrue(g["pending"])
        self.assertTrue(g["success"])
        self.assertEqual(g["same"], [True] * 12)
        self.assertEqual(g["after"], "hit")
        self.assertTrue(g["two_rows"])
        self.assertTrue(g["two_rows_back"])
        copied, sock = self.traffic()
        self.assertGreaterEqual(copied - copied0, 2 * 12 * ROW)
        self.assertLess(sock - sock0, 12 * ROW // 4, "rows crossed the socket")
        self.assertFalse(g["miss_success"])
        if self.api == "vllm_c":
            self.assertEqual(g["miss_good"], [True])
            self.assertEqual(g["drained"], [[11, True]])
        else:
            self.assertIsNone(g["miss_good"])

    def test_pythonhashseed_warning(self):
        _, err = self.run_child("hashseed", env={"PYTHONHASHSEED": None})
        self.assertEqual(err.count("PYTHONHASHSEED is not set"), 1, err)
        _, err = self.run_child("hashseed", env={"PYTHONHASHSEED": "0"})
        self.assertNotIn("PYTHONHASHSEED", err)

    def test_daemon_outage_and_restart(self):
        e = dict(os.environ, PYTHONHASHSEED="0")
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                              "child", self.api, "outage",
                              json.dumps({"socket": self.d.socket})],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=e)
        try:
            self.assertEqual(p.stdout.readline().strip(), "stored")
            self.d.pause()
            try:
                p.stdin.write("\n")
                p.stdin.flush()
                self.assertEqual(p.stdout.readline().strip(), "tried")
            finally:
                self.d.resume()
            p.stdin.write("\n")
            p.stdin.flush()
            out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        r = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(r["down_lookup"], "miss")
        self.assertFalse(r["down_load"])
        self.assertFalse(r["down_store"])
        self.assertEqual(r["up_lookup"], ["hit"] * 4, err)
        self.assertTrue(r["up_load"])
        self.assertEqual(r["same"], [True] * 4)

    def test_errors(self):
        r, _ = self.run_child("errors")
        self.assertIn("is not the file", r["wrong_path"])
        self.assertEqual(r["no_daemon"], "DaemonUnreachable")


class VLLMLookupResultTest(VLLMTest):
    """The API of vLLM 0.25 and later (LookupResult, TransferJob)."""
    api = "vllm_c"


class VLLMBoolTest(VLLMTest):
    """The older API (bool | None, JobMetadata, get_finished)."""
    api = "vllm_b"


del VLLMTest  # only its two subclasses run

if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "child":
        sys.argv.pop(1)
        child_main()
    else:
        unittest.main()
