"""Issue #17 break 6: SIGHUP silently ignores changes to allow-uid,
ns-owner, max-value-size and idle-timeout (the log says changed=0), and a
revoked uid keeps connecting and writing.

Promise: after SIGHUP with a changed config file,
  - allow-uid: a uid no longer listed gets no further request served on
    the connection it already has (denied or closed) and cannot connect;
  - ns-owner: a namespace bound to another uid is denied to the old owner,
    on its existing connection too;
  - max-value-size: a value over the new limit is refused (new connection);
  - idle-timeout: an idle new connection is closed after the new timeout;
  - the log names each of the four settings (applied, or needing a
    restart), and does not say changed=0.

Running as root, children drop to uid 65534 (the revoked writer) and 65533
(the namespace owner that loses its namespace), as tests/integ/test_access.c
does.  Skipped when not root.  About 8 s.
"""
import os
import select
import struct
import time

import abuse as A

REVOKED, OWNER = 65534, 65533
BEFORE = """allow-uid = 0,%d,%d
ns-owner = tenantA/=%d
max-value-size = 1M
idle-timeout = 0
socket-mode = 0666
""" % (REVOKED, OWNER, OWNER)
AFTER = """allow-uid = 0,%d
ns-owner = tenantA/=65532
max-value-size = 512K
idle-timeout = 2
socket-mode = 0666
""" % OWNER
SETTINGS = ("allow-uid", "ns-owner", "max-value-size", "idle-timeout")


def writer(sock, uid, ns, wfd, reconnect_flag):
    """As uid: PUTs into ns every 20 ms on one connection and reports each
    status on wfd ("<conn> <time> <status>"); once reconnect_flag exists,
    also tries a new connection each time."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    out = os.fdopen(wfd, "w", buffering=1)
    try:
        r = A.Raw(sock, 5)
    except OSError as e:
        out.write("old %f connect-%s\n" % (time.time(), e.__class__.__name__))
        return 0
    end = time.time() + 6
    i = 0
    old_open = True
    while time.time() < end:
        i += 1
        v = A.value_for((uid, i), 64)
        if old_open:
            try:
                st = r.put(ns, A.key_for(v), v)
            except (OSError, A.Closed):
                st = "closed"
            out.write("old %f %s\n" % (time.time(), st))
            old_open = st != "closed"
        if os.path.exists(reconnect_flag):
            try:
                n = A.Raw(sock, 5)
                try:
                    st2 = n.put(ns, A.key_for(v), v)
                except (OSError, A.Closed):
                    st2 = "closed"
                n.close()
            except OSError as e:
                st2 = "refused"
            out.write("new %f %s\n" % (time.time(), st2))
        time.sleep(0.02)
    return 0


def body(scn):
    if os.geteuid() != 0:
        raise A.Skip("needs root (setuid children play other users)")
    for p in (scn.dir, os.path.dirname(scn.dir)):
        if "kvtier-abuse" in p:
            os.chmod(p, 0o755)
    cfg = os.path.join(scn.dir, "kvtierd.conf")
    with open(cfg, "w") as f:
        f.write(BEFORE)
    d = scn.daemon(["--l3-size", "0", "--config", cfg], small=False)
    os.chmod(d.dir, 0o755)
    if not d.start():
        raise RuntimeError("daemon did not start: " + d.log()[-400:])
    flag = os.path.join(scn.dir, "reloaded")
    pipes = {}
    for who, uid, ns in (("revoked", REVOKED, "w%d/" % REVOKED),
                         ("owner", OWNER, "tenantA/x")):
        rfd, wfd = os.pipe()
        scn.fork(lambda u=uid, n=ns, w=wfd, rf=rfd:
                 (os.close(rf), writer(d.sock, u, n, w, flag))[1])
        os.close(wfd)
        pipes[who] = os.fdopen(rfd)
    root = d.raw()
    big = A.value_for("big", 768 * 1024)
    st_before = root.put_big("root", A.key_for(big), big)
    scn.check(st_before == A.OK, "before: a 768K PUT is within "
              "max-value-size 1M", "status %s" % st_before)
    root.close()
    time.sleep(1.0)
    with open(cfg, "w") as f:
        f.write(AFTER)
    mark = d.log_mark()
    t_hup = time.time()
    d.hup()
    time.sleep(0.5)
    open(flag, "w").close()
    t_applied = t_hup + 0.5
    time.sleep(1.0)

    # max-value-size, on a new connection.
    r = d.raw()
    _, hello = r.request(A.HELLO, struct.pack("<II", 1, 0))
    max_value = struct.unpack_from("<Q", hello, 16)[0]
    st_after = r.put_big("root", A.key_for(big), big)
    r.close()
    scn.check(st_after in (A.ETOOBIG, "closed") and max_value == 512 * 1024,
              "max-value-size 1M -> 512K applies: a 768K PUT is refused",
              "PUT status %s, HELLO max_value %d" % (st_after, max_value))

    # idle-timeout 0 -> 2 s, on a new connection.
    idle = d.raw()
    t = time.time()
    closed = False
    while time.time() - t < 5:
        if select.select([idle.s], [], [], 0.25)[0]:
            closed = idle.s.recv(16) == b""
            break
    scn.check(closed, "idle-timeout 0 -> 2 applies: an idle connection is "
              "closed within 5 s", "still open after %.1f s"
              % (time.time() - t))
    idle.close()

    # The children's view.
    results = {}
    for who, f in pipes.items():
        lines = f.read().split("\n")
        results[who] = [l.split() for l in lines if l]
    for pid in list(scn.children):
        os.waitpid(pid, 0)
        scn.children.remove(pid)

    def after(who, conn):
        return [s for c, t, s in results[who]
                if c == conn and float(t) > t_applied]

    rev_old, rev_new = after("revoked", "old"), after("revoked", "new")
    before_ok = [s for c, t, s in results["revoked"]
                 if c == "old" and float(t) < t_hup and s == "0"]
    scn.check(before_ok, "before: uid %d writes" % REVOKED)
    scn.check([s for c, t, s in results["owner"]
               if c == "old" and float(t) < t_hup and s == "0"],
              "before: uid %d writes its namespace tenantA/" % OWNER)
    # The daemon may refuse or close the old connection at once: look at
    # everything it answered from the SIGHUP on (a PUT answered between the
    # signal and the reload is allowed), and require a refusal or a close
    # and no PUT served once the reload had time to apply.
    rev_since = [(float(t), s) for c, t, s in results["revoked"]
                 if c == "old" and float(t) > t_hup]
    served = [s for s in rev_old if s == "0"]
    scn.check(any(s != "0" for _, s in rev_since) and not served,
              "allow-uid: the revoked uid's existing connection gets no "
              "request served after SIGHUP",
              "%d of %d PUTs still succeeded after the reload; since the "
              "signal: %s" % (len(served), len(rev_old),
                              " ".join(s for _, s in rev_since[:8])))
    scn.check(rev_new and all(s != "0" for s in rev_new),
              "allow-uid: the revoked uid cannot connect and write",
              "%d of %d new connections wrote" %
              (sum(1 for s in rev_new if s == "0"), len(rev_new)))
    own_old = after("owner", "old")
    own_ok = [s for s in own_old if s == "0"]
    scn.check(own_old and not own_ok, "ns-owner: the old owner is denied "
              "its namespace on its existing connection",
              "%d of %d PUTs to tenantA/ still succeeded"
              % (len(own_ok), len(own_old)))

    log = d.log_since(mark)
    reload_lines = [l for l in log.splitlines() if "reload" in l]
    for l in reload_lines:
        scn.log("log: " + l[l.find("level="):][:200])
    missing = [s for s in SETTINGS if s not in log]
    scn.check(not missing, "the reload log names every changed setting",
              "not named: %s" % ", ".join(missing))
    scn.check("changed=0" not in log, "the reload log does not say "
              "changed=0")
    scn.note("after SIGHUP: revoked uid %d PUTs served %d/%d (old "
             "connection), %d/%d (new); owner PUTs served %d/%d; 768K PUT "
             "status %s; idle connection closed: %s"
             % (REVOKED, len(served), len(rev_old),
                sum(1 for s in rev_new if s == "0"), len(rev_new),
                len(own_ok), len(own_old), st_after, closed))


if __name__ == "__main__":
    A.main(body)
