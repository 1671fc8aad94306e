"""Issue #17 break 1: `kvtierd --check --data-dir DIR`, the README's form
(default --l3-size 4G, --l3-region-size 64M), on a store made with other
sizes.

Promise: the check is read-only (the directory listing, every file's size
and allocated bytes, and data.mdb's contents are the same afterwards: no
region file deleted or preallocated, no record dropped, expired ones
included), it takes the geometry from the store itself, it reports what it
finds (exit 0 on a consistent store, and the number of entries in its
output), and the daemon restarted with the original flags afterwards serves
every block it served before.

Three stores, each with live blocks and a few that have expired by the time
of the check:
  smaller   --l3-size 128M (2 regions of 64M): a 4G check would preallocate
            62 more regions (3.9 GiB);
  regions   --l3-size 256M --l3-region-size 16M: another region size;
  bigger    --l3-size 4352M (68 regions of 64M): a 4G check would delete
            region files 64-67.
smaller and bigger live on a sparse loop-mounted ext4 image (fallocate
costs no real disk there); without loop devices they are skipped, with a
line saying so.  About 7 s.  --long also fills the bigger store with 4.1 GiB
of 2 MiB blocks first, so that the deleted regions held data (about 40 s,
4 GiB of real disk for the image meanwhile).
"""
import os
import re
import sys
import time

import abuse as A

CASES = [
    ("smaller", ["--l3-size", "128M"], True),
    ("regions", ["--l3-size", "256M", "--l3-region-size", "16M"], False),
    ("bigger", ["--l3-size", "4352M"] +
     (["--l1-size", "256M", "--l2-size", "0"] if A.LONG else []), True),
]
LIVE = 40     # blocks that must survive
EXPIRING = 5  # blocks put with a 1 s TTL, expired at check time


def fill(scn, d, case):
    """Puts LIVE + EXPIRING blocks; returns (live [(ns, key)], expiring).
    With --long, the bigger store also gets 4.1 GiB of 2 MiB blocks first,
    so that regions 64-67 hold data that a 4G check would delete."""
    r = d.raw()
    live, expiring = [], []
    if A.LONG and case == "bigger":
        for i in range(2080):
            v = A.value_for((case, "bulk", i), 2 * A.MiB)
            k = A.key_for(v)
            if r.put("chk/bulk", k, v) == A.OK:
                live.append(("chk/bulk", k))
    for i in range(LIVE + EXPIRING):
        v = A.value_for((case, i), 4096 * (1 + i % 20) + i)
        ns = "chk/%s/%d" % (case, i % 3)
        k = A.key_for(v)
        ttl = 1 if i >= LIVE else 0
        st = r.put(ns, k, v, ttl=ttl)
        if st != A.OK:
            raise RuntimeError("put failed: status %d" % st)
        (expiring if ttl else live).append((ns, k))
    r.close()
    return live, expiring


def served(d, keys):
    """(hits with the right bytes, misses, wrong values)."""
    r = d.raw()
    hits = misses = wrong = 0
    for ns, k in keys:
        st, v = r.get(ns, k)
        if st == A.OK and A.verify(k, v):
            hits += 1
        elif st == A.OK:
            wrong += 1
        else:
            misses += 1
    r.close()
    return hits, misses, wrong


def one(scn, case, flags, data):
    d = scn.daemon(flags, data=data, small=False, name=case)
    if not scn.check(d.start(), "%s: daemon starts" % case, d.log()[-300:]):
        return
    live, expiring = fill(scn, d, case)
    hits, _, wrong = served(d, live)
    n_live = len(live)
    scn.check(hits == n_live and not wrong, "%s: all %d blocks served before"
              % (case, n_live), "%d hits, %d wrong" % (hits, wrong))
    rc = d.stop()
    scn.check(rc == 0, "%s: SIGTERM (spill to L3) exits 0" % case,
              A.describe_status(rc))
    time.sleep(2.2)  # the TTL-1 blocks are now expired
    before = A.tree_state(data, hash_files=("data.mdb",))
    before.pop("l3/index/lock.mdb", None)
    rc, out = d.check(timeout=300)
    after = A.tree_state(data, hash_files=("data.mdb",))
    after.pop("l3/index/lock.mdb", None)
    first = " / ".join(l.strip() for l in out.strip().splitlines()[-3:])
    scn.log("%s: --check exit %s, output: %s" % (case, rc, first[:300]))
    changes = A.diff_state(before, after)
    scn.check(not changes, "%s: --check (README form) leaves the store "
              "unchanged" % case, "; ".join(changes))
    scn.check(isinstance(rc, int) and rc >= 0,
              "%s: --check does not die of a signal" % case,
              A.describe_status(rc) if isinstance(rc, int) else rc)
    scn.check(rc == 0, "%s: --check reports the consistent store as "
              "consistent (exit 0), with its own geometry" % case,
              "exit %s: %s" % (rc, first[:200]))
    n_all = n_live + EXPIRING
    scn.check(re.search(r"\b(%d|%d)\b" % (n_live, n_all), out),
              "%s: --check reports the entries it found (%d, or %d with the "
              "expired)" % (case, n_live, n_all), first[:200])
    d.log_level = "info"
    if not scn.check(d.start(), "%s: restart with the original flags"
                     % case, d.log()[-300:]):
        return
    hits, misses, wrong = served(d, live)
    scn.check(hits == n_live and not wrong, "%s: after --check, the restarted "
              "daemon serves all %d blocks" % (case, n_live),
              "%d hits, %d misses, %d wrong" % (hits, misses, wrong))
    _, _, wrong = served(d, expiring)
    scn.check(not wrong, "%s: no wrong bytes for expired blocks" % case)
    d.stop(timeout=60)


def body(scn):
    loop = scn.mount_loop_ext4("loopfs", 8 * A.GiB)
    for case, flags, on_loop in CASES:
        if on_loop and not loop:
            scn.note("%s: SKIPPED (no loop-mounted ext4 here)" % case)
            continue
        top = loop if on_loop else scn.dir
        one(scn, case, flags, os.path.join(top, case + "-var"))


if __name__ == "__main__":
    A.main(body)
