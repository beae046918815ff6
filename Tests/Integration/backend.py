"""Backends for mesh routing tests, run inside a pod with `ip netns exec`.

  backend.py http PORT NAME            HTTP/1.1 (keep-alive): answers every request with
                                       "NAME PATH HOST\\n"
  backend.py tls PORT NAME CERT KEY    TLS: after the handshake sends "NAME\\n", closes
  backend.py banner PORT NAME          server speaks first: sends "NAME\\n" at once, then
                                       echoes until the client closes
Prints "ready" once listening.
"""

import http.server
import socket
import socketserver
import ssl
import sys
import threading


def http_server(port, name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = ("%s %s %s\n" % (name, self.path, self.headers.get("Host", "-"))).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 1024
        allow_reuse_address = True

    srv = Server(("0.0.0.0", port), Handler)
    print("ready", flush=True)
    srv.serve_forever()


def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(512)
    return s


def tls_server(port, name, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s = listener(port)
    print("ready", flush=True)

    def serve(c):
        try:
            with ctx.wrap_socket(c, server_side=True) as t:
                t.sendall((name + "\n").encode())
        except OSError:
            pass

    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def banner_server(port, name):
    s = listener(port)
    print("ready", flush=True)

    def serve(c):
        try:
            c.sendall((name + "\n").encode())
            while True:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    mode, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "http":
        http_server(port, name)
    elif mode == "tls":
        tls_server(port, name, sys.argv[4], sys.argv[5])
    else:
        banner_server(port, name)
