"""Hostile operators (issue #17, smaller items): restarting with a smaller
--l3-size drops the entries of the regions beyond the new count, without a
log line.

A store of 4 regions of 4M, nearly full, is restarted with --l3-size 8M.
Promise: the daemon starts; the restart logs (warn) that entries were
dropped, with their number; every block is then served right or as a
miss, never a wrong byte; L3's entry count matches what is served.
About 2 s.
"""
import re

import abuse as A


def body(scn):
    d = scn.daemon(["--l3-size", "16M", "--l3-region-size", "4M",
                    "--l1-size", "4M", "--l2-size", "0"], small=False)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    r = d.raw()
    keys, frames = [], []
    for i in range(1500):
        v = A.value_for(("shrink", i), 6000)
        k = A.key_for(v)
        keys.append(("shrink", k))
        frames.append((A.PUT, A.put_body("shrink", k, v)))
    assert all(st == A.OK for st, _ in r.pipeline(frames, window=64))
    r.close()
    assert d.stop() == 0
    d.args = ["--l3-size", "8M", "--l3-region-size", "4M"]
    mark = d.log_mark()
    if not scn.check(d.start(), "restart with --l3-size 8M", d.log()[-300:]):
        return
    st = d.stats()
    with d.raw() as c:
        res = c.pipeline([(A.GET, A.key_body(ns, k)) for ns, k in keys])
    right = sum(1 for (ns, k), (s, v) in zip(keys, res)
                if s == A.OK and A.verify(k, v))
    wrong = sum(1 for (ns, k), (s, v) in zip(keys, res)
                if s == A.OK and not A.verify(k, v))
    lost = len(keys) - right
    lines = [l for l in d.log_since(mark).splitlines()
             if re.search(r"level=(warn|error)", l) and
             re.search(r"drop|lost|discard|remov", l, re.I) and
             re.search(r"=\d+|\b\d+ ", l)]
    scn.note("%d blocks before; after shrinking to 8M: %d served, %d lost, "
             "l3.entries %d; warn lines about it: %d"
             % (len(keys), right, lost, st["l3"]["entries"], len(lines)))
    scn.check(wrong == 0, "no wrong bytes")
    if lost:
        scn.check(lines, "the restart logs how many entries the smaller L3 "
                  "dropped", "no warn line")
    d.stop()


if __name__ == "__main__":
    A.main(body)
