#!/usr/bin/env python3
"""Idle-connection holder (runs in the server netns S).

Accepts TCP connections on HOST:PORT and keeps them open without reading or
writing. The number of currently accepted connections is written to COUNTFILE
(atomically) whenever it changes, so the bench script can tell when all
upstream connections made by the proxy have arrived. Exits by itself after
MAXSECS seconds, or when killed by the bench script (by PID).
"""
import os, resource, selectors, socket, sys, time

host, port, countfile, maxsecs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, port))
ls.listen(4096)
ls.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(ls, selectors.EVENT_READ, None)

conns = {}
def publish():
    tmp = countfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % len(conns))
    os.replace(tmp, countfile)

publish()
deadline = time.monotonic() + maxsecs
while time.monotonic() < deadline:
    changed = False
    for key, _ in sel.select(timeout=0.2):
        if key.data is None:
            while True:
                try:
                    c, _ = ls.accept()
                except (BlockingIOError, InterruptedError):
                    break
                c.setblocking(False)
                conns[c.fileno()] = c
                sel.register(c, selectors.EVENT_READ, "c")
                changed = True
        else:
            c = key.fileobj
            try:
                data = c.recv(4096)
            except OSError:
                data = b""
            if not data:  # peer closed
                sel.unregister(c)
                conns.pop(c.fileno(), None)
                c.close()
                changed = True
    if changed:
        publish()
