"""kvtier.lmcache driven the way LMCache's multi-process server drives a
"native_plugin" L2 client, across processes, against a private kvtierd.

LMCache's factory builds the client as cls(**adapter_params) and checks
that it has the six callables; its NativeConnectorL2Adapter then submits
batches under a lock of its own from its store and prefetch threads,
records the future id each submit returns, and runs a demux thread that
poll()s event_fd() (never reading it) and calls drain_completions().
Values are whole chunks held in LMCache's L1 arena, reached as writable
byte memoryviews (ctypes-backed).  Keys are LMCache's
"model@kv_rank@group@chunk_hash" strings.  No lmcache module is needed
(the plugin imports none).  numpy is not needed either."""

import ctypes
import hashlib
import importlib
import json
import mmap
import os
import select
import subprocess
import sys
import threading
import time
import unittest

CHUNK = (1 << 20) + 4096  # bytes of one chunk's KV in these tests
PLUGIN = {"type": "native_plugin", "module_path": "kvtier.lmcache",
          "class_name": "KvtierL2Client", "max_capacity_gb": 0}
CALLABLES = ("event_fd", "submit_batch_get", "submit_batch_set",
             "submit_batch_exists", "drain_completions", "close")


def make_client(config):
    """LMCache's native_plugin factory: import, build by keywords, check."""
    cls = getattr(importlib.import_module(config["module_path"]),
                  config["class_name"])
    client = cls(**config.get("adapter_params", {}))
    missing = [m for m in CALLABLES if not callable(getattr(client, m, None))]
    if missing:
        client.close()
        raise TypeError("missing %s" % missing)
    assert callable(getattr(client, "submit_batch_delete", None))
    return client


class Adapter:
    """What NativeConnectorL2Adapter does with the client."""

    def __init__(self, client):
        self.c = client
        self.lock = threading.Lock()
        self.cv = threading.Condition()
        self.results = {}
        self.unknown = []
        self.empty_wakeups = 0
        self.stop = False
        self.t = threading.Thread(target=self.demux, daemon=True)
        self.t.start()

    def demux(self):
        p = select.poll()
        p.register(self.c.event_fd(), select.POLLIN)
        while not self.stop:
            if not p.poll(500):
                continue
            done = self.c.drain_completions()
            with self.cv:
                if not done:
                    self.empty_wakeups += 1
                for fid, ok, err, per_key in done:
                    if fid in self.results:
                        self.unknown.append(fid)
                    self.results[fid] = (ok, err, per_key)
                self.cv.notify_all()

    def submit(self, name, *args):
        with self.lock:
            return getattr(self.c, name)(*args)

    def wait(self, fid, timeout=60):
        with self.cv:
            deadline = time.monotonic() + timeout
            while fid not in self.results:
                left = deadline - time.monotonic()
                assert left > 0, "future %d never completed" % fid
                self.cv.wait(left)
            return self.results[fid]

    def run(self, name, *args):
        return self.wait(self.submit(name, *args))

    def close(self):
        self.stop = True
        self.t.join()
        self.c.close()


class Arena:
    """LMCache's L1 memory: one anonymous mapping, objects as ctypes-backed
    writable byte views."""

    def __init__(self, nbytes):
        self.mm = mmap.mmap(-1, nbytes)
        self.next = 0

    def obj(self, nbytes):
        off = self.next
        self.next += -(-nbytes // 4096) * 4096
        return memoryview((ctypes.c_uint8 * nbytes).from_buffer(
            self.mm, off)).cast("B")


def key(rank, chunk):
    h = hashlib.sha256(b"chunk %d" % chunk).hexdigest()
    return "meta-llama/Llama-3.1-8B@%08x@%x@%s" % (rank, 0, h)


def content(i, n=CHUNK):
    return (hashlib.sha256(b"%d" % i).digest() * (n // 32 + 1))[:n]


def plugin(sock, **params):
    c = dict(PLUGIN)
    c["adapter_params"] = dict({"socket": sock, "namespace": "lmcache-test",
                                "staging_size": "3M"}, **params)
    return c


def child_set(a):
    """An LMCache server stores chunks from two threads at once (staging
    holds two chunks: the batches move in parts)."""
    ad = Adapter(make_client(plugin(a["socket"])))
    arena = Arena(a["n"] * (CHUNK + 4096))
    views = []
    for i in range(a["n"]):
        v = arena.obj(CHUNK)
        v[:] = content(a["seed"] + i)
        views.append(v)
    keys = [key(0, a["seed"] + i) for i in range(a["n"])]
    half = a["n"] // 2
    out = {}

    def store(lo, hi, name):
        out[name] = ad.run("submit_batch_set", keys[lo:hi], views[lo:hi])
    ts = [threading.Thread(target=store, args=(0, half, "a")),
          threading.Thread(target=store, args=(half, a["n"], "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    probe = [keys[0], key(0, 10 ** 6), keys[1], keys[2], key(0, 10 ** 6 + 1),
             keys[-1]]
    out["exists"] = ad.run("submit_batch_exists", probe)
    out["empty"] = ad.run("submit_batch_exists", [])
    out["unknown"] = ad.unknown
    out["empty_wakeups"] = ad.empty_wakeups
    ad.close()
    return out


def child_get(a):
    """Another LMCache server loads them into its own L1: identical bytes;
    a missing key, a view of the wrong size and a value larger than staging
    fail only their own keys; delete, then exists."""
    ad = Adapter(make_client(plugin(a["socket"])))
    n = a["n"]
    arena = Arena((n + 4) * (CHUNK + 4096) + (4 << 20))
    keys = [key(0, a["seed"] + i) for i in range(n)]
    views = [arena.obj(CHUNK) for _ in range(n)]
    ok, err, per_key = ad.run("submit_batch_get", keys + [key(0, 10 ** 6)],
                              views + [arena.obj(CHUNK)])
    out = {"ok": ok, "per_key": per_key,
           "same": [bytes(v) == content(a["seed"] + i)
                    for i, v in enumerate(views)]}
    small = arena.obj(CHUNK - 4096)
    out["wrong_size"] = ad.run("submit_batch_get", [keys[0]], [small])[2]
    big = arena.obj(4 << 20)
    big[:] = b"\x01" * (4 << 20)
    out["too_big"] = ad.run("submit_batch_set", [key(1, 1)], [big])
    out["delete"] = ad.run("submit_batch_delete", [keys[0], key(0, 10 ** 6)])
    out["exists_after"] = ad.run("submit_batch_exists", keys[:2])[2]
    out["unknown"] = ad.unknown
    out["empty_wakeups"] = ad.empty_wakeups
    ad.close()
    return out


def child_eventfd(a):
    """event_fd() is readable exactly while completions wait."""
    c = make_client(plugin(a["socket"]))
    fd = c.event_fd()

    def readable(t):
        return bool(select.select([fd], [], [], t)[0])
    out = {"idle": readable(0), "drain_idle": c.drain_completions()}
    fid = c.submit_batch_exists([key(0, 1)])
    out["after_submit"] = readable(10)
    out["still"] = readable(0)  # nobody read it: still readable
    done = c.drain_completions()
    out["drained"] = [d[0] == fid for d in done]
    out["after_drain"] = readable(0)
    arena = Arena(4 * (CHUNK + 4096))
    vs = [arena.obj(CHUNK) for _ in range(3)]
    ids = [c.submit_batch_set([key(2, i)], [vs[i]]) for i in range(3)]
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        if readable(1):
            got += [d[0] for d in c.drain_completions()]
    out["three"] = sorted(got) == sorted(ids)
    out["end"] = readable(0)
    c.close()
    try:
        c.submit_batch_exists([key(0, 1)])
        out["after_close"] = "no error"
    except RuntimeError:
        out["after_close"] = "RuntimeError"
    try:
        make_client(plugin(a["socket"], colour="blue"))
        out["bad_param"] = "no error"
    except TypeError:
        out["bad_param"] = "TypeError"
    return out


def child_threads(a):
    """Four threads submit gets, sets and exists at once, as LMCache's two
    controllers and a busy server would; every future completes once."""
    ad = Adapter(make_client(plugin(a["socket"], staging_size="8M")))
    errors = []

    def worker(w):
        arena = Arena(6 * 4 * (CHUNK // 8 + 4096))
        try:
            for r in range(6):
                ks = [key(10 + w, r * 4 + j) for j in range(4)]
                vs = [arena.obj(CHUNK // 8) for _ in range(2)]
                vs[0][:] = content(w * 100 + r, CHUNK // 8)
                vs[1][:] = content(w * 100 + r + 50, CHUNK // 8)
                ok = ad.run("submit_batch_set", ks[:2], vs)
                if not ok[0]:
                    errors.append(("set", ok))
                e = ad.run("submit_batch_exists", ks)[2]
                if e != [True, True, False, False]:
                    errors.append(("exists", e))
                back = [arena.obj(CHUNK // 8) for _ in range(2)]
                g = ad.run("submit_batch_get", ks[:2], back)
                if g[2] != [True, True] or bytes(back[0]) != bytes(vs[0]) or \
                        bytes(back[1]) != bytes(vs[1]):
                    errors.append(("get", g[:2]))
        except Exception as e:
            errors.append(repr(e))
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out = {"errors": errors, "unknown": ad.unknown,
           "futures": len(ad.results), "empty_wakeups": ad.empty_wakeups}
    ad.close()
    return out


def child_outage(a):
    """A client that lives through a daemon restart: while kvtierd is down
    its futures fail (they still complete) and its threads stay idle (no
    busy loop on a dead connection); once kvtierd is back on the same data
    directory, the same client reconnects and gets what it stored before
    (spilled to L3 on SIGTERM)."""
    import resource
    ad = Adapter(make_client(plugin(a["socket"])))
    arena = Arena(8 * (CHUNK + 4096))
    keys = [key(5, i) for i in range(2)]
    vs = [arena.obj(CHUNK) for _ in range(2)]
    for i, v in enumerate(vs):
        v[:] = content(500 + i)
    assert ad.run("submit_batch_set", keys, vs)[0]
    print("stored", flush=True)
    sys.stdin.readline()  # the parent stopped kvtierd
    out = {"down_exists": ad.run("submit_batch_exists", keys)[0]}
    back = [arena.obj(CHUNK) for _ in range(2)]
    out["down_get"] = ad.run("submit_batch_get", keys, back)[2]
    out["down_set"] = ad.run("submit_batch_set", keys, vs)[0]
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(1.5)
    cpu2 = resource.getrusage(resource.RUSAGE_SELF)
    out["idle_cpu_s"] = (cpu2.ru_utime - cpu.ru_utime +
                         cpu2.ru_stime - cpu.ru_stime)
    print("tried", flush=True)
    sys.stdin.readline()  # the parent started kvtierd again
    out["up_exists"] = ad.run("submit_batch_exists", keys)[2]
    ok, err, per_key = ad.run("submit_batch_get", keys, back)
    out["up_get"] = [ok, per_key]
    out["same"] = [bytes(b) == content(500 + i) for i, b in enumerate(back)]
    ad.close()
    return out


CHILDREN = {"set": child_set, "get": child_get, "eventfd": child_eventfd,
            "threads": child_threads, "outage": child_outage}


def child_main():
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = CHILDREN[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(out), flush=True)


class LMCacheTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from kvtd import Daemon
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def run_child(self, name, **args):
        args["socket"] = self.d.socket
        r = subprocess.run([sys.executable, os.path.abspath(__file__),
                            "child", name, json.dumps(args)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr

    def traffic(self):
        import kvtier
        with kvtier.Client(self.d.socket) as c:
            s = c.stats()
        return (s["regions"]["copied_in_bytes"] +
                s["regions"]["copied_out_bytes"],
                s["bytes_in"] + s["bytes_out"])

    def test_set_then_another_server_gets(self):
        """Chunks move through the adapter's registered staging memory, not
        the socket."""
        copied0, sock0 = self.traffic()
        s, _ = self.run_child("set", n=6, seed=10)
        self.assertEqual(s["a"], [True, "", [True] * 3])
        self.assertEqual(s["b"], [True, "", [True] * 3])
        self.assertEqual(s["exists"], [True, "", [True, False, True, True,
                                                  False, True]])
        self.assertEqual(s["empty"], [True, "", []])
        self.assertEqual((s["unknown"], s["empty_wakeups"]), ([], 0))
        g, _ = self.run_child("get", n=6, seed=10)
        self.assertTrue(g["ok"])
        self.assertEqual(g["per_key"], [True] * 6 + [False])
        self.assertEqual(g["same"], [True] * 6)
        self.assertEqual(g["wrong_size"], [False])
        ok, err, per_key = g["too_big"]
        self.assertEqual((ok, per_key), (False, [False]))
        self.assertIn("staging_size", err)
        self.assertEqual(g["delete"], [True, "", [True, False]])
        self.assertEqual(g["exists_after"], [False, True])
        self.assertEqual((g["unknown"], g["empty_wakeups"]), ([], 0))
        copied, sock = self.traffic()
        self.assertGreaterEqual(copied - copied0, 2 * 6 * CHUNK)
        self.assertLess(sock - sock0, CHUNK, "chunks crossed the socket")

    def test_event_fd(self):
        r, _ = self.run_child("eventfd")
        self.assertEqual((r["idle"], r["drain_idle"]), (False, []))
        self.assertTrue(r["after_submit"])
        self.assertTrue(r["still"])
        self.assertEqual(r["drained"], [True])
        self.assertFalse(r["after_drain"])
        self.assertTrue(r["three"])
        self.assertFalse(r["end"])
        self.assertEqual(r["after_close"], "RuntimeError")
        self.assertEqual(r["bad_param"], "TypeError")

    def test_daemon_outage_and_restart(self):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                              "child", "outage",
                              json.dumps({"socket": self.d.socket})],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
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
        self.assertFalse(r["down_exists"])
        self.assertEqual(r["down_get"], [False, False])
        self.assertFalse(r["down_set"])
        self.assertLess(r["idle_cpu_s"], 0.5, "busy loop while kvtierd is down")
        self.assertEqual(r["up_exists"], [True, True], err)
        self.assertEqual(r["up_get"], [True, [True, True]])
        self.assertEqual(r["same"], [True, True])

    def test_threads(self):
        r, _ = self.run_child("threads")
        self.assertEqual(r["errors"], [])
        self.assertEqual(r["unknown"], [])
        self.assertEqual(r["futures"], 4 * 6 * 3)
        self.assertEqual(r["empty_wakeups"], 0)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        sys.argv.pop(1)
        child_main()
    else:
        unittest.main()
