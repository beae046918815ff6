// Blocking Unix stream sockets for the admin API (a control path, not the relay).
// Unsafe pointers here copy a path into sockaddr_un.sun_path, bounded by its size.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

extension FileDescriptor {
    private static func unixAddress(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { throw SystemError("sockaddr_un", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return addr
    }

    /// A listening Unix socket at `path` (an old socket file there is replaced),
    /// with permissions `mode` (0600: root only).
    public static func unixListener(path: String, mode: mode_t = 0o600) throws(SystemError) -> FileDescriptor {
        var addr = try unixAddress(path)
        let fd = FileDescriptor(
            rawValue: try syscall("socket") {
                socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            }
        )
        unlink(path)
        do throws(SystemError) {
            _ = try withUnsafePointer(to: &addr) { (ptr) throws(SystemError) -> CInt in
                try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> CInt in
                    try syscall("bind") { bind(fd.rawValue, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
            _ = try syscall("chmod") { chmod(path, mode) }
            _ = try syscall("listen") { Glibc.listen(fd.rawValue, 64) }
        } catch {
            fd.close()
            throw error
        }
        return fd
    }

    /// Connects to the Unix socket at `path` (blocking).
    public static func unixConnect(path: String) throws(SystemError) -> FileDescriptor {
        var addr = try unixAddress(path)
        let fd = FileDescriptor(
            rawValue: try syscall("socket") {
                socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            }
        )
        do throws(SystemError) {
            _ = try withUnsafePointer(to: &addr) { (ptr) throws(SystemError) -> CInt in
                try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> CInt in
                    try syscall("connect") { Glibc.connect(fd.rawValue, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
            }
        } catch {
            fd.close()
            throw error
        }
        return fd
    }

    /// Blocking accept of a Unix connection.
    public func acceptBlocking() throws(SystemError) -> FileDescriptor {
        FileDescriptor(rawValue: try syscall("accept") { Glibc.accept(rawValue, nil, nil) })
    }

    /// Writes all of `text` (blocking).
    public func writeAll(_ text: String) throws(SystemError) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = try syscall("write") {
                bytes.withUnsafeBytes { raw in Glibc.write(rawValue, raw.baseAddress! + offset, raw.count - offset) }
            }
            offset += n
        }
    }

    /// Reads until end of stream or `limit` bytes (blocking), or until a newline if `line`.
    public func readText(limit: Int = 1 << 20, line: Bool = false) throws(SystemError) -> String {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while result.count < limit {
            let n = try syscall("read") {
                chunk.withUnsafeMutableBytes { raw in Glibc.read(rawValue, raw.baseAddress!, raw.count) }
            }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
            if line, chunk[0..<n].contains(UInt8(ascii: "\n")) { break }
        }
        return String(decoding: result, as: UTF8.self)
    }

    /// shutdown(SHUT_RDWR): wakes a thread blocked in accept or read on this socket.
    public func shutdownBoth() { _ = Glibc.shutdown(rawValue, Int32(SHUT_RDWR)) }
}

/// Removes a file, ignoring a missing one.
public func removeFile(_ path: String) { unlink(path) }

/// Creates a directory and its parents with `mode` (existing ones are kept).
public func makeDirectories(_ path: String, mode: mode_t = 0o755) {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        mkdir(current, mode)
    }
}
