"""Hostile data directories (issue #17, "the habit"): a data directory the
daemon cannot write.

  readonly-fs  a store on a tmpfs that is then remounted read-only;
  foreign      a store made by root, then a daemon run as uid 65534 that
               may read but not write it (the issue: start-up errors such
               as "Permission denied" do not name the path).

Promise, in both: kvtierd and `kvtierd --check` never die of a signal and
never hang; --check of the consistent store succeeds on the read-only
filesystem (a check writes nothing); the daemon either starts and serves the stored blocks right
(or as misses), or exits with a message that names the path it could not
use and the reason.  Needs root (mount, setuid); skipped otherwise.  About
3 s.
"""
import os
import re

import abuse as A

GEOMETRY = ["--l3-size", "16M", "--l3-region-size", "4M"]


def make_store(scn, data):
    d = scn.daemon(GEOMETRY + ["--l1-size", "16M"], data=data, small=False,
                   name="maker")
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    r = d.raw()
    keys = []
    for i in range(50):
        v = A.value_for(("ro", i), 1000 + i * 100)
        k = A.key_for(v)
        assert r.put("ro", k, v) == A.OK
        keys.append(("ro", k))
    r.close()
    assert d.stop() == 0
    return keys


def judge(scn, case, d, keys, reason_re):
    rc, out = A.run([A.KVTIERD, "--check", "--data-dir", d.data] + GEOMETRY,
                    timeout=60,
                    env=None)
    scn.check(rc != "timeout" and rc >= 0, "%s: --check does not die or "
              "hang" % case, "%s" % (rc if rc == "timeout" else
                                     A.describe_status(rc)))
    scn.log("%s: --check exit %s: %s" % (case, rc, out.strip()[-200:]))
    if case == "readonly-fs":
        # A check changes nothing (break 1), so it works on a read-only
        # filesystem.
        scn.check(rc == 0, "%s: --check of a consistent store succeeds on "
                  "a read-only filesystem" % case, "exit %s: %s"
                  % (rc, out.strip().splitlines()[-1][-160:]))
    ok = d.start(timeout=20)
    if not ok:
        if d.alive():
            d.kill()
            scn.check(False, "%s: the daemon does not hang at start" % case)
            return
        rc = d.returncode()
        msg = d.log()
        last = [l for l in msg.splitlines() if l.strip()]
        scn.log("%s: refused, %s: %s" % (case, A.describe_status(rc),
                                         " / ".join(last[-2:])[-300:]))
        scn.check(rc >= 0, "%s: the daemon does not die of a signal" % case,
                  A.describe_status(rc))
        names = [l for l in last if d.data in l and re.search(reason_re, l)]
        scn.check(names, "%s: the refusal names the path and the reason"
                  % case, (last[-1] if last else "no message")[-200:])
        return
    r = d.raw()
    right = miss = wrong = 0
    for ns, k in keys:
        st, v = r.get(ns, k)
        if st == A.OK:
            right += A.verify(k, v)
            wrong += not A.verify(k, v)
        else:
            miss += 1
    r.close()
    scn.log("%s: started; %d right, %d misses" % (case, right, miss))
    scn.check(wrong == 0, "%s: no wrong bytes" % case)
    rc = d.stop()
    scn.check(rc is not None and rc >= 0, "%s: stops without a signal"
              % case, A.describe_status(rc))


def body(scn):
    if os.geteuid() != 0:
        raise A.Skip("needs root (mount, setuid)")
    # A store on a tmpfs remounted read-only.
    fs = scn.mount_tmpfs("rofs", 64 * A.MiB)
    if not fs:
        scn.note("readonly-fs: SKIPPED (tmpfs mount failed)")
    else:
        data = os.path.join(fs, "var")
        keys = make_store(scn, data)
        if not scn.remount(fs, "ro"):
            scn.note("readonly-fs: SKIPPED (remount ro failed)")
        else:
            d = scn.daemon(GEOMETRY, data=data, small=False, name="ro")
            judge(scn, "readonly-fs", d, keys, r"[Rr]ead-only")
    # A store the daemon's user may read but not write.
    for p in (scn.dir, os.path.dirname(scn.dir)):
        if "kvtier-abuse" in p:
            os.chmod(p, 0o755)
    data = os.path.join(scn.mkdir("foreign"), "var")
    keys = make_store(scn, data)
    d = scn.daemon(GEOMETRY, data=data, small=False, name="foreign",
                   user=65534)
    os.chmod(d.dir, 0o777)
    judge(scn, "foreign", d, keys, r"[Pp]ermission denied|EACCES")


if __name__ == "__main__":
    A.main(body)
