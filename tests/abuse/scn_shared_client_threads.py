"""Issue #17 break 9: a Python Client shared by two threads can hang for
ever in recv(), and its error strings come out torn.

Misuse, but it must fail loudly.  ROUNDS rounds; in each, two threads
call one Client at the same time, first ERR_CALLS calls each that the
library refuses before sending anything (a key over the daemon's limit in
one thread, a namespace over the protocol's in the other: each has its
own message), then GET_CALLS GETs each of content-derived keys.
Promise:
  - no call hangs (each round finishes within DEADLINE_S);
  - concurrent use is detected: some call raises a kvtier.Error whose
    message names threads or concurrent use;
  - every other error is exactly the one that call gives alone (no torn or
    mixed-up message, no protocol error from an interleaved reply);
  - no call returns another key's bytes.
About 3 s, plus DEADLINE_S per round that hangs (it stops after the second;
on today's code about one round in 30 hangs).
"""
import re
import threading
import time

import abuse as A

ROUNDS = A.scaled(100)
ERR_CALLS = 2000
GET_CALLS = 1000
DEADLINE_S = 5.0
CONCURRENT = re.compile(r"thread|concurren", re.I)


def body(scn):
    import kvtier

    d = scn.daemon(["--l3-size", "0"], small=False)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    c = kvtier.Client(d.sock)
    keys = []
    for i in range(64):
        v = A.value_for(("thr", i), 2048)
        k = A.key_for(v)
        c.put(k, v, ns="thr")
        keys.append(k)

    def fail_a(cl):
        cl.get(b"k" * 5000, ns="thr")

    def fail_b(cl):
        cl.get(b"k", ns="n" * 300)

    # What each failing call says when alone.
    alone = {}
    for name, fn in (("a", fail_a), ("b", fail_b)):
        try:
            fn(c)
            raise RuntimeError("the failing call %s did not fail" % name)
        except kvtier.Error as e:
            alone[name] = (type(e).__name__, str(e))
    scn.log("alone: %r" % alone)
    c.close()

    tally = {"detected": 0, "expected": 0, "torn": 0, "other": 0,
             "wrong": 0, "right": 0, "miss": 0}
    examples = {"torn": [], "other": [], "detected": []}
    lock = threading.Lock()
    hung_rounds = 0

    def count(what, msg):
        with lock:
            tally[what] += 1
            if msg and what in examples and len(examples[what]) < 3:
                examples[what].append(msg[:160])

    def worker(cl, name, fail, barrier, first):
        barrier.wait()
        for i in range(ERR_CALLS):
            try:
                fail(cl)
                count("other", "a call that must fail succeeded")
            except kvtier.Error as e:
                msg = "%s: %s" % (type(e).__name__, e)
                if CONCURRENT.search(str(e)):
                    count("detected", msg)
                elif (type(e).__name__, str(e)) == alone[name]:
                    count("expected", None)
                else:
                    count("torn", "%s (alone: %s)" % (msg, alone[name][1]))
        for i in range(GET_CALLS):
            k = keys[(i * 3 + first) % len(keys)]
            try:
                v = cl.get(k, ns="thr")
            except kvtier.Error as e:
                msg = "%s: %s" % (type(e).__name__, e)
                count("detected" if CONCURRENT.search(str(e)) else "other",
                      msg)
                if isinstance(e, kvtier.ConnectionClosed):
                    return
                continue
            count("miss" if v is None else
                  ("right" if A.verify(k, v) else "wrong"), None)

    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        cl = kvtier.Client(d.sock)
        barrier = threading.Barrier(2)
        ths = [threading.Thread(target=worker, daemon=True,
                                args=(cl, n, f, barrier, first))
               for n, f, first in (("a", fail_a, 0), ("b", fail_b, 1))]
        for t in ths:
            t.start()
        end = time.monotonic() + DEADLINE_S
        for t in ths:
            t.join(max(0.0, end - time.monotonic()))
        if any(t.is_alive() for t in ths):
            hung_rounds += 1
            scn.log("round %d: a thread is still blocked after %.0f s"
                    % (rnd, DEADLINE_S))
            if hung_rounds >= 2:
                break
            continue  # leave it blocked (daemon thread); the Client leaks
        cl.close()
    secs = time.monotonic() - t0
    scn.note("%d rounds x 2 threads x (%d + %d) calls in %.1f s: %s; hung "
             "rounds %d" % (rnd + 1, ERR_CALLS, GET_CALLS, secs, ", ".join("%s %d" % kv for kv in
                                                   sorted(tally.items())),
                            hung_rounds))
    for what, ex in examples.items():
        for e in ex:
            scn.log("%s: %s" % (what, e))
    scn.check(tally["wrong"] == 0, "no call returns another key's bytes",
              "%d wrong values" % tally["wrong"])
    scn.check(hung_rounds == 0, "no call hangs (each round within %.0f s)"
              % DEADLINE_S, "%d of %d rounds hung in a call"
              % (hung_rounds, rnd + 1))
    scn.check(tally["detected"] > 0, "concurrent use is detected and "
              "raised", "no error named threads/concurrent use")
    scn.check(tally["torn"] == 0, "no torn error messages",
              "%d, e.g. %s" % (tally["torn"], examples["torn"][:1]))
    scn.check(tally["other"] == 0, "no other errors (protocol errors from "
              "interleaved replies)", "%d, e.g. %s"
              % (tally["other"], examples["other"][:1]))


if __name__ == "__main__":
    A.main(body)
