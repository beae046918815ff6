"""Clients for mesh routing tests, run inside a pod with `ip netns exec`; print JSON.

  meshclient.py http HOST PORT N [--host H] [--path P] [--header K:V]
        N sequential HTTP/1.1 requests, one connection each; counts answers by name
  meshclient.py tls HOST PORT N SNI
        N TLS connections with SNI (no verification); counts names, records the
        certificate subject the client saw
  meshclient.py banner HOST PORT [--send-after S]
        connects, measures how long until the first line arrives (server speaks
        first); optionally sends a line after S seconds
"""

import json
import socket
import ssl
import sys
import time


def first_line(s, limit=4096):
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def http(host, port, n, hdr_host, path, headers):
    counts, errors = {}, []
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (path, hdr_host or host)
            for h in headers:
                k, v = h.split(":", 1)
                req += "%s: %s\r\n" % (k, v)
            s.sendall((req + "\r\n").encode())
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            body = data.split(b"\r\n\r\n", 1)[1].decode() if b"\r\n\r\n" in data else ""
            name = body.split(" ")[0] if body else "<empty>"
            counts[name] = counts.get(name, 0) + 1
        except OSError as e:
            errors.append(str(e))
    return {"counts": counts, "errors": errors[:5], "error_count": len(errors)}


def tls(host, port, n, sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    counts, subjects, errors = {}, set(), []
    for _ in range(n):
        try:
            with socket.create_connection((host, port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=sni) as t:
                    der = t.getpeercert(binary_form=True)
                    subjects.add(ssl.DER_cert_to_PEM_cert(der)[:80])
                    name = first_line(t).strip()
                    counts[name] = counts.get(name, 0) + 1
        except OSError as e:
            errors.append(str(e))
    return {"counts": counts, "certs": len(subjects), "errors": errors[:5], "error_count": len(errors)}


def banner(host, port, send_after):
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=15)
    if send_after is not None:
        time.sleep(send_after)
        s.sendall(b"hello\n")
    line = first_line(s).strip()
    took = time.monotonic() - t0
    s.close()
    return {"line": line, "seconds": took}


def main(argv):
    mode, host, port = argv[1], argv[2], int(argv[3])
    opts = {"--host": None, "--path": "/", "--send-after": None}
    headers, rest, i = [], [], 4
    while i < len(argv):
        if argv[i] == "--header":
            headers.append(argv[i + 1])
            i += 2
        elif argv[i] in opts:
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    if mode == "http":
        out = http(host, port, int(rest[0]), opts["--host"], opts["--path"], headers)
    elif mode == "tls":
        out = tls(host, port, int(rest[0]), rest[1])
    else:
        out = banner(host, port, float(opts["--send-after"]) if opts["--send-after"] else None)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
