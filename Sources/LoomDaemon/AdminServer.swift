// The admin API: a root-only Unix socket. One request line in, one JSON line out.
// It runs on its own thread, away from the relay loops, and reads only their published
// counters.
import Logging
import LoomSystem
import Synchronization

/// Serves admin requests on a Unix socket.
final class AdminServer: Sendable {
    private let path: String
    private let listener: FileDescriptor
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<SystemThread?>(nil)

    init(path: String, logger: Logger, handler: @escaping @Sendable (String) -> String) throws {
        self.path = path
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            makeDirectories(String(path[..<slash]), mode: 0o700)
        }
        // A live loomd answers on this path: replacing its socket would orphan it.
        if let other = try? FileDescriptor.unixConnect(path: path) {
            other.close()
            throw AdminError(path: path, error: SystemError("bind", errno: Errno.addressInUse))
        }
        do {
            listener = try FileDescriptor.unixListener(path: path)
        } catch {
            throw AdminError(path: path, error: error)
        }
        let t = try SystemThread.spawn(name: "loom-admin") { [self] in
            while !stopping.load(ordering: .relaxed) {
                guard let client = try? listener.acceptBlocking() else {
                    if stopping.load(ordering: .relaxed) { break }
                    continue
                }
                do {
                    let request = try client.readText(limit: 4096, line: true)
                    let command = request.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                    try client.writeAll(handler(command.trimmingSpaces()) + "\n")
                } catch {
                    logger.debug("admin request failed: \(error)")
                }
                client.close()
            }
        }
        thread.withLock { $0 = t }
    }

    /// Stops serving and removes the socket file.
    func stop() {
        stopping.store(true, ordering: .relaxed)
        listener.shutdownBoth()
        thread.withLock {
            $0?.join()
            $0 = nil
        }
        listener.close()
        removeFile(path)
    }
}

/// The admin socket could not be opened.
public struct AdminError: Error, CustomStringConvertible {
    public let path: String
    public let error: SystemError
    public var description: String {
        if error.errno == Errno.addressInUse {
            return "admin socket \(path) is in use by a running loomd; stop it, or pass --admin-socket PATH"
        }
        return "cannot open the admin socket \(path): \(error); pass --admin-socket PATH to use another path"
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
