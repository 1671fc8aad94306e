"""Issue #17 break 4: four idle connections block everyone's larger PUTs.

Each of STALLED connections sends a PUT header claiming a 256 MiB body (the
default --max-value-size), the namespace and key, and then nothing.  With
the default --max-inflight of 1 GiB the four reserve all of it, and every
other socket PUT over 64 KiB waits, for ever: nothing reaps a body that
stops arriving (--idle-timeout skips connections in the middle of a body).

Promise: another client's 1 MiB PUT over the socket completes within
PUT_BOUND_S (stalled clients must not starve the rest, before any timeout
fires); the stalled connections are closed after the body timeout, counted
in the stats (a counter named like *timeout*, *stall*, *body* or
idle_closed) and logged (an event=... line named so).

The timeout setting is TIMEOUT_FLAGS below: --body-timeout, the daemon's
limit on a frame that stops arriving (before it existed, the scenario
used --idle-timeout, which never fired for these).  About 15 s.
"""
import re
import socket
import struct
import time

import abuse as A

BODY_TIMEOUT_S = 6
TIMEOUT_FLAGS = ["--body-timeout", str(BODY_TIMEOUT_S)]
STALLED = 4
PUT_BOUND_S = 3.0
CLAIM = 256 * A.MiB


def is_closed(raw):
    """True if the daemon closed raw (EOF or reset), without waiting."""
    raw.s.setblocking(False)
    try:
        b = raw.s.recv(4096)
        return b == b"" or None  # None: it sent something (a reply)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        raw.s.setblocking(True)


def body(scn):
    d = scn.daemon(["--l3-size", "0"] + TIMEOUT_FLAGS, small=False)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    h = d.raw()
    st, hello = h.request(A.HELLO, struct.pack("<II", 1, 0))
    max_body = struct.unpack_from("<Q", hello, 24)[0]
    h.close()
    stalled = []
    t_stall = time.monotonic()
    for i in range(STALLED):
        fixed, _ = A.put_head("stall", b"stalled-%d" % i, 0)
        n = min(CLAIM, max_body)  # the whole body: 4 x 256 MiB = 1 GiB
        c = d.raw()
        c.send(A.frame(A.PUT, fixed + b"x" * 100, rid=1, body_len=n))
        stalled.append(c)
    time.sleep(0.5)
    st0 = d.stats()
    scn.log("with %d stalled bodies: inflight_bytes %s, mem_waits %s"
            % (STALLED, st0.get("inflight_bytes"), st0.get("mem_waits")))

    # One 1 MiB PUT over the socket from another client.
    v = A.value_for("mover", A.MiB)
    k = A.key_for(v)
    c = d.raw(timeout=BODY_TIMEOUT_S + 5)
    t = time.monotonic()
    try:
        status = c.put("movers", k, v)
    except (socket.timeout, A.Closed, OSError) as e:
        status = "no reply (%s)" % (e.__class__.__name__,)
    put_s = time.monotonic() - t
    scn.note("1 MiB PUT beside %d stalled 256 MiB bodies: %s after %.1f s"
             % (STALLED, status, put_s))
    scn.check(status == A.OK and put_s <= PUT_BOUND_S,
              "a 1 MiB socket PUT completes within %.0f s beside stalled "
              "bodies" % PUT_BOUND_S,
              "status %s after %.1f s" % (status, put_s))
    if status == A.OK:
        st, got = c.get("movers", k)
        scn.check(st == A.OK and A.verify(k, got), "and reads back right")
    c.close()

    # The stalled ones are closed after the timeout.
    end = max(time.monotonic(), t_stall + BODY_TIMEOUT_S + 4)
    while time.monotonic() < end:
        if all(is_closed(s) for s in stalled):
            break
        time.sleep(0.25)
    closed = sum(1 for s in stalled if is_closed(s))
    scn.check(closed == STALLED, "stalled bodies are closed within %d s "
              "(timeout %d s)" % (BODY_TIMEOUT_S + 4, BODY_TIMEOUT_S),
              "%d of %d closed after %.0f s" % (closed, STALLED,
                                                time.monotonic() - t_stall))
    st1 = d.stats()
    grew = {k2: st1[k2] - st0.get(k2, 0) for k2 in st1
            if isinstance(st1[k2], int) and st1[k2] > st0.get(k2, 0) and
            any(w in k2 for w in ("timeout", "stall", "idle_closed",
                                  "body"))}
    scn.check(sum(grew.values()) >= STALLED, "the closes are counted",
              "no counter with timeout/stall/idle_closed/body in its "
              "name grew by %d (%r)" % (STALLED, grew))
    lines = [l for l in d.log().splitlines()
             if re.search(r"event=\S*(timeout|stall|idle_closed|body)", l)]
    scn.check(len(lines) >= 1, "the closes are logged",
              "no event line with timeout/stall/idle_closed")
    for l in lines[:STALLED]:
        scn.log("log: " + l[:200])
    scn.log("inflight_bytes now %s" % st1.get("inflight_bytes"))
    for s in stalled:
        s.close()


if __name__ == "__main__":
    A.main(body)
