#!/usr/bin/env python3
"""Open N idle TCP connections to HOST:PORT and hold them (runs in client netns C).

Writes the number of established connections to READYFILE once all are open
(or on failure, "ERR <n> <error>"), then sleeps until killed by the bench script
(by PID) or until HOLDSECS have passed, then closes everything and exits.
"""
import os, resource, socket, sys, time

host, port, n, readyfile, holdsecs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def publish(text):
    tmp = readyfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, readyfile)

socks = []
try:
    for i in range(n):
        s = socket.create_connection((host, port), timeout=10)
        socks.append(s)
except OSError as e:
    publish("ERR %d %s" % (len(socks), e))
else:
    publish("%d" % len(socks))
time.sleep(holdsecs)
for s in socks:
    s.close()
