// A Unix SOCK_SEQPACKET socket that carries file descriptors (SCM_RIGHTS): one message is
// one JSON line plus the descriptors it names. Used for loomd's hand-over to a new loomd.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

public struct PacketSocket: Sendable {
    public let fd: FileDescriptor

    /// Most descriptors one message carries.
    public static let maxDescriptors = Int(CLOOM_MAX_PASSED_FDS)

    init(fd: FileDescriptor) { self.fd = fd }

    /// Listens at `path` (mode 0600; a stale file is replaced).
    public static func listen(path: String) throws(SystemError) -> PacketSocket {
        let fd = try syscall("listen(seqpacket)") { cloom_seqpacket_listen(path) }
        _ = chmod(path, 0o600)
        return PacketSocket(fd: FileDescriptor(rawValue: fd))
    }

    public static func connect(path: String) throws(SystemError) -> PacketSocket {
        PacketSocket(fd: FileDescriptor(rawValue: try syscall("connect(seqpacket)") { cloom_seqpacket_connect(path) }))
    }

    /// Blocking accept.
    public func accept() throws(SystemError) -> PacketSocket {
        PacketSocket(fd: try fd.acceptBlocking())
    }

    /// Sends one message with `descriptors` (at most `maxDescriptors`).
    public func send(_ text: String, descriptors: [FileDescriptor] = []) throws(SystemError) {
        let bytes = Array(text.utf8)
        let raw = descriptors.map(\.rawValue)
        _ = try syscall("sendmsg") {
            bytes.withUnsafeBytes { b in
                raw.withUnsafeBufferPointer { f in
                    cloom_send_fds(fd.rawValue, b.baseAddress, b.count, f.baseAddress, CInt(f.count))
                }
            }
        }
    }

    /// Receives one message; nil when the peer closed. `timeoutMs` > 0 bounds the wait.
    public func receive(timeoutMs: Int32 = 0) throws(SystemError) -> (text: String, descriptors: [FileDescriptor])? {
        if timeoutMs > 0 {
            var p = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
            let ready = try syscall("poll") { poll(&p, 1, timeoutMs) }
            if ready == 0 { throw SystemError("recvmsg", errno: ETIMEDOUT) }
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var fds = [CInt](repeating: -1, count: Self.maxDescriptors)
        var count: CInt = 0
        let capacity = buffer.count
        let n = try syscall("recvmsg") {
            buffer.withUnsafeMutableBytes { b in
                fds.withUnsafeMutableBufferPointer { f in
                    cloom_recv_fds(
                        fd.rawValue,
                        b.baseAddress,
                        capacity,
                        f.baseAddress,
                        CInt(Self.maxDescriptors),
                        &count
                    )
                }
            }
        }
        let descriptors = fds.prefix(Int(count)).map { FileDescriptor(rawValue: $0) }
        if n == 0 && descriptors.isEmpty { return nil }
        return (String(decoding: buffer.prefix(Int(n)), as: UTF8.self), descriptors)
    }

    public func close() { fd.close() }
}
