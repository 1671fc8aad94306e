"""Test helper: starts a private kvtierd on a socket in a fresh temporary
directory, with small tiers, and stops it."""

import os
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "..", "..", ".."))


class Daemon:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kvtier-py-")
        self.socket = os.path.join(self.dir, "kvtier.sock")
        self._start()

    def _start(self):
        binary = os.environ.get("KVTIERD") or os.path.join(ROOT, "build",
                                                            "kvtierd")
        self.log = open(os.path.join(self.dir, "kvtierd.log"), "ab")
        env = dict(os.environ)
        # The daemon is not a Python process: no sanitizer preload for it
        # unless it was built with one (then it links the runtime itself).
        env.pop("LD_PRELOAD", None)
        # test_python.sh relaxes ASAN_OPTIONS for Python; not for the daemon.
        if "KVTIERD_ASAN_OPTIONS" in env:
            env["ASAN_OPTIONS"] = env["KVTIERD_ASAN_OPTIONS"]
        try:
            self.proc = subprocess.Popen(
                [binary, "--socket", self.socket,
                 "--data-dir", os.path.join(self.dir, "data"),
                 "--l1-size", "8M", "--l2-size", "8M", "--l3-size", "64M",
                 "--l3-region-size", "16M", "--log-level", "warn"],
                stdout=self.log, stderr=subprocess.STDOUT, env=env)
        except OSError:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("kvtierd exited at start (%s): %s" %
                                   (self.proc.returncode, self.logtext()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("kvtierd did not create its socket")
            time.sleep(0.02)

    def logtext(self):
        try:
            with open(os.path.join(self.dir, "kvtierd.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def pause(self):
        """Stops kvtierd with SIGTERM (which spills L1 and L2 to L3),
        keeping its data directory for resume()."""
        rc = self._terminate()
        self.log.close()
        if rc != 0:
            raise RuntimeError("kvtierd exited %s on SIGTERM: %s"
                               % (rc, self.logtext()))
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def resume(self):
        """Starts a new kvtierd on the same socket and data directory."""
        self._start()

    def restart(self):
        self.pause()
        self.resume()

    def _terminate(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop(self):
        self._terminate()
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
