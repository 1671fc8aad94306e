"""A kvtier.Client misused, or answered unusually, fails loudly with the
right exception (issue #17):

- break 5: in a child after fork() every call raises ClientForked (it used
  to send on the parent's socket and could return another key's value);
  the parent's connection is not disturbed; the child's own Client works;
- break 9: a call while another thread is in one raises ConcurrentUse at
  once (it used to share the socket: wrong replies, recv() for ever), and
  every failure's message is its own call's (they used to come out torn);
- a daemon answer with an errno code (a DROP that failed with ENOSPC)
  leaves the connection usable and raises ServerError, not
  ConnectionClosed; every code of kvtier_errors.h has its exception.

Standard library only.  Calls are held in progress deterministically by
stopping the daemon (SIGSTOP) while a thread waits for its reply."""

import json
import multiprocessing
import os
import re
import signal
import socket
import struct
import tempfile
import threading
import time
import unittest

import kvtier
from kvtd import ROOT, Daemon

NS = "misuse"


def value(i, size=4096):
    return bytes((i * 131 + j * 7) & 0xff for j in range(size))


class _Held:
    """A call on client held in progress in a thread: the daemon is stopped
    while it waits for the reply, and continued on release()."""

    def __init__(self, daemon, client):
        self.d = daemon
        self.result = None
        started = threading.Event()

        def run():
            started.set()
            try:
                self.result = client.exists(b"held", ns=NS)
            except Exception as e:  # reported by the test
                self.result = e

        os.kill(daemon.proc.pid, signal.SIGSTOP)
        self.t = threading.Thread(target=run, daemon=True)
        self.t.start()
        started.wait(5)
        time.sleep(0.2)  # from started to waiting in recv(): microseconds

    def release(self):
        os.kill(self.d.proc.pid, signal.SIGCONT)
        self.t.join(10)
        return not self.t.is_alive()


def _in_thread(fn, timeout=3.0):
    """fn() in another thread: ("ok", result), ("raised", exc) or
    ("hung", None) if it did not return within timeout seconds."""
    out = []

    def run():
        try:
            out.append(("ok", fn()))
        except Exception as e:
            out.append(("raised", e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ("hung", None)


class ForkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        os.kill(cls.d.proc.pid, signal.SIGCONT)
        cls.d.stop()

    def _fork(self, child):
        """Runs child() in a forked process; returns what it reported."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            signal.alarm(10)  # a hang is reported, not waited for
            try:
                out = child()
            except BaseException as e:
                out = {"crashed": repr(e)}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, st = os.waitpid(pid, 0)
        if not data:
            hung = os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGALRM
            return {"crashed": "the child hung (killed by its alarm)"
                    if hung else "no report, wait status %d" % st}
        return json.loads(data)

    @staticmethod
    def _try(fn):
        """What a call did: its result, or the exception's class and text."""
        try:
            v = fn()
            return {"returned": repr(v)[:60]}
        except kvtier.Error as e:
            return {"raised": type(e).__name__, "message": e.message,
                    "code": e.code,
                    "closed": isinstance(e, kvtier.ConnectionClosed)}

    def test_child_gets_client_forked(self):
        c = kvtier.Client(self.d.socket)
        keys = [("fork-%d" % i).encode() for i in range(8)]
        for i, k in enumerate(keys):
            c.put(k, value(i), ns=NS)

        def child():
            out = {"get": self._try(lambda: c.get(keys[0], ns=NS)),
                   "mget": self._try(lambda: c.mget(keys, ns=NS)),
                   "stats": self._try(c.stats)}
            c.close()  # the child's copy only
            with kvtier.Client(self.d.socket) as own:
                out["own"] = [own.get(k, ns=NS) == value(i)
                              for i, k in enumerate(keys)]
                own.put(b"from-child", value(99), ns=NS)
            return out

        out = self._fork(child)
        self.assertNotIn("crashed", out)
        for call in ("get", "mget", "stats"):
            seen = out[call]
            self.assertEqual(seen.get("raised"), "ClientForked",
                             "%s in the child: %r" % (call, seen))
            self.assertEqual(seen["code"], kvtier.EFORKED)
            self.assertTrue(seen["closed"])  # reconnect logic applies
            self.assertIn("fork", seen["message"])
            self.assertIn("new Client in the child", seen["message"])
        self.assertEqual(out["own"], [True] * len(keys))
        # The parent's connection noticed nothing.
        for i, k in enumerate(keys):
            self.assertEqual(c.get(k, ns=NS), value(i))
        self.assertEqual(c.get(b"from-child", ns=NS), value(99))
        c.close()

    def test_multiprocessing_fork_worker(self):
        c = kvtier.Client(self.d.socket)
        c.put(b"mp", value(5), ns=NS)
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()

        def worker():
            try:
                c.get(b"mp", ns=NS)
                q.put("returned data")
            except kvtier.ClientForked:
                q.put("ClientForked")
            except Exception as e:
                q.put("%s: %s" % (type(e).__name__, e))

        p = ctx.Process(target=worker)
        p.start()
        got = q.get(timeout=20)
        p.join(20)
        self.assertEqual(got, "ClientForked")
        self.assertEqual(c.get(b"mp", ns=NS), value(5))
        c.close()

    def test_fork_while_another_thread_is_in_a_call(self):
        # The child's copy of the Client's lock is held by a thread that
        # does not exist there: still ClientForked, at once.
        c = kvtier.Client(self.d.socket)
        held = _Held(self.d, c)
        try:
            out = self._fork(lambda: self._try(lambda: c.get(b"x", ns=NS)))
        finally:
            self.assertTrue(held.release())
        self.assertEqual(out.get("raised"), "ClientForked", out)
        self.assertIs(held.result, False)
        self.assertIsNone(c.get(b"x", ns=NS))
        c.close()


class ThreadsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        os.kill(cls.d.proc.pid, signal.SIGCONT)
        cls.d.stop()

    def test_second_thread_refused_at_once(self):
        c = kvtier.Client(self.d.socket)
        c.put(b"k", b"v", ns=NS)
        held = _Held(self.d, c)
        try:
            results = [_in_thread(lambda: c.get(b"k", ns=NS)),
                       _in_thread(lambda: c.mget([b"k"], ns=NS)),
                       _in_thread(c.close),
                       _in_thread(lambda: c.shared_memory)]
        finally:
            self.assertTrue(held.release())
        for what, r in zip(("get", "mget", "close", "shared_memory"),
                           results):
            self.assertEqual(r[0], "raised", "%s: %r" % (what, r))
            self.assertIsInstance(r[1], kvtier.ConcurrentUse, what)
            self.assertIsInstance(r[1], RuntimeError)
            self.assertEqual(r[1].code, kvtier.ECONCURRENT)
            self.assertRegex(str(r[1]), "another thread")
        # The call in progress, and the Client, are unharmed.
        self.assertIs(held.result, False)
        self.assertFalse(c.closed)
        self.assertEqual(c.get(b"k", ns=NS), b"v")
        c.close()

    def test_messages_are_per_call(self):
        c = kvtier.Client(self.d.socket)
        calls = {"key": lambda: c.get(b"k" * 5000, ns=NS),
                 "ns": lambda: c.get(b"k", ns="n" * 300)}
        alone = {}
        for name, fn in calls.items():
            with self.assertRaises(kvtier.Error) as cm:
                fn()
            alone[name] = (type(cm.exception), str(cm.exception))
        seen = {"own": 0, "refused": 0, "other": []}
        barrier = threading.Barrier(2)

        def hammer(name):
            barrier.wait()
            for _ in range(3000):
                try:
                    calls[name]()
                except kvtier.ConcurrentUse:
                    seen["refused"] += 1
                except kvtier.Error as e:
                    if (type(e), str(e)) == alone[name]:
                        seen["own"] += 1
                    else:
                        seen["other"].append("%s: %s" % (type(e).__name__,
                                                         e))

        ts = [threading.Thread(target=hammer, args=(n,), daemon=True)
              for n in calls]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in ts), "a thread hung")
        self.assertEqual(seen["other"][:3], [],
                         "%d torn or foreign messages" % len(seen["other"]))
        self.assertEqual(seen["own"] + seen["refused"], 6000)
        c.close()


class FakeDaemon:
    """A socket that speaks just enough of the protocol: HELLO, then each
    request's answer from script[opcode] (a list of (status, body), used in
    turn, the last one repeated); an answer None closes the connection,
    request_id "0" answers with request id 0."""

    HDR = struct.Struct("<4sBBHQII")

    def __init__(self, script):
        self.script = {op: list(a) for op, a in script.items()}
        self.dir = tempfile.mkdtemp(prefix="kvtier-fake-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(4)
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _recv(self, s, n):
        b = b""
        while len(b) < n:
            got = s.recv(n - len(b))
            if not got:
                raise EOFError
            b += got
        return b

    def _serve(self):
        try:
            s, _ = self.srv.accept()
        except OSError:
            return
        with s:
            try:
                while True:
                    magic, ver, op, flags, rid, st, blen = self.HDR.unpack(
                        self._recv(s, self.HDR.size))
                    self._recv(s, blen)
                    if op == 1:  # HELLO: no shared memory
                        body = struct.pack("<IIIIQQ", 1, 0, 1024, 255,
                                           1 << 20, (1 << 20) + 4096)
                        ans = (0, body)
                    else:
                        a = self.script.get(op, [(1005, b"unknown")])
                        ans = a.pop(0) if len(a) > 1 else a[0]
                    if ans is None:
                        return
                    status, body = ans[0], ans[1]
                    if len(ans) > 2 and ans[2] == "0":
                        rid = 0
                    s.sendall(self.HDR.pack(b"KVTR", 1, op, 0x8000, rid,
                                            status, len(body)) + body)
            except (EOFError, OSError):
                return

    def close(self):
        self.srv.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.rmdir(self.dir)


DROP, STATS = 9, 7


class ErrorMappingTest(unittest.TestCase):
    def client(self, script):
        f = FakeDaemon(script)
        self.addCleanup(f.close)
        c = kvtier.Client(f.path)
        self.addCleanup(c.close)
        return c

    def test_daemon_errno_answer_keeps_the_connection(self):
        # The issue: a DROP that failed with ENOSPC was ConnectionClosed.
        c = self.client({DROP: [(28, b"drop failed: No space left on "
                                     b"device"),
                                (0, struct.pack("<Q", 5))],
                         STATS: [(0, b"{}")]})
        with self.assertRaises(kvtier.Error) as cm:
            c.drop("full")
        e = cm.exception
        self.assertNotIsInstance(e, kvtier.ConnectionClosed)
        self.assertIsInstance(e, kvtier.ServerError)
        self.assertEqual(e.code, -28)
        self.assertIn("No space left", e.message)
        self.assertEqual(c.drop("full"), 5)  # the connection is fine
        self.assertEqual(c.stats(), {})

    def test_enomem_answer_keeps_the_connection(self):
        c = self.client({DROP: [(12, b"out of memory"),
                                (0, struct.pack("<Q", 1))]})
        with self.assertRaises(kvtier.Error) as cm:
            c.drop("x")
        self.assertNotIsInstance(cm.exception, kvtier.ConnectionClosed)
        self.assertEqual(cm.exception.code, -12)
        self.assertEqual(c.drop("x"), 1)

    def test_later_code_keeps_the_connection(self):
        c = self.client({DROP: [(1099, b"a code of a later version"),
                                (0, struct.pack("<Q", 2))]})
        with self.assertRaises(kvtier.Error) as cm:
            c.drop("x")
        self.assertIs(type(cm.exception), kvtier.Error)
        self.assertEqual(c.drop("x"), 2)

    def test_errno_that_ends_the_connection(self):
        # An answer with request id 0 ends the connection (the daemon
        # closes it next): ConnectionClosed, then and afterwards.
        c = self.client({DROP: [(28, b"going away", "0")]})
        with self.assertRaises(kvtier.ConnectionClosed) as cm:
            c.drop("x")
        self.assertEqual(cm.exception.code, -28)
        with self.assertRaises(kvtier.ConnectionClosed):
            c.drop("x")

    def test_closed_by_the_daemon(self):
        c = self.client({DROP: [None]})
        with self.assertRaises(kvtier.ConnectionClosed) as cm:
            c.drop("x")
        self.assertEqual(cm.exception.code, kvtier.ECLOSED)

    def test_every_code_has_its_exception(self):
        with open(os.path.join(ROOT, "common", "kvtier_errors.h")) as f:
            codes = dict((int(v), n) for n, v in
                         re.findall(r"\b(KVT_E\w+) = (-\d+)", f.read()))
        self.assertGreaterEqual(len(codes), 15)  # the header was parsed
        for code, name in sorted(codes.items(), reverse=True):
            self.assertEqual(getattr(kvtier, name[4:]), code, name)
            cls = kvtier._CLASSES.get(code)
            self.assertIsNotNone(cls, "%s has no exception class" % name)
            self.assertTrue(issubclass(cls, kvtier.Error))
            self.assertNotEqual(kvtier._strerror(code), "unknown error",
                                name)
        expect = {"EPROTO": kvtier.ProtocolError,
                  "ENOTFOUND": kvtier.NotFound,
                  "ENOSPACE": kvtier.NoSpace,
                  "ESERVER": kvtier.ServerError,
                  "ECLOSED": kvtier.ConnectionClosed,
                  "EFORKED": kvtier.ClientForked,
                  "ECONCURRENT": kvtier.ConcurrentUse}
        for name, cls in expect.items():
            self.assertIs(kvtier._CLASSES[getattr(kvtier, name)], cls, name)


if __name__ == "__main__":
    unittest.main()
