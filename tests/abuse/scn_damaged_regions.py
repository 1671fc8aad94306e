"""Hostile data directories (issue #17, "the habit"): damaged region files.

A store's region files are truncated (to 0, to one page, to half) or get
random bit flips (seeded, TRIALS trials of 1 to 64 flips, half of them in
entry headers), then the daemon is restarted on them.

Promise: the daemon starts and never dies of a signal; every GET is the
right bytes or a miss, never a wrong byte or an error status; flipped bytes
inside stored entries are counted (l3_checksum_failures or misses_corrupt);
`kvtierd --check` (with the store's geometry) reports the damage (exit 1)
and does not die.  Already held on the issue's code ("corrupted regions ...
read back as misses or correct data"): this guards it.  About 8 s.
"""
import os
import random
import shutil

import abuse as A

GEOMETRY = ["--l3-size", "16M", "--l3-region-size", "4M"]
TRIALS = A.scaled(12)
SEED = int(os.environ.get("ABUSE_SEED") or 17)


def make_store(scn):
    d = scn.daemon(GEOMETRY + ["--l1-size", "32M", "--l2-size", "0"],
                   small=False, name="pristine")
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    r = d.raw()
    keys = []
    frames = []
    for i in range(600):
        v = A.value_for(("reg", i), 1000 + (i * 53) % 20000)
        k = A.key_for(v)
        keys.append(("reg", k))
        frames.append((A.PUT, A.put_body("reg", k, v)))
    assert all(st == A.OK for st, _ in r.pipeline(frames, window=64))
    r.close()
    assert d.stop() == 0
    return d.data, keys


def judge(scn, data, keys):
    bad = []
    rc, out = A.run([A.KVTIERD, "--check", "--data-dir", data] + GEOMETRY,
                    timeout=60)
    if rc == "timeout" or rc < 0:
        bad.append("--check %s" % (rc if rc == "timeout" else
                                   A.describe_status(rc)))
    d = scn.daemon(GEOMETRY, data=data, small=False, name="t")
    if not d.start(timeout=20):
        rc = d.returncode()
        bad.append("daemon did not start: %s: %s" % (
            A.describe_status(rc), d.log().strip()[-160:]))
        d.kill()
        return bad, 0, 0, rc
    r = d.raw(timeout=30)
    right = miss = 0
    res = r.pipeline([(A.GET, A.key_body(ns, k)) for ns, k in keys],
                     window=64, timeout=30)
    for (ns, k), (st, v) in zip(keys, res):
        if st == A.OK and A.verify(k, v):
            right += 1
        elif st == A.OK:
            bad.append("WRONG BYTES for a key")
        elif st in (A.ENOTFOUND, A.ECORRUPT):
            miss += 1
        else:
            bad.append("GET status %d %r" % (st, v))
    st = r.stats()
    r.close()
    counted = st.get("l3_checksum_failures", 0) + st.get("misses_corrupt", 0)
    rc2 = d.stop(timeout=30)
    if rc2 != 0:
        bad.append("SIGTERM: %s" % A.describe_status(rc2))
    shutil.rmtree(d.dir, ignore_errors=True)
    return bad, right, miss, (rc, counted)


def body(scn):
    pristine, keys = make_store(scn)
    rdir = os.path.join(pristine, "l3")
    regions = sorted(f for f in os.listdir(rdir) if f.endswith(".dat"))
    used = [f for f in regions
            if os.stat(os.path.join(rdir, f)).st_blocks > 0][:2] or regions
    trials = [("truncate %s to %d" % (used[0], n), ("truncate", used[0], n))
              for n in (0, 4096, 2 * A.MiB)]
    for t in range(TRIALS):
        rng = random.Random(SEED * 7919 + t)
        f = rng.choice(used)
        flips = []
        for _ in range(rng.randint(1, 64)):
            off = rng.randrange(1 * A.MiB)
            if rng.random() < 0.5:
                off = off // 4096 * 4096 + rng.randrange(64)  # a header
            flips.append((off, rng.randrange(8)))
        trials.append(("seed %d trial %d: %d flips in %s" % (
            SEED, t, len(flips), f), ("flip", f, flips)))
    broken = []
    tot_right = tot_miss = tot_counted = check_found = 0
    for i, (tag, (kind, f, arg)) in enumerate(trials):
        data = os.path.join(scn.dir, "trial-%d" % i)
        shutil.copytree(pristine, data)
        p = os.path.join(data, "l3", f)
        if kind == "truncate":
            os.truncate(p, arg)
        else:
            with open(p, "r+b") as fh:
                for off, bit in arg:
                    fh.seek(off)
                    b = fh.read(1)
                    if b:
                        fh.seek(off)
                        fh.write(bytes([b[0] ^ (1 << bit)]))
        bad, right, miss, extra = judge(scn, data, keys)
        if isinstance(extra, tuple):
            rc, counted = extra
            tot_counted += counted
            check_found += rc == 1
            if miss and not counted and kind == "flip":
                bad.append("%d misses but no checksum failure counted" % miss)
        tot_right += right
        tot_miss += miss
        if bad:
            broken.append((tag, bad))
            scn.log("BROKEN %s: %s" % (tag, " / ".join(bad[:3])))
        shutil.rmtree(data, ignore_errors=True)
    scn.note("%d damaged stores: %d right reads, %d misses, %d checksum "
             "failures counted, --check reported damage in %d"
             % (len(trials), tot_right, tot_miss, tot_counted, check_found))
    scn.check(not broken, "damaged regions read back right or as misses, "
              "counted, nothing dies", "%d of %d trials: %s" % (
                  len(broken), len(trials), broken[0][1][0] if broken else ""))


if __name__ == "__main__":
    A.main(body)
