"""Hostile data directories (issue #17, "the habit"): a full filesystem.

A loop-mounted ext4 image of FS_MIB MiB (a tmpfs with size= where loop
devices are unavailable; skipped, with a line saying so, when neither can
be mounted).

  too-big   --l3-size larger than the filesystem: the daemon refuses to
            start, with a message naming the path and "No space left", and
            leaves no preallocated region files filling the disk (the
            issue's smaller item: they stay);
  filled    a daemon whose L3 fits; then the rest of the filesystem is
            filled with a junk file, and blocks keep coming: the daemon
            keeps serving (RAM, and L3's old blocks right or as misses),
            counts and logs the failed L3 writes (warn/error naming L3),
            DROP succeeds, and once the junk file is removed, L3 takes new
            blocks again (they are served after L1 has dropped them).

Never a wrong byte.  Needs root; about 10 s.
"""
import os
import re
import time

import abuse as A

FS_MIB = 96


def fs_free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def push(d, tag, n, size):
    r = d.raw(timeout=60)
    keys, frames = [], []
    for i in range(n):
        v = A.value_for((tag, i), size)
        k = A.key_for(v)
        keys.append((tag, k))
        frames.append((A.PUT, A.put_body(tag, k, v)))
    res = r.pipeline(frames, window=64, timeout=60)
    r.close()
    return keys, [st for st, _ in res]


def read(d, keys):
    r = d.raw(timeout=60)
    right = miss = wrong = err = 0
    for ns, k in keys:
        st, v = r.get(ns, k)
        if st == A.OK:
            if A.verify(k, v):
                right += 1
            else:
                wrong += 1
        elif st in (A.ENOTFOUND, A.ECORRUPT):
            miss += 1
        else:
            err += 1
    r.close()
    return right, miss, wrong, err


def body(scn):
    if os.geteuid() != 0:
        raise A.Skip("needs root (mount)")
    fs = scn.mount_loop_ext4("fullfs", FS_MIB * A.MiB)
    kind = "ext4 on a loop device"
    if not fs:
        fs = scn.mount_tmpfs("fullfs", FS_MIB * A.MiB)
        kind = "tmpfs"
    if not fs:
        raise A.Skip("neither a loop-mounted ext4 nor a tmpfs can be mounted")
    scn.log("filesystem: %s, %d MiB free" % (kind, fs_free(fs) >> 20))

    # too-big: --l3-size larger than the filesystem.
    free0 = fs_free(fs)
    data = os.path.join(fs, "big")
    d = scn.daemon(["--l3-size", "256M", "--l3-region-size", "16M"],
                   data=data, small=False, name="toobig")
    started = d.start(timeout=30)
    if started:
        scn.check(False, "too-big: the daemon refuses an --l3-size larger "
                  "than the filesystem", "it started")
        d.stop()
    else:
        rc = d.returncode()
        lines = [l for l in d.log().splitlines() if l.strip()]
        scn.log("too-big: %s: %s" % (A.describe_status(rc),
                                     (lines[-1] if lines else "")[-200:]))
        scn.check(rc is not None and rc > 0, "too-big: refused with an exit "
                  "status, not a signal or a hang", A.describe_status(rc))
        scn.check([l for l in lines if data in l and "No space" in l],
                  "too-big: the message names the path and 'No space left'",
                  (lines[-1] if lines else "no message")[-160:])
    left = A.tree_state(data) if os.path.isdir(data) else {}
    regions = sorted(k for k in left if k.endswith(".dat"))
    free1 = fs_free(fs)
    scn.check(free0 - free1 < 4 * A.MiB, "too-big: the failed start "
              "leaves no preallocated region files filling the disk",
              "%d region files left, free space %d -> %d MiB"
              % (len(regions), free0 >> 20, free1 >> 20))
    for rel in regions:
        os.unlink(os.path.join(data, rel))

    # filled: L3 fits, then the filesystem fills up under it.
    data = os.path.join(fs, "var")
    d = scn.daemon(["--l3-size", "32M", "--l3-region-size", "4M",
                    "--l1-size", "4M", "--l2-size", "0", "--no-spill"],
                   data=data, small=False, name="filled")
    if not scn.check(d.start(), "filled: the daemon starts",
                     d.log()[-300:]):
        return
    old, sts = push(d, "old", 1000, 8000)
    d.settle()
    junk = os.path.join(fs, "junk")
    with open(junk, "wb") as f:
        chunk = b"\0" * A.MiB
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    try:
        with open(junk + "2", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    scn.log("filled: %d KiB free after the junk file" % (fs_free(fs) >> 10))
    st0 = d.stats()
    mark = d.log_mark()
    new, sts = push(d, "during", 6000, 8000)
    st1 = d.settle()
    scn.check(d.alive(), "filled: the daemon keeps running")
    if not d.alive():
        return
    right, miss, wrong, err = read(d, old + new)
    scn.log("filled: %d PUTs, %d refused; reads: %d right, %d misses, %d "
            "errors; l3_write_errors %d -> %d"
            % (len(sts), sum(1 for s in sts if s != A.OK), right, miss, err,
               st0["l3_write_errors"], st1["l3_write_errors"]))
    scn.check(wrong == 0, "filled: no wrong bytes", "%d wrong" % wrong)
    scn.check(err == 0, "filled: GETs answer right or miss, never an error",
              "%d errors" % err)
    errs = st1["l3_write_errors"] - st0["l3_write_errors"]
    logged = [l for l in d.log_since(mark).splitlines()
              if re.search(r"level=(warn|error)", l) and
              re.search(r"l3|index", l)]
    if errs:
        scn.check(logged, "filled: the %d failed L3 writes are logged" % errs,
                  "no warn/error line names L3")
    else:
        scn.log("filled: no L3 write failed (the index had room)")
    st, what = d.raw().drop("old", timeout=60)
    scn.check(st == A.OK, "filled: DROP succeeds on a full filesystem",
              "status %d: %s" % (st, what))
    # Room again: L3 must take new blocks.
    os.unlink(junk)
    if os.path.exists(junk + "2"):
        os.unlink(junk + "2")
    after, sts = push(d, "after", 3000, 8000)
    st2 = d.settle()
    right, miss, wrong, err = read(d, after[:1500])
    scn.note("full %s: during the fill %d L3 write errors (%d logged "
             "lines); after freeing space, %d of 1500 older new blocks "
             "served from L3 (%d misses)" % (kind, errs, len(logged), right,
                                             miss))
    scn.check(wrong == 0, "recovered: no wrong bytes")
    scn.check(right >= 1400, "recovered: L3 takes new blocks once the disk "
              "has room", "%d of 1500 served, %d misses, l3_write_errors "
              "%d" % (right, miss, st2["l3_write_errors"]))
    d.stop()


if __name__ == "__main__":
    A.main(body)
