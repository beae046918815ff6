// sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or an abstract
// name written with a leading '@'). systemd's Type=notify waits for READY=1.
// Unsafe pointers here copy the socket name into sockaddr_un.sun_path, bounded by its size.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

public enum ServiceNotify {
    /// Sends `state` (e.g. "READY=1\nSTATUS=...") to the service manager, if loomd runs
    /// under one. Returns false when there is none or the send failed.
    @discardableResult
    public static func send(_ state: String) -> Bool {
        guard let raw = getenv("NOTIFY_SOCKET") else { return false }
        let name = Array(String(cString: raw).utf8)
        guard !name.isEmpty else { return false }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard name.count < capacity else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { path in
            path.copyBytes(from: name)
            if name[0] == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent == bytes.count
    }
}
