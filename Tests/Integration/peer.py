"""Tiny TCP tools for interception tests, run inside a pod with `ip netns exec`.

  peer.py serve PORT [PORT...]   answer every connection with "IP PORT\\n" (the
                                 peer address the server sees), then close
  peer.py ask HOST PORT [T]      connect, print the server's line; exit 2 if
                                 refused or reset, 3 on timeout, 4 otherwise
  peer.py slowserve PORT N RATE  to each connection, N pseudo-random bytes at RATE
                                 bytes/s, then FIN; prints "serving SHA256"
  peer.py fetch HOST PORT        read to end; prints the byte count and SHA-256
  peer.py many HOST PORT N [R]   N connections one after another (at most R per
                                 second if given); prints how many got an answer,
                                 then the seconds taken
  peer.py sink PORT              read each connection to its end, then answer
                                 "COUNT SHA256\n" and close (half-close both ways)
  peer.py push HOST PORT N       send N pseudo-random bytes, shut down writing, print
                                 the server's answer and the local "COUNT SHA256"
"""

import selectors
import socket
import sys


def serve(ports):
    sel = selectors.DefaultSelector()
    for port in ports:
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            s.listen(512)
            sel.register(s, selectors.EVENT_READ)
    print("serving", flush=True)
    while True:
        for key, _ in sel.select():
            try:
                c, peer = key.fileobj.accept()
                c.sendall(("%s %d\n" % (peer[0], peer[1])).encode())
                c.close()
            except OSError:
                pass


def ask(host, port, timeout):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        if not data:
            print("closed without an answer")
            return 2
        print(data.decode().strip())
        return 0
    except (ConnectionRefusedError, ConnectionResetError) as e:
        print("refused: %s" % e)
        return 2
    except socket.timeout:
        print("timeout")
        return 3
    except OSError as e:
        print("error: %s" % e)
        return 4


def payload(n):
    import random
    rng = random.Random(1234)
    chunk = 1 << 24     # randbytes() of more than 256 MiB overflows
    return b"".join(rng.randbytes(min(chunk, n - off)) for off in range(0, n, chunk))


def slowserve(port, n, rate):
    import hashlib
    import threading
    import time
    data = payload(n)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    print("serving", hashlib.sha256(data).hexdigest(), flush=True)

    def send(c):
        try:
            t0 = time.monotonic()
            chunk = 65536
            for off in range(0, n, chunk):
                delay = t0 + off / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                c.sendall(data[off:off + chunk])
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
        except OSError:
            pass
        finally:
            c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=send, args=(c,), daemon=True).start()


def fetch(host, port):
    import hashlib
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(60)
    h = hashlib.sha256()
    total = 0
    try:
        s.connect((host, port))
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            h.update(b)
            total += len(b)
    except OSError as e:
        print(total, h.hexdigest(), "error: %s" % e)
        return 2
    print(total, h.hexdigest())
    return 0


def many(host, port, n, rate=0.0):
    import time
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ok = 0
    t0 = time.monotonic()
    for i in range(n):
        if rate > 0:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect((host, port))
            if s.recv(256):
                ok += 1
        except OSError:
            pass
        finally:
            s.close()
    print(ok, "%.3f" % (time.monotonic() - t0))
    return 0


def sink(port):
    import hashlib
    import threading
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    print("serving", flush=True)

    def drain(c):
        h = hashlib.sha256()
        total = 0
        try:
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                h.update(b)
                total += len(b)
            c.sendall(("%d %s\n" % (total, h.hexdigest())).encode())
        except OSError:
            pass
        finally:
            c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()


def push(host, port, n):
    import hashlib
    data = payload(n)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        s.connect((host, port))
        view = memoryview(data)
        for off in range(0, n, 1 << 20):
            s.sendall(view[off:off + (1 << 20)])
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            answer += b
    except OSError as e:
        print("error: %s" % e)
        return 2
    print(answer.decode().strip())
    print(n, hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    elif sys.argv[1] == "push":
        sys.exit(push(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    elif sys.argv[1] == "slowserve":
        slowserve(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "fetch":
        sys.exit(fetch(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1] == "many":
        sys.exit(many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                      float(sys.argv[5]) if len(sys.argv) > 5 else 0.0))
    else:
        sys.exit(ask(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 3.0))
