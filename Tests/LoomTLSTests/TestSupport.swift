// Helpers for LoomTLS's tests: temporary directories, file modes, non-blocking socket
// pairs, and pumping two TLS streams against each other in one thread.
import Foundation
import LoomTLS
import XCTest

#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory under the system's temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/loomtls-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let made else { throw TLSError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The permission bits of a file or directory.
func mode(_ path: String) -> mode_t {
    var status = stat()
    XCTAssertEqual(stat(path, &status), 0, "stat \(path)")
    return status.st_mode & 0o7777
}

func write(_ text: String, to path: String, mode: mode_t) throws {
    try text.write(toFile: path, atomically: false, encoding: .utf8)
    XCTAssertEqual(chmod(path, mode), 0)
}

/// A connected AF_UNIX stream pair, both ends non-blocking.
func nonBlockingSocketPair() -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
    for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    return (fds[0], fds[1])
}

/// Calls `handshake()` on both streams until neither makes progress: a stream that is
/// done or failed is not called again.
func pumpHandshake(_ client: TLSStream, _ server: TLSStream) -> (client: TLSStatus, server: TLSStatus) {
    var c = TLSStatus.wantRead
    var s = TLSStatus.wantRead
    func finished(_ status: TLSStatus) -> Bool {
        switch status {
        case .done, .failed, .closed: return true
        case .wantRead, .wantWrite: return false
        }
    }
    for _ in 0..<100 {
        if !finished(c) { c = client.handshake() }
        if !finished(s) { s = server.handshake() }
        if finished(c) && finished(s) { break }
    }
    return (c, s)
}

/// Reads until `.done(n)` with n > 0 or a final status, at most 100 tries.
func readSome(_ stream: TLSStream, count: Int = 4096) -> (TLSStatus, [UInt8]) {
    var buffer = [UInt8](repeating: 0, count: count)
    for _ in 0..<100 {
        let status = buffer.withUnsafeMutableBytes { stream.read(into: $0.baseAddress!, count: $0.count) }
        switch status {
        case .done(let n): return (status, Array(buffer[..<n]))
        case .wantRead, .wantWrite: usleep(1000)
        case .closed, .failed: return (status, [])
        }
    }
    return (.wantRead, [])
}

func writeAll(_ stream: TLSStream, _ bytes: [UInt8]) -> TLSStatus {
    for _ in 0..<100 {
        let status = bytes.withUnsafeBytes { stream.write(from: $0.baseAddress!, count: $0.count) }
        if case .wantWrite = status { continue }
        return status
    }
    return .wantWrite
}

extension TLSStatus {
    var failure: TLSFailure? {
        if case .failed(let failure) = self { return failure }
        return nil
    }
}
