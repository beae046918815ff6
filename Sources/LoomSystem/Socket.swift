// TCP socket operations on FileDescriptor. Each one is a single syscall through the
// helpers in Syscall.swift; callers decide what errors mean.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

extension FileDescriptor {
    /// A new non-blocking, close-on-exec TCP socket of `family`.
    public static func tcpSocket(family: CInt) throws(SystemError) -> FileDescriptor {
        FileDescriptor(rawValue: try syscall("socket") { cloom_tcp_socket(family) })
    }

    /// Sets an integer socket option.
    public func setOption(level: CInt, name: CInt, value: CInt, _ call: StaticString = "setsockopt")
        throws(SystemError)
    {
        _ = try syscall(call) { cloom_set_int_option(rawValue, level, name, value) }
    }

    /// SO_MARK: packets of this socket carry `mark` (nf_tables exempts Loom's own).
    public func setMark(_ mark: UInt32) throws(SystemError) {
        try setOption(
            level: CLOOM_SOL_SOCKET,
            name: CLOOM_SO_MARK,
            value: CInt(bitPattern: mark),
            "setsockopt(SO_MARK)"
        )
    }

    /// TCP_NODELAY: a proxy must not add Nagle delay to small writes it relays.
    public func setNoDelay() throws(SystemError) {
        try setOption(level: CLOOM_IPPROTO_TCP, name: CLOOM_TCP_NODELAY, value: 1, "setsockopt(TCP_NODELAY)")
    }

    /// SO_LINGER {1, 0}: close() will send RST, so the peer sees a reset, not a clean end.
    public func setResetOnClose() {
        _ = cloom_set_linger_zero(rawValue)
    }

    /// The pending error of a socket (SO_ERROR), 0 if none; reading it clears it.
    public func pendingError() -> CInt {
        var value: CInt = 0
        if cloom_get_int_option(rawValue, CLOOM_SOL_SOCKET, CLOOM_SO_ERROR, &value) != 0 { return Glibc.errno }
        return value
    }

    /// Binds and listens. `reusePort` lets every relay loop own a listener on the same port.
    public func listen(on address: SocketAddress, reusePort: Bool, backlog: CInt) throws(SystemError) {
        try setOption(level: CLOOM_SOL_SOCKET, name: CLOOM_SO_REUSEADDR, value: 1)
        if reusePort {
            try setOption(level: CLOOM_SOL_SOCKET, name: CLOOM_SO_REUSEPORT, value: 1, "setsockopt(SO_REUSEPORT)")
        }
        if case .v6 = address { try setOption(level: CLOOM_IPPROTO_IPV6, name: CLOOM_IPV6_V6ONLY, value: 1) }
        var storage = sockaddr_storage()
        let len = address.write(to: &storage)
        _ = try withUnsafePointer(to: &storage) { (ptr) throws(SystemError) -> CInt in
            // Safe: storage holds a sockaddr of length `len`.
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> CInt in
                try syscall("bind") { Glibc.bind(rawValue, sa, len) }
            }
        }
        _ = try syscall("listen") { Glibc.listen(rawValue, backlog) }
    }

    /// Binds a throwaway socket (SO_REUSEADDR, no SO_REUSEPORT) to `address` and closes it.
    /// Throws EADDRINUSE when another process listens there, even with SO_REUSEPORT:
    /// without this check a second loomd would silently share the first one's port.
    public static func checkPortFree(_ address: SocketAddress) throws(SystemError) {
        let fd = try tcpSocket(family: address.family)
        defer { fd.close() }
        try fd.setOption(level: CLOOM_SOL_SOCKET, name: CLOOM_SO_REUSEADDR, value: 1)
        if case .v6 = address { try fd.setOption(level: CLOOM_IPPROTO_IPV6, name: CLOOM_IPV6_V6ONLY, value: 1) }
        var storage = sockaddr_storage()
        let len = address.write(to: &storage)
        _ = try withUnsafePointer(to: &storage) { (ptr) throws(SystemError) -> CInt in
            // Safe: storage holds a sockaddr of length `len`.
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> CInt in
                try syscall("bind") { Glibc.bind(fd.rawValue, sa, len) }
            }
        }
    }

    /// Starts a non-blocking connect. `.processed(())` if it completed at once,
    /// `.wouldBlock` while it is in progress (wait for writability, then `pendingError()`).
    public func connect(to address: SocketAddress) throws(SystemError) -> IOResult<Bool> {
        var storage = sockaddr_storage()
        let len = address.write(to: &storage)
        let rc: CInt = withUnsafePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                var rc: CInt
                repeat { rc = Glibc.connect(rawValue, sa, len) } while rc < 0 && Glibc.errno == EINTR
                return rc
            }
        }
        if rc == 0 { return .processed(true) }
        let err = Glibc.errno
        if err == EINPROGRESS || err == EAGAIN { return .wouldBlock }
        throw SystemError("connect", errno: err)
    }

    /// Accepts one connection (non-blocking); the new socket is non-blocking too.
    public func accept() throws(SystemError) -> IOResult<(FileDescriptor, SocketAddress?)> {
        var storage = sockaddr_storage()
        var len = socklen_t(0)
        switch try syscallIO("accept4", { cloom_accept(rawValue, &storage, &len) }) {
        case .processed(let fd):
            return .processed((FileDescriptor(rawValue: fd), SocketAddress(storage: storage)))
        case .wouldBlock:
            return .wouldBlock
        }
    }

    /// recv(2) into `buffer` (non-blocking): bytes read, 0 at end of stream, or
    /// `.wouldBlock`. The caller owns `buffer` for the duration of the call.
    @inline(__always)
    public func receive(into buffer: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> IOResult<Int> {
        try syscallIO("recv") { Glibc.recv(rawValue, buffer, count, 0) }
    }

    /// recv(2) with MSG_PEEK: copies what is queued without consuming it, so the bytes are
    /// still there for the relay after a routing decision.
    public func peek(into buffer: UnsafeMutableRawPointer, count: Int) throws(SystemError) -> IOResult<Int> {
        try syscallIO("recv(MSG_PEEK)") { Glibc.recv(rawValue, buffer, count, Int32(MSG_PEEK)) }
    }

    /// send(2) with MSG_NOSIGNAL (a gone peer is EPIPE, not SIGPIPE): bytes sent, or
    /// `.wouldBlock` when the send buffer is full.
    @inline(__always)
    public func send(from buffer: UnsafeRawPointer, count: Int) throws(SystemError) -> IOResult<Int> {
        try syscallIO("send") { Glibc.send(rawValue, buffer, count, Int32(MSG_NOSIGNAL)) }
    }

    /// write(2) (non-blocking), e.g. into a pipe: bytes written or `.wouldBlock`.
    @inline(__always)
    public func write(from buffer: UnsafeRawPointer, count: Int) throws(SystemError) -> IOResult<Int> {
        try syscallIO("write") { Glibc.write(rawValue, buffer, count) }
    }

    /// shutdown(SHUT_WR): the peer reads end of stream after the bytes already sent.
    public func shutdownWrite() throws(SystemError) {
        _ = try syscall("shutdown") { Glibc.shutdown(rawValue, CLOOM_SHUT_WR) }
    }

    /// The local address of a socket (getsockname).
    public func localAddress() -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(rawValue, $0, &len) }
        }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }

    /// Where the application meant to go before nf_tables redirected it here:
    /// SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6 (both read conntrack).
    public func originalDestination(family: CInt) throws(SystemError) -> OriginalDestination {
        var storage = sockaddr_storage()
        var len = socklen_t(0)
        _ = try syscall("getsockopt(SO_ORIGINAL_DST)") { cloom_original_dst(rawValue, family, &storage, &len) }
        guard let address = SocketAddress(storage: storage) else {
            throw SystemError("getsockopt(SO_ORIGINAL_DST)", errno: EAFNOSUPPORT)
        }
        return OriginalDestination(address)
    }
}
