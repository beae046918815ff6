"""A stand-in for another mesh node (or an attacker) on Loom's mTLS tunnel port, run
inside a pod with `ip netns exec`. Real OpenSSL handshakes (Python's ssl module).

  tunnelprobe.py mtls HOST PORT CA CERT KEY [DST_IP DST_PORT]
      TLS 1.3 handshake presenting CERT/KEY, verifying the server against CA; prints
      "handshake ok PEER_URI" or "handshake failed: WHY". With DST_IP/DST_PORT, sends
      the PROXY v2 tunnel header and prints the application's first line (or how the
      connection ended).
  tunnelprobe.py garbage HOST PORT      sends 4 KiB of non-TLS bytes; prints how and
                                        when (seconds) the server ended it
  tunnelprobe.py truncated HOST PORT    sends the first half of a real ClientHello and
                                        waits; prints how and when it ended
  tunnelprobe.py slowloris HOST PORT N  opens N connections, each dribbling a
                                        ClientHello one byte every 0.5 s; prints how
                                        many the server closed and the longest wait
"""

import socket
import ssl
import struct
import sys
import time


def proxy_v2(src_ip, src_port, dst_ip, dst_port):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) + struct.pack("!HH", src_port, dst_port)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def ended(sock, timeout):
    """Waits for the server to end the connection: ('closed'|'reset'|'open', seconds)."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return "closed", time.monotonic() - t0
    except ConnectionResetError:
        return "reset", time.monotonic() - t0
    except socket.timeout:
        return "open", time.monotonic() - t0
    except OSError as e:
        return "error %s" % e, time.monotonic() - t0


def mtls(host, port, ca, cert, key, dst=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False           # SPIFFE: the identity is the URI SAN, not a host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    raw = socket.create_connection((host, port), timeout=5)
    try:
        s = ctx.wrap_socket(raw)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed: %s" % e)
        return 2
    peer = [v for k, v in s.getpeercert().get("subjectAltName", ()) if k == "URI"]
    # TLS 1.3: the server checks the client's certificate after the client's Finished, so
    # a refusal arrives as an alert on the first read.
    if dst is None:
        s.settimeout(1.0)
        try:
            b = s.recv(1)
            if not b:
                print("handshake failed: closed by server")
                return 2
        except socket.timeout:
            pass
        except (ssl.SSLError, OSError) as e:
            print("handshake failed: %s" % e)
            return 2
        print("handshake ok", peer[0] if peer else "-")
        return 0
    local = s.getsockname()
    try:
        s.sendall(proxy_v2(local[0], local[1], dst[0], dst[1]))
        s.settimeout(5)
        data = b""
        while not data.endswith(b"\n"):
            b = s.recv(256)
            if not b:
                break
            data += b
    except (ssl.SSLError, OSError) as e:
        print("handshake ok", peer[0] if peer else "-")
        print("ended: %s" % e)
        return 3
    try:
        s.unwrap()       # close_notify: a clean end (without it, Loom sees a truncation)
    except (ssl.SSLError, OSError):
        pass
    print("handshake ok", peer[0] if peer else "-")
    print(data.decode().strip() if data else "ended: closed without an answer")
    return 0 if data else 3


def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def garbage(host, port):
    s = socket.create_connection((host, port), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 15)
    except OSError:
        pass
    how, took = ended(s, 30)
    print(how, "%.2f" % took)


def truncated(host, port):
    hello = client_hello()
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(hello[: len(hello) // 2])
    how, took = ended(s, 30)
    print(how, "%.2f" % took)


def slowloris(host, port, n):
    import selectors
    hello = client_hello()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ)
    t0 = time.monotonic()
    sent = 0
    closed = set()
    last_close = 0.0
    while len(closed) < n and time.monotonic() - t0 < 30:
        for s in socks:
            if s in closed or sent >= len(hello):
                continue
            try:
                s.send(hello[sent:sent + 1])
            except OSError:
                closed.add(s)
                last_close = time.monotonic() - t0
        sent += 1
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0, deadline - time.monotonic())):
                s = key.fileobj
                try:
                    if s.recv(65536):
                        continue
                except OSError:
                    pass
                sel.unregister(s)
                closed.add(s)
                last_close = time.monotonic() - t0
    print(len(closed), "%.2f" % last_close, "bytes_sent", sent)
    for s in socks:
        s.close()


if __name__ == "__main__":
    op = sys.argv[1]
    if op == "mtls":
        a = sys.argv[2:]
        sys.exit(mtls(a[0], int(a[1]), a[2], a[3], a[4], (a[5], int(a[6])) if len(a) > 6 else None))
    elif op == "garbage":
        garbage(sys.argv[2], int(sys.argv[3]))
    elif op == "truncated":
        truncated(sys.argv[2], int(sys.argv[3]))
    elif op == "slowloris":
        slowloris(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
