"""Reloads under load (issue #17, "the habit").

CLIENTS threads PUT and GET content-derived blocks (some large enough to
go down to L2 and L3) while the config file is rewritten and SIGHUP sent
RELOADS times (log-level, max-connections, l3-write-rate, busy-poll and
spill-timeout toggled; each SIGHUP waits for its reload line).
Promise: every reload is applied and logged (each changed setting)
within 2 s; no client sees an
error, a disconnect or a wrong byte; the daemon stops cleanly afterwards.
Already held on the issue's code as far as known: this guards it.  About
6 s.
"""
import os
import threading
import time

import abuse as A

CLIENTS = 4
RELOADS = A.scaled(20)
CONFIGS = [
    "log-level = info\nmax-connections = 100\nl3-write-rate = 0\n"
    "busy-poll = 50\nspill-timeout = 30\n",
    "log-level = warn\nmax-connections = 200\nl3-write-rate = 64M\n"
    "busy-poll = 0\nspill-timeout = 10\n",
]


def body(scn):
    cfg = os.path.join(scn.dir, "kvtierd.conf")
    with open(cfg, "w") as f:
        f.write(CONFIGS[0])
    # The harness's --log-level flag would override the file's: None
    # leaves it out.
    d = scn.daemon(["--config", cfg, "--l1-size", "8M", "--l2-size", "8M"],
                   log_level=None)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    stop = threading.Event()
    tally = {"right": 0, "miss": 0, "wrong": 0, "error": 0}
    errors = []
    lock = threading.Lock()

    def client(n):
        try:
            r = d.raw(timeout=30)
        except OSError as e:
            errors.append("connect: %r" % (e,))
            return
        written = []
        i = 0
        while not stop.is_set():
            size = 256 * 1024 if i % 16 == 0 else 1000 + i % 3000
            v = A.value_for(("load", n, i), size)
            k = A.key_for(v)
            try:
                st = r.put("load%d" % n, k, v)
                if st != A.OK:
                    raise A.Closed("PUT status %d" % st)
                written.append(k)
                k2 = written[(i * 7) % len(written)]
                st, got = r.get("load%d" % n, k2)
                what = "right" if st == A.OK and A.verify(k2, got) else \
                    "wrong" if st == A.OK else "miss" \
                    if st == A.ENOTFOUND else "error"
            except (OSError, A.Closed) as e:
                with lock:
                    errors.append(repr(e))
                    tally["error"] += 1
                return
            with lock:
                tally[what] += 1
            i += 1
        r.close()

    ths = [threading.Thread(target=client, args=(n,), daemon=True)
           for n in range(CLIENTS)]
    for t in ths:
        t.start()
    late = 0
    for i in range(RELOADS):
        with open(cfg, "w") as f:
            f.write(CONFIGS[(i + 1) % 2])
        # Counted by the warn-level line of a changed setting: at
        # log-level warn the info-level "event=reloaded" is not written.
        before = d.log().count("setting=max-connections")
        d.hup()
        end = time.monotonic() + 2
        while d.log().count("setting=max-connections") <= before:
            if time.monotonic() > end:
                late += 1
                break
            time.sleep(0.02)
        time.sleep(0.1)
    stop.set()
    for t in ths:
        t.join(30)
    log = d.log()
    rc = d.stop()
    scn.note("%d reloads (%d not logged within 2 s); clients: %s"
             % (RELOADS, late, ", ".join("%s %d" % kv for kv in
                                          sorted(tally.items()))))
    scn.check(late == 0, "every SIGHUP is applied and logged within 2 s",
              "%d were not" % late)
    for name in ("log-level", "l3-write-rate", "busy-poll", "spill"):
        scn.check(log.count("setting=" + name) == RELOADS,
                  "each reload logs setting=%s" % name, "%d of %d" % (
                      log.count("setting=" + name), RELOADS))
    scn.check(tally["wrong"] == 0, "no wrong bytes", "%d" % tally["wrong"])
    scn.check(tally["error"] == 0 and not errors, "no client errors or "
              "disconnects", "; ".join(errors[:3]))
    scn.check(rc == 0, "the daemon stops cleanly", A.describe_status(rc))


if __name__ == "__main__":
    A.main(body)
