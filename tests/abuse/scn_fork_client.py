"""Issue #17 break 5: a client used after fork() silently returns another
key's value (6 of 8 trials in the issue; Python's multiprocessing forks by
default on Linux).

Promise: in a child process, the first call on a connection made by the
parent fails with a clear error (Python: a kvtier.Error whose message says
fork; C: an error code other than KVT_ENOTFOUND), never data and never
another key's bytes; the parent's connection keeps working.

Python: TRIALS forks of a process whose Client has values put under
content-derived keys; child and parent GET at the same time through the
same Client.  C: build/tests/abuse/abuse_fork_client, the same with
libkvtier.a.  About 5 s.
"""
import os
import re
import sys
import time

import abuse as A

TRIALS = A.scaled(8)
KEYS = 64


def body(scn):
    import kvtier

    d = scn.daemon(["--l3-size", "0"], small=False)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    c = kvtier.Client(d.sock)
    keys = []
    for i in range(KEYS):
        v = A.value_for(("fork", i), 4096)
        k = A.key_for(v)
        c.put(k, v, ns="fork")
        keys.append(k)
    child_keys, parent_keys = keys[:KEYS // 2], keys[KEYS // 2:]
    out = os.path.join(scn.dir, "child.txt")

    def child(trial):
        """0: raised at once with a clear message; 1: got data; 2: wrong
        bytes; 3: raised, but not clearly; 4: misses."""
        got_data = False
        for i in range(200):
            k = child_keys[(i * 7 + trial) % len(child_keys)]
            try:
                v = c.get(k, ns="fork")
            except kvtier.Error as e:
                with open(out, "a") as f:
                    f.write("%d %d %s: %s\n" % (trial, i, type(e).__name__, e))
                if i > 0:
                    return 1 if got_data else 4
                return 0 if re.search("fork", str(e), re.I) else 3
            if v is None:
                continue
            if not A.verify(k, v):
                return 2
            got_data = True
        return 1 if got_data else 4

    tally = {}
    p_wrong = p_err = 0
    for t in range(TRIALS):
        pid = scn.fork(child, t)
        for i in range(400):
            k = parent_keys[i % len(parent_keys)]
            try:
                v = c.get(k, ns="fork")
                if v is not None and not A.verify(k, v):
                    p_wrong += 1
            except kvtier.Error as e:
                p_err += 1
                c = kvtier.Client(d.sock)
        _, st = os.waitpid(pid, 0)
        scn.children.remove(pid)
        code = os.waitstatus_to_exitcode(st)
        what = {0: "raised a clear error at once", 1: "got data",
                2: "got ANOTHER KEY'S VALUE", 3: "raised, message without "
                "'fork'", 4: "got misses", 99: "crashed"}.get(code, "died")
        tally[what] = tally.get(what, 0) + 1
    lines = open(out).read().splitlines() if os.path.exists(out) else []
    scn.note("Python, %d trials: %s; parent: %d wrong, %d errors%s"
             % (TRIALS, ", ".join("%s %d" % kv for kv in sorted(tally.items())),
                p_wrong, p_err,
                ("; first child error: " + lines[0][:120]) if lines else ""))
    wrong = tally.get("got ANOTHER KEY'S VALUE", 0)
    scn.check(wrong == 0 and p_wrong == 0, "Python: no process gets another "
              "key's value", "child %d, parent %d trials/reads" % (wrong,
                                                                   p_wrong))
    scn.check(tally.get("raised a clear error at once", 0) == TRIALS,
              "Python: the child's first call raises kvtier.Error naming "
              "fork", "%r" % tally)
    scn.check(p_err == 0, "Python: the parent's Client keeps working",
              "%d errors" % p_err)

    exe = os.path.join(A.BUILD, "tests", "abuse", "abuse_fork_client")
    if not os.path.exists(exe):
        scn.check(False, "C: %s is built (make tests-build)" % exe)
        return
    rc, text = A.run([exe, d.sock, str(TRIALS)], timeout=120)
    summary = [l for l in text.splitlines() if l.startswith("trials=")]
    scn.log("C: " + " / ".join(text.splitlines()[-4:]))
    scn.note("C: " + (summary[0] if summary else "no summary, exit %s" % rc))
    m = dict(re.findall(r"(\w+)=(\d+)", summary[0])) if summary else {}
    scn.check(m.get("child_wrong") == "0" and m.get("parent_wrong") == "0",
              "C: no process gets another key's value", summary[:1])
    scn.check(rc == 0, "C: the child's first call fails with an error code, "
              "the parent's handle keeps working",
              summary[0] if summary else "exit %s" % rc)


if __name__ == "__main__":
    A.main(body)
