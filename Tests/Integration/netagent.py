#!/usr/bin/env python3
"""Socket agent for Loom's integration tests.

Started by the test harness inside a pod network namespace with
``ip netns exec NS python3 netagent.py``.  It reads one JSON request per line
on stdin ({"id": N, "op": NAME, "args": {...}}), runs the operation in its own
thread and writes one JSON reply per line on stdout
({"id": N, "ok": true, "result": ...} or {"id": N, "ok": false, "error": ...}).
Sockets it opens are kept by name between requests, so a test can drive
clients and servers step by step.  It exits (closing everything) when stdin
reaches EOF, i.e. when the harness closes the pipe or dies.

Only standard library; every operation is bounded by a timeout.
"""

import errno
import hashlib
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import threading
import time
import traceback

CHUNK = 1 << 20

_out_lock = threading.Lock()
_socks = {}          # name -> connected socket
_listeners = {}      # name -> listening socket
_state_lock = threading.Lock()


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _errname(exc):
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def _get(name):
    with _state_lock:
        s = _socks.get(name)
    if s is None:
        raise KeyError("no socket named %r" % name)
    return s


def _put(name, s):
    with _state_lock:
        old = _socks.pop(name, None)
        _socks[name] = s
    if old is not None:
        old.close()


def _pop(name):
    with _state_lock:
        return _socks.pop(name, None)


class Stream:
    """Deterministic pseudo-random byte stream (1 MiB chunks of randbytes)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def chunk(self, n=CHUNK):
        return self.rng.randbytes(n)


def _reset_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _recv_to_end(s, timeout, max_bytes=None, idle=None):
    """Read until EOF / error / timeout.  Returns dict with len, sha, end."""
    h = hashlib.sha256()
    total = 0
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    end = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            end = "timeout"
            break
        s.settimeout(min(left, idle) if idle else left)
        try:
            n = s.recv_into(mv)
        except socket.timeout:
            end = "timeout"
            break
        except ConnectionResetError:
            end = "reset"
            break
        except OSError as e:
            end = "error:" + _errname(e)
            break
        if n == 0:
            end = "eof"
            break
        h.update(mv[:n])
        total += n
        if max_bytes is not None and total >= max_bytes:
            end = "max"
            break
    return {"len": total, "sha": h.hexdigest(), "end": end,
            "elapsed": time.monotonic() - t0}


def _send_stream(s, nbytes, seed):
    st = Stream(seed)
    h = hashlib.sha256()
    sent = 0
    while sent < nbytes:
        c = st.chunk(min(CHUNK, nbytes - sent))
        h.update(c)
        s.sendall(c)
        sent += len(c)
    return sent, h.hexdigest()


# ---------------------------------------------------------------- operations

def op_ping():
    return {"pid": os.getpid()}


def op_connect(name, host, port, timeout=5.0, bind_mark=None):
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        s.connect((host, port))
    except OSError as e:
        s.close()
        return {"ok": False, "error": _errname(e), "elapsed": time.monotonic() - t0}
    _put(name, s)
    return {"ok": True, "elapsed": time.monotonic() - t0,
            "local": list(s.getsockname()[:2]), "peer": list(s.getpeername()[:2])}


def op_send(name, data=None, nbytes=None, seed=None, timeout=30.0):
    s = _get(name)
    s.settimeout(timeout)
    if data is not None:
        b = data.encode()
        s.sendall(b)
        return {"sent": len(b), "sha": hashlib.sha256(b).hexdigest()}
    sent, sha = _send_stream(s, nbytes, seed)
    return {"sent": sent, "sha": sha}


def op_shutdown_wr(name):
    _get(name).shutdown(socket.SHUT_WR)
    return {}


def op_recv_to_end(name, timeout=30.0, max_bytes=None):
    return _recv_to_end(_get(name), timeout, max_bytes)


def op_probe(name, timeout=2.0):
    """One recv: tells whether the peer sent data, closed, reset or is silent."""
    s = _get(name)
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        b = s.recv(65536)
    except socket.timeout:
        return {"end": "timeout", "elapsed": time.monotonic() - t0}
    except ConnectionResetError:
        return {"end": "reset", "elapsed": time.monotonic() - t0}
    except OSError as e:
        return {"end": "error:" + _errname(e), "elapsed": time.monotonic() - t0}
    return {"end": "data" if b else "eof", "len": len(b),
            "elapsed": time.monotonic() - t0}


def op_echo(name, nbytes=64, seed=0, timeout=5.0):
    """Send nbytes and expect the same bytes back (peer is an echo server)."""
    s = _get(name)
    payload = random.Random(seed).randbytes(nbytes)
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        s.sendall(payload)
        got = bytearray()
        while len(got) < nbytes:
            b = s.recv(nbytes - len(got))
            if not b:
                return {"ok": False, "end": "eof", "len": len(got),
                        "elapsed": time.monotonic() - t0}
            got += b
    except socket.timeout:
        return {"ok": False, "end": "timeout", "len": len(got),
                "elapsed": time.monotonic() - t0}
    except ConnectionResetError:
        return {"ok": False, "end": "reset", "elapsed": time.monotonic() - t0}
    except OSError as e:
        return {"ok": False, "end": "error:" + _errname(e),
                "elapsed": time.monotonic() - t0}
    return {"ok": bytes(got) == payload, "end": "data", "len": len(got),
            "elapsed": time.monotonic() - t0}


def op_connect_echo_many(prefix, n, host, port, nbytes=64, timeout=10.0):
    """Open n connections (kept as prefix+index), one echo exchange on each."""
    ok = 0
    failures = []
    for i in range(n):
        name = "%s%d" % (prefix, i)
        r = op_connect(name, host, port, timeout=timeout)
        if not r["ok"]:
            failures.append([i, "connect", r["error"]])
            continue
        e = op_echo(name, nbytes=nbytes, seed=i, timeout=timeout)
        if e["ok"]:
            ok += 1
        else:
            failures.append([i, "echo", e["end"]])
    return {"ok": ok, "failures": failures[:20], "nfailures": len(failures)}


def op_fill(name, max_bytes, stall=2.0, timeout=120.0):
    """Write until the socket makes no progress for `stall` seconds."""
    s = _get(name)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    block = random.Random(7).randbytes(CHUNK)
    written = 0
    t0 = time.monotonic()
    last_progress = t0
    end = "max"
    try:
        while written < max_bytes:
            now = time.monotonic()
            if now - last_progress >= stall:
                end = "stalled"
                break
            if now - t0 > timeout:
                end = "timeout"
                break
            if not sel.select(timeout=min(0.2, stall)):
                continue
            try:
                n = s.send(block[: min(CHUNK, max_bytes - written)])
            except BlockingIOError:
                continue
            except OSError as e:
                end = "error:" + _errname(e)
                break
            if n > 0:
                written += n
                last_progress = time.monotonic()
    finally:
        sel.close()
        s.setblocking(True)
    return {"written": written, "end": end, "elapsed": time.monotonic() - t0}


def op_close(name, rst=False):
    s = _pop(name)
    if s is None:
        return {"closed": False}
    if rst:
        _reset_close(s)
    else:
        s.close()
    return {"closed": True}


def op_close_prefix(prefix, rst=False):
    with _state_lock:
        names = [k for k in _socks if k.startswith(prefix)]
    for k in names:
        op_close(k, rst)
    return {"closed": len(names)}


def op_listen(name, host, port, backlog=4096):
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in host:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(backlog)
    with _state_lock:
        _listeners[name] = s
    return {"addr": list(s.getsockname()[:2])}


def op_unlisten(name):
    with _state_lock:
        s = _listeners.pop(name, None)
    if s:
        s.close()
    return {}


def _accept(lname, timeout):
    with _state_lock:
        ls = _listeners[lname]
    ls.settimeout(timeout)
    c, peer = ls.accept()
    c.settimeout(None)
    return c, peer


def op_accept(lname, name, timeout=10.0):
    c, peer = _accept(lname, timeout)
    _put(name, c)
    return {"peer": list(peer[:2])}


def op_accept_hold(lname, prefix, n, timeout=10.0, rcvbuf=None):
    """Accept n connections and keep them without ever reading."""
    for i in range(n):
        c, _ = _accept(lname, timeout)
        if rcvbuf:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        _put("%s%d" % (prefix, i), c)
    return {"accepted": n}


def op_serve_halfclose(lname, reply_bytes, seed, timeout=30.0):
    """Accept one, read the request to EOF, then send reply_bytes and close."""
    c, peer = _accept(lname, timeout)
    try:
        req = _recv_to_end(c, timeout)
        if req["end"] != "eof":
            return {"request": req, "sent": 0, "sha": None, "peer": list(peer[:2])}
        c.settimeout(timeout)
        sent, sha = _send_stream(c, reply_bytes, seed)
    finally:
        c.close()
    return {"request": req, "sent": sent, "sha": sha, "peer": list(peer[:2])}


def op_serve_rst(lname, nbytes, seed=1, timeout=30.0, pause=0.2):
    """Accept one, send nbytes, then abort the connection with an RST."""
    c, _ = _accept(lname, timeout)
    c.settimeout(timeout)
    sent, sha = _send_stream(c, nbytes, seed)
    time.sleep(pause)      # let the bytes leave before the abort
    _reset_close(c)
    return {"sent": sent, "sha": sha}


def _bidir(s, nbytes, seed, timeout):
    """Send nbytes of stream(seed) while reading the peer's stream to EOF."""
    result = {}

    def sender():
        try:
            s.settimeout(timeout)
            sent, sha = _send_stream(s, nbytes, seed)
            s.shutdown(socket.SHUT_WR)
            result["sent"], result["sent_sha"] = sent, sha
        except Exception as e:                      # reported, not raised
            result["send_error"] = _errname(e)

    t0 = time.monotonic()
    th = threading.Thread(target=sender)
    th.start()
    r = _recv_to_end(s, timeout)
    th.join(timeout)
    result.update({"recv": r["len"], "recv_sha": r["sha"], "recv_end": r["end"],
                   "elapsed": time.monotonic() - t0})
    return result


def op_xfer_server(lname, nbytes, seed, timeout=120.0):
    c, peer = _accept(lname, timeout)
    try:
        r = _bidir(c, nbytes, seed, timeout)
        r["peer"] = list(peer[:2])
        return r
    finally:
        c.close()


def op_xfer_client(host, port, nbytes, seed, timeout=120.0):
    s = socket.create_connection((host, port), timeout=10)
    try:
        return _bidir(s, nbytes, seed, timeout)
    finally:
        s.close()


# --- echo server (selectors, any number of connections, honours half-close)

_echo_threads = []


def op_echo_server(lname):
    with _state_lock:
        ls = _listeners[lname]
    ls.setblocking(False)
    stats = {"accepted": 0}

    def run():
        sel = selectors.DefaultSelector()
        sel.register(ls, selectors.EVENT_READ, None)
        conns = {}   # sock -> [pending bytearray, peer_eof]
        while True:
            try:
                events = sel.select(timeout=1.0)
            except (OSError, ValueError):
                return
            for key, mask in events:
                s = key.fileobj
                if s is ls:
                    for _ in range(256):
                        try:
                            c, _ = ls.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            return
                        c.setblocking(False)
                        conns[c] = [bytearray(), False]
                        stats["accepted"] += 1
                        sel.register(c, selectors.EVENT_READ)
                    continue
                st = conns.get(s)
                if st is None:
                    continue
                dead = False
                if mask & selectors.EVENT_READ and not st[1]:
                    try:
                        b = s.recv(262144)
                        if b:
                            st[0] += b
                        else:
                            st[1] = True
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        dead = True
                if not dead and st[0]:
                    try:
                        n = s.send(st[0])
                        del st[0][:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        dead = True
                if not dead and st[1] and not st[0]:
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    dead = True
                if dead:
                    sel.unregister(s)
                    del conns[s]
                    s.close()
                    continue
                want = 0
                if not st[1] and len(st[0]) < (1 << 20):
                    want |= selectors.EVENT_READ
                if st[0]:
                    want |= selectors.EVENT_WRITE
                if want == 0:
                    want = selectors.EVENT_WRITE
                if key.events != want:
                    sel.modify(s, want)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    _echo_threads.append(th)
    return {}


# --- many concurrent echo connections from one client

def op_many_echo(host, port, n, nbytes, max_connecting=256, timeout=120.0):
    """Open n connections at once (all held open), then send nbytes on each
    and read them back, all concurrently.  Payload of connection i is a
    distinct slice of one random block, so crossed streams are detected."""
    block = random.Random(99).randbytes(CHUNK + nbytes)
    stride = max(1, (CHUNK) // max(n, 1))

    def payload(i):
        off = (i * stride) % CHUNK
        return memoryview(block)[off:off + nbytes]

    fam = _family(host)
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    deadline = t0 + timeout
    conns = []
    errors = {}
    connecting = {}

    def note(err):
        errors[err] = errors.get(err, 0) + 1

    # phase 1: connect all, at most max_connecting in flight
    nxt = 0
    while (nxt < n or connecting) and time.monotonic() < deadline:
        while nxt < n and len(connecting) < max_connecting:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                note(errno.errorcode.get(rc, str(rc)))
                s.close()
            else:
                connecting[s] = nxt
                sel.register(s, selectors.EVENT_WRITE)
            nxt += 1
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            i = connecting.pop(s)
            sel.unregister(s)
            rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc:
                note(errno.errorcode.get(rc, str(rc)))
                s.close()
            else:
                conns.append((i, s))
    connect_elapsed = time.monotonic() - t0
    open_at_once = len(conns)

    # phase 2: every connection sends its payload and reads it back
    state = {}
    for i, s in conns:
        state[s] = [i, 0, bytearray()]
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    done = 0
    mismatched = 0
    while state and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.5):
            s = key.fileobj
            st = state.get(s)
            if st is None:
                continue
            i, off, got = st
            failed = None
            if mask & selectors.EVENT_WRITE and off < nbytes:
                try:
                    st[1] += s.send(payload(i)[off:])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    failed = _errname(e)
                if st[1] >= nbytes and not failed:
                    sel.modify(s, selectors.EVENT_READ)
            if mask & selectors.EVENT_READ and not failed:
                try:
                    b = s.recv(nbytes - len(got))
                    if not b:
                        failed = "eof"
                    got += b
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    failed = _errname(e)
            if failed:
                note(failed)
            elif len(got) >= nbytes:
                if bytes(got) == payload(i).tobytes():
                    done += 1
                else:
                    mismatched += 1
            else:
                continue
            sel.unregister(s)
            del state[s]
            # keep the socket open until everybody is finished
    unfinished = len(state)
    for _, s in conns:
        s.close()
    for s in connecting:
        s.close()
    sel.close()
    return {"requested": n, "open_at_once": open_at_once, "completed": done,
            "mismatched": mismatched, "unfinished": unfinished,
            "errors": errors, "connect_elapsed": connect_elapsed,
            "elapsed": time.monotonic() - t0}


OPS = {k[3:]: v for k, v in globals().items() if k.startswith("op_")}


def _handle(req):
    rid = req.get("id")
    try:
        res = OPS[req["op"]](**req.get("args", {}))
        out = {"id": rid, "ok": True, "result": res}
    except Exception as e:
        out = {"id": rid, "ok": False, "error": "%s: %s" % (type(e).__name__, e),
               "trace": traceback.format_exc()}
    line = json.dumps(out)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main():
    _raise_nofile()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        threading.Thread(target=_handle, args=(req,), daemon=True).start()
    os._exit(0)


if __name__ == "__main__":
    main()
