"""Stalled and half-sent frames (issue #17, "the habit").

Hostile connections, each on its own socket, while a good client PUTs and
GETs content-derived blocks beside them:
  - a header cut after 1..23 bytes, then close;
  - a PUT whose body is cut half-way, then close: its key must not exist;
  - a PUT whose header and key are sent one byte at a time (must
    succeed);
  - bad magic, bad version, a body length over the limit, an unknown
    opcode, a GET body with trailing bytes;
  - ROUNDS seeded random byte strings, and random valid-looking headers
    with random bodies.
Promise: the daemon never dies and keeps serving the good client (every
GET right, each within 500 ms); no partial write reaches the store;
protocol errors are counted; an unknown opcode gets KVT_EUNKNOWNOP and the
connection stays usable.  Already held on the issue's code as far as
known: this guards it.  About 3 s.
"""
import os
import random
import socket
import struct
import threading
import time

import abuse as A

ROUNDS = A.scaled(2000)
SEED = int(os.environ.get("ABUSE_SEED") or 17)


def body(scn):
    d = scn.daemon(["--l3-size", "0", "--max-value-size", "4M"], small=False)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    stop = threading.Event()
    good = {"right": 0, "bad": 0, "worst": 0.0}

    def good_client():
        g = d.raw(timeout=10)
        i = 0
        while not stop.is_set():
            v = A.value_for(("good", i), 100 + i % 5000)
            k = A.key_for(v)
            t = time.monotonic()
            try:
                ok = g.put("good", k, v) == A.OK
                st, got = g.get("good", k)
                ok = ok and st == A.OK and A.verify(k, got)
            except (OSError, A.Closed):
                ok = False
            good["worst"] = max(good["worst"], time.monotonic() - t)
            good["right" if ok else "bad"] += 1
            i += 1
        g.close()

    th = threading.Thread(target=good_client, daemon=True)
    th.start()
    st0 = d.stats()

    def hostile(data, linger=0.0):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(d.sock)
        try:
            s.sendall(data)
            if linger:
                time.sleep(linger)
        except OSError:
            pass
        s.close()

    v = A.value_for("cut", 200000)
    cut_key = A.key_for(v)
    full = A.frame(A.PUT, A.put_body("cut", cut_key, v), 7)
    for n in range(1, 24):
        hostile(full[:n])
    hostile(full[:len(full) // 2], linger=0.2)
    # One byte at a time.
    v2 = A.value_for("slow", 3000)
    slow_key = A.key_for(v2)
    s = A.Raw(d.sock, 10)
    fr = A.frame(A.PUT, A.put_body("slow", slow_key, v2), 9)
    pos = 0
    while pos < len(fr):
        step = 1 if pos < 64 else 512  # the header and key byte by byte
        s.send(fr[pos:pos + step])
        pos += step
    slow_status = s.recv_frame(10)[3]
    s.close()
    # Malformed headers and bodies.
    replies = {}
    for name, data in (
            ("bad magic", A.frame(A.PING, b"x", magic=b"XXXX")),
            ("bad version", A.frame(A.PING, b"x", version=9)),
            ("too long", A.frame(A.PUT, b"", body_len=0xFFFFFFF0)),
            ("unknown opcode", A.frame(200, b"abc")),
            ("trailing bytes", A.frame(A.GET, A.key_body("n", b"k") + b"zz"))):
        c = A.Raw(d.sock, 5)
        try:
            c.send(data)
            replies[name] = c.recv_frame(5)[3]
            if name == "unknown opcode":
                replies["after unknown"] = c.ping(5)
        except (OSError, A.Closed) as e:
            replies[name] = "closed"
        c.close()
    rng = random.Random(SEED)
    for i in range(ROUNDS):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1,
                                                                         200)))
        else:
            op = rng.randrange(0, 20)
            bl = rng.randrange(0, 300)
            data = A.frame(op, bytes(rng.randrange(256) for _ in range(bl)),
                           rid=i, body_len=bl if rng.random() < 0.8 else
                           rng.randrange(0, 1 << 20))
        hostile(data)
    time.sleep(0.3)
    stop.set()
    th.join(10)
    st1 = d.stats()
    with d.raw() as c:
        cut_st, _ = c.get("cut", cut_key)
        slow_st, got = c.get("slow", slow_key)
    scn.note("good client: %d right, %d bad, worst %.0f ms; malformed: %s; "
             "protocol_errors %d -> %d"
             % (good["right"], good["bad"], good["worst"] * 1000,
                ", ".join("%s %s" % kv for kv in replies.items()),
                st0["protocol_errors"], st1["protocol_errors"]))
    scn.check(d.alive(), "the daemon survives")
    scn.check(good["bad"] == 0 and good["right"] > 0, "the good client is "
              "served right throughout", "%d bad" % good["bad"])
    scn.check(good["worst"] < 0.5, "the good client's PUT+GET stays under "
              "500 ms", "worst %.0f ms" % (good["worst"] * 1000))
    scn.check(cut_st == A.ENOTFOUND, "a PUT cut half-way stores nothing",
              "GET status %d" % cut_st)
    scn.check(slow_status == A.OK and slow_st == A.OK and
              A.verify(slow_key, got), "a PUT sent byte by byte succeeds")
    scn.check(replies.get("unknown opcode") == A.EUNKNOWNOP and
              replies.get("after unknown"), "an unknown opcode gets "
              "KVT_EUNKNOWNOP and the connection stays usable",
              "%r" % replies)
    scn.check(st1["protocol_errors"] > st0["protocol_errors"],
              "protocol errors are counted")


if __name__ == "__main__":
    A.main(body)
