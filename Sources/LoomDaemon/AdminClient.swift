// The client side of the admin socket, used by loomctl and tests.
import LoomSystem

/// Sends one request line to loomd and reads the answer.
public struct AdminClient: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// The answer to `command`, without its trailing newline.
    public func request(_ command: String) throws -> String {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.unixConnect(path: path)
        } catch {
            throw AdminClientError(path: path, error: error)
        }
        defer { fd.close() }
        try fd.writeAll(command + "\n")
        var answer = try fd.readText()
        while answer.last?.isNewline == true { answer.removeLast() }
        return answer
    }
}

/// loomd could not be reached.
public struct AdminClientError: Error, CustomStringConvertible {
    public let path: String
    public let error: SystemError
    public var description: String {
        "cannot reach loomd at \(path): \(error); is loomd running, and is this the socket it was started with (--admin-socket)?"
    }
}
