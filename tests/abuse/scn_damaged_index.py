"""Issue #17 break 7: a truncated or damaged index crashes the daemon and
`--check` (SIGBUS when data.mdb is truncated, SIGSEGV at start in 2 of 30
random bit-flip trials), and other damage gives "internal daemon error"
with an empty detail.

Promise, for every damaged copy of a store's l3/index/data.mdb:
  - `kvtierd --check` (given the store's geometry) and the daemon never die
    of a signal and never hang;
  - the daemon either refuses to start, with a message that names the file
    (data.mdb or the index folder) and what to do (--check, or moving the
    data directory aside), or starts and serves correctly: every GET of a
    stored key is the right bytes or a miss, never an error status, and
    it stops cleanly on SIGTERM;
  - never a wrong byte.

Damage: truncation to several lengths (0, 1, 4095, 4096, 8192, half, all
but one page, all but one byte), and TRIALS seeded random bit-flip trials
(1 to 16 bits each, anywhere in the file, or in the two meta pages).
Scale 1 (make test): 100 bit-flip trials, about 15 s; --long: 1000 trials,
about 150 s.  ABUSE_SEED changes
the seed (default 17); a failing trial prints its seed and flips.
"""
import os
import random
import shutil
import signal
import time

import abuse as A

TRIALS = A.scaled(100)
SEED = int(os.environ.get("ABUSE_SEED") or 17)
GEOMETRY = ["--l3-size", "16M", "--l3-region-size", "4M"]
BLOCKS = 1200
HINTS = ("--check", "move", "aside", "remove", "delete", "rename")


def make_store(scn):
    """A store with BLOCKS blocks in L3; returns (data dir, keys)."""
    d = scn.daemon(GEOMETRY + ["--l1-size", "64M", "--l2-size", "0"],
                   small=False, name="pristine")
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    r = d.raw()
    keys, frames = [], []
    for i in range(BLOCKS):
        v = A.value_for(("idx", i), 100 + (i * 37) % 3000)
        ns, k = "dmg/%d" % (i % 7), A.key_for(v, 32 + i % 64)
        keys.append((ns, k))
        frames.append((A.PUT, A.put_body(ns, k, v)))
    assert all(st == A.OK for st, _ in r.pipeline(frames))
    r.close()
    rc = d.stop()
    if rc != 0:
        raise RuntimeError("pristine store: SIGTERM gave " +
                           A.describe_status(rc))
    return d.data, keys


def judge(scn, tag, data, keys):
    """Runs --check and the daemon on a damaged store; returns a list of
    broken promises (empty if all held) and a short outcome."""
    bad = []
    rc, out = A.run([A.KVTIERD, "--check", "--data-dir", data] + GEOMETRY,
                    timeout=60)
    if rc == "timeout":
        bad.append("--check hung (60 s)")
    elif rc < 0:
        bad.append("--check %s" % A.describe_status(rc))
    d = scn.daemon(GEOMETRY, data=data, small=False, name="t")
    d.start(wait=False)
    ready = d.wait_ready(20)
    outcome = ""
    if not ready:
        if d.alive():
            d.kill()
            bad.append("daemon hung at start (20 s)")
            return bad, "hang"
        rc = d.returncode()
        msg = d.log()
        if rc < 0:
            bad.append("daemon %s at start" % A.describe_status(rc))
            return bad, "start: " + A.describe_status(rc)
        last = [l for l in msg.splitlines() if l.strip()][-1:] or [""]
        names_file = "data.mdb" in msg or "/index" in msg
        says_what = any(h in msg for h in HINTS)
        if not (names_file and says_what):
            bad.append("refused to start without naming the file and what "
                       "to do: %s" % last[0][-160:])
        return bad, "refused (exit %d)" % rc
    r = d.raw(timeout=30)
    counts = {"right": 0, "miss": 0, "wrong": 0}
    errors = {}
    try:
        res = r.pipeline([(A.GET, A.key_body(ns, k)) for ns, k in keys],
                         window=256, timeout=30)
        for (ns, k), (st, v) in zip(keys, res):
            if st == A.OK:
                counts["right" if A.verify(k, v) else "wrong"] += 1
            elif st in (A.ENOTFOUND, A.ECORRUPT):
                counts["miss"] += 1
            else:
                e = "%d %r" % (st, v[:60].decode("utf-8", "replace"))
                errors[e] = errors.get(e, 0) + 1
    except (OSError, A.Closed) as e:
        bad.append("connection lost while reading: %r" % (e,))
    r.close()
    if counts["wrong"]:
        bad.append("%d WRONG VALUES served" % counts["wrong"])
    if errors:
        bad.append("GETs failed: %s" % "; ".join(
            "%d x status %s" % (n, e) for e, n in sorted(errors.items())))
    if not d.alive():
        bad.append("daemon died while serving: %s"
                   % A.describe_status(d.returncode()))
    else:
        rc = d.stop(timeout=30)
        if rc != 0:
            bad.append("SIGTERM: %s" % A.describe_status(rc))
    shutil.rmtree(d.dir, ignore_errors=True)
    return bad, "served %d right, %d misses" % (counts["right"],
                                                counts["miss"])


def body(scn):
    pristine, keys = make_store(scn)
    mdb = os.path.join("l3", "index", "data.mdb")
    size = os.path.getsize(os.path.join(pristine, mdb))
    scn.log("store: %d blocks, data.mdb %d bytes" % (len(keys), size))
    trials = []
    for n in sorted(set([0, 1, 4095, 4096, 8192, size // 2, size - 4096,
                         size - 1])):
        if 0 <= n < size:
            trials.append(("truncate to %d" % n, ("truncate", n)))
    for t in range(TRIALS):
        rng = random.Random(SEED * 100003 + t)
        where = size if rng.random() < 0.75 else min(size, 8192)
        flips = [(rng.randrange(where), rng.randrange(8))
                 for _ in range(rng.randint(1, 16))]
        trials.append(("seed %d trial %d: flip %s" % (SEED, t, " ".join(
            "%d.%d" % f for f in flips)), ("flip", flips)))
    broken, outcomes = [], {}
    for i, (tag, (kind, arg)) in enumerate(trials):
        data = os.path.join(scn.dir, "trial-%d" % i)
        shutil.copytree(pristine, data)
        p = os.path.join(data, mdb)
        if kind == "truncate":
            os.truncate(p, arg)
        else:
            with open(p, "r+b") as f:
                for off, bit in arg:
                    f.seek(off)
                    b = f.read(1)[0]
                    f.seek(off)
                    f.write(bytes([b ^ (1 << bit)]))
        bad, outcome = judge(scn, tag, data, keys)
        key = "served" if outcome.startswith("served") else outcome
        outcomes[key] = outcomes.get(key, 0) + 1
        if bad:
            broken.append((tag, bad))
            scn.log("BROKEN %s -> %s: %s" % (tag[:80], outcome,
                                             " / ".join(bad)))
        shutil.rmtree(data, ignore_errors=True)
    kinds = {}
    for tag, bad in broken:
        for b in bad:
            k = b.split(":")[0][:60]
            kinds[k] = kinds.get(k, 0) + 1
    scn.note("%d damaged copies (%d truncations, %d bit-flip trials, seed "
             "%d): outcomes %s" % (len(trials), len(trials) - TRIALS, TRIALS,
                                   SEED, ", ".join("%s: %d" % kv for kv in
                                                   sorted(outcomes.items()))))
    scn.check(not broken, "every damaged index is refused clearly or served "
              "correctly, nothing dies of a signal",
              "%d of %d trials broke a promise: %s" % (
                  len(broken), len(trials), "; ".join(
                      "%s x%d" % kv for kv in sorted(kinds.items()))))
    for tag, bad in broken[:6]:
        scn.log("e.g. %s: %s" % (tag[:100], bad[0][:200]))


if __name__ == "__main__":
    A.main(body)
