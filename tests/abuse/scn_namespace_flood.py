"""Floods (issue #17, "the habit"): namespaces.

N namespaces of 1 to 3 blocks each, a tenth of them (the largest) bound to
another user by --ns-owner, are created through pipelined PUTs; then every
block is read back, half of the namespaces are dropped, and all read
again.

Promise: every block reads back right; DROP removes exactly its namespace
(its blocks miss, the others' stay); namespaces_total counts them; and
STATS shown to another user does not list the names (or sizes) of
namespaces bound to an owner (the issue's smaller item: HOT already
filters them, STATS does not).  Needs root for the last part (a child
drops to uid 65534).  N = 5000 x ABUSE_SCALE; about 3 s.
"""
import json
import os

import abuse as A

N = A.scaled(5000)
OWNER = 65533


def body(scn):
    for p in (scn.dir, os.path.dirname(scn.dir)):
        if "kvtier-abuse" in p:
            os.chmod(p, 0o755)
    d = scn.daemon(["--l3-size", "0", "--socket-mode", "0666",
                    "--ns-owner", "secret/=%d" % OWNER], small=False)
    os.chmod(d.dir, 0o755)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    r = d.raw(timeout=60)
    keys, frames = [], []
    for i in range(N):
        ns = ("secret/tenant-%05d" if i % 10 == 1 else "flood-%05d") % i
        for j in range(1 + i % 3):
            # The bound namespaces are the largest, so that STATS's report
            # of the 64 largest shows them.
            v = A.value_for(("nsf", i, j), (4096 if i % 10 == 1 else 64) + j)
            k = A.key_for(v)
            keys.append((ns, k))
            frames.append((A.PUT, A.put_body(ns, k, v)))
    res = r.pipeline(frames, window=1000, timeout=60)  # as root: allowed
    scn.check(all(st == A.OK for st, _ in res), "%d blocks in %d namespaces "
              "stored" % (len(keys), N))

    def read_all():
        got = r.pipeline([(A.GET, A.key_body(ns, k)) for ns, k in keys],
                         window=1000, timeout=60)
        out = {}
        for (ns, k), (st, v) in zip(keys, got):
            out[(ns, k)] = "right" if st == A.OK and A.verify(k, v) else \
                "wrong" if st == A.OK else "miss" if st == A.ENOTFOUND else \
                "error %d" % st
        return out

    first = read_all()
    scn.check(all(x == "right" for x in first.values()), "every block reads "
              "back right", "%d not right" % sum(1 for x in first.values()
                                                  if x != "right"))
    st = r.stats()
    scn.check(st.get("namespaces_total") == N, "namespaces_total is %d" % N,
              "%r" % st.get("namespaces_total"))
    dropped = set()
    bad_drop = 0
    for i in range(0, N, 2):
        ns = "flood-%05d" % i
        s, n = r.drop(ns)
        bad_drop += s != A.OK or n != 1 + i % 3
        dropped.add(ns)
    scn.check(bad_drop == 0, "each DROP removes its namespace's blocks",
              "%d DROPs failed or counted wrong" % bad_drop)
    second = read_all()
    wrong = [(ns, x) for (ns, k), x in second.items()
             if x != ("miss" if ns in dropped else "right")]
    scn.check(not wrong, "DROP removes exactly its namespace",
              "%d blocks wrong, e.g. %s" % (len(wrong), wrong[:2]))
    r.close()

    if os.geteuid() != 0:
        scn.note("stats visibility: SKIPPED (needs root)")
        return
    out = os.path.join(scn.dir, "stats.json")
    open(out, "w").close()
    os.chmod(out, 0o666)

    def as_other():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        with A.Raw(d.sock, 30) as c:
            with open(out, "w") as f:
                json.dump(c.stats(), f)
        return 0

    pid = scn.fork(as_other)
    _, status = os.waitpid(pid, 0)
    scn.children.remove(pid)
    if not scn.check(os.waitstatus_to_exitcode(status) == 0,
                     "uid 65534 reads STATS"):
        return
    text = open(out).read()
    leaked = text.count("secret/")
    scn.note("%d namespaces; STATS as uid 65534 names %d namespaces bound "
             "to uid %d" % (N, leaked, OWNER))
    scn.check(leaked == 0, "STATS does not show other owners' namespaces to "
              "another user", "%d 'secret/...' names in its namespaces "
              "report" % leaked)


if __name__ == "__main__":
    A.main(body)
