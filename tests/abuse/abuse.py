"""abuse.py - the harness every tests/abuse scenario imports.

A scenario is one Python program, tests/abuse/scn_<what>.py, that tries to
break a real kvtierd the way a hostile operator or a careless client would,
and asserts the promise the daemon must keep.  This module gives it:

  Scenario(name)     a fresh mktemp -d folder, cleanup on any exit (atexit
                     and SIGTERM/SIGINT/SIGHUP: daemons SIGKILLed by pid,
                     mounts unmounted, the folder removed), check() for each
                     promise, note() for the numbers the verdict line shows,
                     and finish() / skip(): the last line printed is
                     "PASS: ...", "FAIL: ..." or "SKIP: ...", exit 0, 1, 77.
  Scenario.daemon()  a kvtierd on its own socket and data directory (small
                     L3 by default), its log in a file; start(), stop(),
                     hup(), rss(), log_since().
  Raw                the wire protocol spoken directly over the socket
                     (proto/PROTOCOL.md), so that the daemon is judged
                     without trusting the client library, and so that frames
                     can be stalled, cut or pipelined at will.
  value_for(), key_for(), verify()
                     content-derived keys: a key is the SHA-256 of its value
                     (repeated to the length wanted), so whatever a GET
                     returns can be checked against the key it was asked
                     for: a wrong byte is always detected.

Sizes: ABUSE_SCALE (a float, default 1) multiplies the work a scenario
does; run.sh --long sets it to 10 and ABUSE_LONG=1.  Each scenario says
what its sizes are at scale 1 and which scale reproduces the issue's
figures.
"""

import atexit
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("KVTIER_BUILD") or os.path.join(ROOT, "build")
KVTIERD = os.environ.get("KVTIERD") or os.path.join(BUILD, "kvtierd")
KVTIER = os.environ.get("KVTIER") or os.path.join(BUILD, "kvtier")
SCALE = float(os.environ.get("ABUSE_SCALE") or "1")
LONG = os.environ.get("ABUSE_LONG") == "1"

# The Python package of this tree, with this build's library.
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
os.environ.setdefault("KVTIER_LIB", os.path.join(BUILD, "libkvtier.so.1"))

MiB = 1 << 20
GiB = 1 << 30


def sanitizer():
    """"AddressSanitizer" or "ThreadSanitizer" if $KVTIERD is built with
    one (its memory then is the sanitizer's: RSS bounds mean nothing),
    else None."""
    try:
        with open(KVTIERD, "rb") as f:
            exe = f.read()
    except OSError:
        return None
    if b"__tsan_init" in exe:
        return "ThreadSanitizer"
    if b"__asan_init" in exe:
        return "AddressSanitizer"
    return None


def scaled(n, minimum=1):
    """n times ABUSE_SCALE, as an int, at least minimum."""
    return max(minimum, int(n * SCALE))


# --- Content-derived keys ----------------------------------------------------

def value_for(seed, size):
    """size deterministic, incompressible bytes for seed (any value with a
    stable repr)."""
    return hashlib.shake_256(repr(seed).encode()).digest(size)


def key_for(value, length=32):
    """The key of value: its SHA-256, repeated and cut to length bytes."""
    h = hashlib.sha256(value).digest()
    return (h * (length // 32 + 1))[:length]


def verify(key, value):
    """True if value is the value key was derived from."""
    return value is not None and key_for(value, len(key)) == key


# --- Wire protocol -----------------------------------------------------------

HELLO, PING, PUT, GET, DEL, EXISTS, STATS, MATCH, DROP, HOT = range(1, 11)
OK = 0
EPROTO, ENOTFOUND, ETOOBIG, EBADREQ, EUNKNOWNOP = 1001, 1002, 1003, 1004, 1005
ENOSPACE, EVERSION, ESERVER, EDENIED, EBUSY = 1006, 1007, 1008, 1009, 1010
ECORRUPT = 1015
HDR = struct.Struct("<4sBBHQII")
MAGIC = b"KVTR"


def frame(op, body=b"", rid=0, magic=MAGIC, version=1, body_len=None):
    """One request frame; body_len may claim another length than body's."""
    n = len(body) if body_len is None else body_len
    return HDR.pack(magic, version, op, 0, rid, 0, n) + body


def _b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def put_body(ns, key, value, ttl=0, dtype=0):
    ns, key = _b(ns), _b(key)
    return struct.pack("<BBHI", len(ns), dtype, len(key), ttl) + ns + key + value


def put_head(ns, key, value_len):
    """The first bytes of a PUT whose body would carry value_len bytes of
    value, and the body length that header claims."""
    ns, key = _b(ns), _b(key)
    fixed = struct.pack("<BBHI", len(ns), 0, len(key), 0) + ns + key
    return fixed, len(fixed) + value_len


def key_body(ns, key):
    ns, key = _b(ns), _b(key)
    return struct.pack("<BBH", len(ns), 0, len(key)) + ns + key


def drop_body(ns):
    ns = _b(ns)
    return struct.pack("<BBH", len(ns), 0, 0) + ns


class Closed(Exception):
    """The daemon closed the connection."""


class Raw:
    """A bare connection to the daemon speaking frames (proto/PROTOCOL.md).

    Every call takes a timeout in seconds and raises socket.timeout when
    the daemon does not answer in time, Closed when it closes."""

    def __init__(self, path, timeout=10.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.rid = 0
        self.timeout = timeout

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fileno(self):
        return self.s.fileno()

    def send(self, data):
        self.s.sendall(data)

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            b = self.s.recv(min(n - len(buf), 1 << 20))
            if not b:
                raise Closed("closed after %d of %d bytes" % (len(buf), n))
            buf += b
        return bytes(buf)

    def recv_frame(self, timeout=None):
        """(opcode, flags, request id, status, body) of the next reply."""
        self.s.settimeout(self.timeout if timeout is None else timeout)
        h = self._recv_exact(HDR.size)
        magic, ver, op, flags, rid, status, n = HDR.unpack(h)
        if magic != MAGIC:
            raise Closed("bad magic in reply: %r" % h)
        return op, flags, rid, status, self._recv_exact(n)

    def request(self, op, body=b"", timeout=None):
        """Sends one request; returns (status, body) of its reply."""
        self.rid += 1
        self.s.settimeout(self.timeout if timeout is None else timeout)
        self.send(frame(op, body, self.rid))
        rop, _, rid, status, rbody = self.recv_frame(timeout)
        if rid != self.rid or rop != op:
            raise Closed("reply out of order: op %d id %d for op %d id %d"
                         % (rop, rid, op, self.rid))
        return status, rbody

    def pipeline(self, frames, window=512, timeout=None):
        """Sends frames (opcode, body) window at a time, reading each
        window's replies before the next; returns [(status, body)]."""
        out = []
        for i in range(0, len(frames), window):
            part = frames[i:i + window]
            data = bytearray()
            for op, body in part:
                self.rid += 1
                data += frame(op, body, self.rid)
            self.s.settimeout(self.timeout if timeout is None else timeout)
            self.send(bytes(data))
            for _ in part:
                _, _, _, status, body = self.recv_frame(timeout)
                out.append((status, body))
        return out

    def ping(self, timeout=None):
        return self.request(PING, b"abuse", timeout)[0] == OK

    def put(self, ns, key, value, ttl=0, timeout=None):
        return self.request(PUT, put_body(ns, key, value, ttl), timeout)[0]

    def put_big(self, ns, key, value, timeout=None):
        """A PUT whose header goes first: if the daemon refuses it from
        the header (a reply, or closing, within 0.3 s), returns that
        status or "closed"; else sends the value and returns the reply's
        status (or "closed")."""
        self.rid += 1
        body = put_body(ns, key, value)
        head = frame(PUT, body[:8 + len(_b(ns)) + len(_b(key))], self.rid,
                     body_len=len(body))
        rest = body[8 + len(_b(ns)) + len(_b(key)):]
        try:
            self.send(head)
            self.s.settimeout(0.3)
            try:
                return self.recv_frame(0.3)[3]
            except socket.timeout:
                pass
            self.s.settimeout(self.timeout if timeout is None else timeout)
            self.send(rest)
            return self.recv_frame(timeout)[3]
        except (OSError, Closed):
            return "closed"

    def get(self, ns, key, timeout=None):
        """(status, value or None)."""
        st, body = self.request(GET, key_body(ns, key), timeout)
        return st, (body if st == OK else None)

    def delete(self, ns, key, timeout=None):
        return self.request(DEL, key_body(ns, key), timeout)[0]

    def drop(self, ns, timeout=None):
        """(status, blocks removed or the error message)."""
        st, body = self.request(DROP, drop_body(ns), timeout)
        if st == OK and len(body) == 8:
            return st, struct.unpack("<Q", body)[0]
        return st, body.decode("utf-8", "replace")

    def stats(self, timeout=None):
        st, body = self.request(STATS, b"", timeout)
        if st != OK:
            raise Closed("STATS failed: status %d %r" % (st, body[:200]))
        return json.loads(body)


def raw_ping(path, timeout=1.0):
    """True if a daemon answers a PING on path."""
    try:
        r = Raw(path, timeout)
    except OSError:
        return False
    try:
        return r.ping(timeout)
    except (OSError, Closed):
        return False
    finally:
        r.close()


# --- Daemons -----------------------------------------------------------------

def describe_status(rc):
    """'exit N' or 'killed by SIGSEGV' for a Popen returncode."""
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return "killed by " + signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit %d" % rc


class Daemon:
    """One kvtierd.  args are extra flags; unless they name --l3-size or
    small=False, a small L3 (256M in 16M regions) is used, so that the
    preallocated region files stay small."""

    def __init__(self, scn, args=(), data=None, sock=None, small=True,
                 log_level="info", env=None, name="kvtierd", user=None):
        self.scn = scn
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=scn.dir)
        self.sock = sock or os.path.join(self.dir, "kvtier.sock")
        self.data = data or os.path.join(self.dir, "var")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.args = list(args)
        if small and "--l3-size" not in self.args and "--check" not in self.args:
            self.args = ["--l3-size", "256M", "--l3-region-size", "16M"] + \
                self.args
        self.log_level = log_level
        self.env = env
        self.user = user  # run as this uid (and gid), no supplementary groups
        self.proc = None
        scn.daemons.append(self)

    def argv(self, extra=()):
        level = ["--log-level", self.log_level] if self.log_level else []
        return [KVTIERD, "--socket", self.sock, "--data-dir", self.data] + \
            level + self.args + list(extra)

    def start(self, wait=True, timeout=30.0, extra=()):
        """Starts it; with wait, returns True once it answers a PING, False
        if it exited (or did not answer within timeout)."""
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.update(self.env or {})
        who = {}
        if self.user is not None:
            who = dict(user=self.user, group=self.user, extra_groups=[])
        self.proc = subprocess.Popen(self.argv(extra), stdout=log,
                                     stderr=log, stdin=subprocess.DEVNULL,
                                     env=env, **who)
        log.close()
        if not wait:
            return True
        return self.wait_ready(timeout)

    def wait_ready(self, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if raw_ping(self.sock, 0.5):
                return True
            time.sleep(0.01)
        return False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def returncode(self):
        return self.proc.poll() if self.proc else None

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        """Sends sig and waits; returns the returncode (negative: signal)."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        return self.stop(signal.SIGKILL)

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_mark(self):
        return len(self.log())

    def log_since(self, mark):
        return self.log()[mark:]

    def status(self):
        """/proc/PID/status as {field: kB or text}."""
        out = {}
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    v = v.strip()
                    if v.endswith(" kB"):
                        out[k] = int(v[:-3]) * 1024
                    else:
                        out[k] = v
        except OSError:
            pass
        return out

    def raw(self, timeout=10.0):
        return Raw(self.sock, timeout)

    def stats(self, timeout=30.0):
        r = self.raw(timeout)
        try:
            return r.stats(timeout)
        finally:
            r.close()

    def settle(self, timeout=60.0):
        """Waits until the worker has nothing queued or in transit (two
        STATS in a row say so); returns the last stats, or None."""
        end = time.monotonic() + timeout
        quiet = 0
        st = None
        while time.monotonic() < end:
            try:
                st = self.stats(timeout=max(1.0, end - time.monotonic()))
            except (OSError, Closed, ValueError):
                return None
            if not st.get("jobs_pending") and not st.get("transit_bytes"):
                quiet += 1
                if quiet >= 2:
                    return st
            else:
                quiet = 0
            time.sleep(0.1)
        return st

    def check(self, extra=(), timeout=300.0):
        """Runs `kvtierd --check --data-dir DATA` plus extra flags (the
        README's form when extra is empty); returns (returncode, output)."""
        return run([KVTIERD, "--check", "--data-dir", self.data] + list(extra),
                   timeout)


def run(argv, timeout=60.0, env=None):
    """Runs a program; returns (returncode or 'timeout', stdout+stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, env=e,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as x:
        out = x.stdout or b""
        return "timeout", out.decode("utf-8", "replace")
    return p.returncode, p.stdout.decode("utf-8", "replace")


# --- Filesystem snapshots ----------------------------------------------------

def tree_state(top, hash_files=()):
    """{relative path: (size, blocks allocated, sha256 or None)} of every
    file under top; files whose name is in hash_files are hashed."""
    out = {}
    for d, dirs, files in os.walk(top):
        for f in sorted(files):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            h = None
            if f in hash_files:
                with open(p, "rb") as fh:
                    h = hashlib.sha256(fh.read()).hexdigest()[:16]
            out[rel] = (st.st_size, st.st_blocks * 512, h)
        for sub in dirs:
            out[os.path.relpath(os.path.join(d, sub), top) + "/"] = \
                (None, None, None)
    return out


def diff_state(a, b, limit=4):
    """Human-readable differences between two tree_state() results."""
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            lines.append("%s deleted" % k)
        elif k not in a:
            lines.append("%s created (size %s, allocated %s)" %
                         (k, b[k][0], b[k][1]))
        elif a[k] != b[k]:
            what = []
            if a[k][0] != b[k][0]:
                what.append("size %s -> %s" % (a[k][0], b[k][0]))
            if a[k][1] != b[k][1]:
                what.append("allocated %s -> %s" % (a[k][1], b[k][1]))
            if a[k][2] != b[k][2]:
                what.append("contents changed")
            lines.append("%s %s" % (k, ", ".join(what)))
    if len(lines) > limit:
        lines = lines[:limit] + ["... %d more" % (len(lines) - limit)]
    return lines


# --- Scenarios ---------------------------------------------------------------

class Skip(Exception):
    pass


class Scenario:
    def __init__(self, name):
        self.name = name
        self.failures = []
        self.notes = []
        self.daemons = []
        self.mounts = []
        self.children = []
        self.done = False
        base = os.environ.get("ABUSE_RUN_DIR") or "/tmp"
        self.dir = tempfile.mkdtemp(prefix="kvtier-abuse-%s-" % name,
                                    dir=base)
        atexit.register(self.cleanup)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.t0 = time.monotonic()
        self.log("scenario %s, scale %g, folder %s" % (name, SCALE, self.dir))

    def _on_signal(self, signum, frame):
        self.failures.append("interrupted by %s (timeout?)"
                             % signal.Signals(signum).name)
        self.finish()

    # Reporting.
    def log(self, msg):
        print("  " + msg, flush=True)

    def check(self, cond, what, detail=None):
        """Records one promise: ok or FAIL with what (and detail)."""
        if cond:
            self.log("ok: " + what)
        else:
            msg = what if detail is None else "%s (%s)" % (what, detail)
            self.log("FAIL: " + msg)
            self.failures.append(msg)
        return bool(cond)

    def note(self, what):
        """A measurement for the verdict line."""
        self.log("note: " + what)
        self.notes.append(what)

    def finish(self):
        if self.done:
            os._exit(1 if self.failures else 0)
        self.done = True
        secs = time.monotonic() - self.t0
        self.cleanup()
        tail = "; ".join(self.notes)
        if self.failures:
            short = [f if len(f) < 240 else f[:236] + " ..."
                     for f in self.failures]
            print("FAIL: %s%s [%.1f s]" % (" | ".join(short),
                                           (" -- " + tail) if tail else "",
                                           secs), flush=True)
            os._exit(1)
        print("PASS: %s [%.1f s]" % (tail or "all promises kept", secs),
              flush=True)
        os._exit(0)

    def skip(self, why):
        self.done = True
        self.cleanup()
        print("SKIP: " + why, flush=True)
        os._exit(77)

    # Resources.
    def daemon(self, *args, **kw):
        return Daemon(self, *args, **kw)

    def mkdir(self, name):
        p = os.path.join(self.dir, name)
        os.makedirs(p, exist_ok=True)
        return p

    def fork(self, fn, *args):
        """Runs fn(*args) in a child process (remembered for cleanup);
        returns its pid.  The child exits with fn's return value (an
        int), or 99 on an exception."""
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                code = int(fn(*args) or 0)
            except BaseException as e:  # report, never run the parent's code
                try:
                    print("  child %d: %r" % (os.getpid(), e), flush=True)
                except Exception:
                    pass
            os._exit(code)
        self.children.append(pid)
        return pid

    def mount_tmpfs(self, name, size):
        """A tmpfs of size bytes at a new folder; None if mount fails."""
        p = self.mkdir(name)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            "size=%d,mode=0755" % size, "tmpfs", p],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode:
            self.log("tmpfs mount failed: %s" % r.stdout.decode().strip())
            return None
        self.mounts.append(p)
        return p

    def mount_loop_ext4(self, name, size):
        """A loop-mounted ext4 image of size bytes (sparse) at a new
        folder; None if it cannot be made (not root, no loop devices)."""
        img = os.path.join(self.dir, name + ".img")
        p = self.mkdir(name)
        with open(img, "wb") as f:
            f.truncate(size)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", img],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode:
            self.log("mkfs.ext4 failed: %s" % r.stdout.decode().strip())
            return None
        r = subprocess.run(["mount", "-o", "loop", img, p],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode:
            self.log("loop mount failed: %s" % r.stdout.decode().strip())
            return None
        self.mounts.append(p)
        return p

    def remount(self, path, opts):
        r = subprocess.run(["mount", "-o", "remount," + opts, path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return r.returncode == 0

    def cleanup(self):
        for d in self.daemons:
            if d.proc and d.proc.poll() is None:
                d.proc.kill()
                try:
                    d.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (OSError, ChildProcessError):
                pass
        self.children = []
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.mounts = []
        if os.path.isdir(self.dir) and "kvtier-abuse-" in self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def main(fn, name=None):
    """Runs fn(scn) as scenario name (default: the file's name without
    scn_ and .py) and finishes it: an exception is a FAIL naming it."""
    if name is None:
        name = os.path.basename(sys.argv[0])
        name = name[4:] if name.startswith("scn_") else name
        name = name[:-3] if name.endswith(".py") else name
    scn = Scenario(name)
    try:
        fn(scn)
    except Skip as e:
        scn.skip(str(e))
    except Exception as e:
        import traceback
        traceback.print_exc(file=sys.stdout)
        scn.failures.append("scenario error: %r" % (e,))
    scn.finish()
