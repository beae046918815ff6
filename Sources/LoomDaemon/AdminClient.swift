// The client side of the admin API (HTTP/1.1 over loomd's Unix socket), used by loomctl
// and tests. Blocking socket calls, no event loop: loomctl is a short-lived CLI.
import Foundation
import LoomSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Talks HTTP/1.1 to loomd's admin socket, one connection per request.
public struct AdminClient: Sendable {
    public let path: String
    /// Largest answer accepted.
    static let responseLimit = 256 << 20

    public init(path: String) { self.path = path }

    /// One request; returns status and body. Sends `Connection: close`; handles
    /// Content-Length and chunked responses.
    public func call(_ method: String, _ path: String, body: String? = nil) throws -> (status: Int, body: String) {
        let connection = try AdminConnection(socket: self.path)
        defer { connection.close() }
        try connection.send(method: method, target: path, body: body)
        let head = try connection.readHead()
        var bytes: [UInt8] = []
        try connection.readBody(head) { chunk in
            bytes += chunk
            if bytes.count > Self.responseLimit {
                throw AdminResponseError(path: self.path, message: "answer over \(Self.responseLimit) bytes")
            }
            return true
        }
        return (head.status, String(decoding: bytes, as: UTF8.self))
    }

    /// A streaming GET: calls onLine for each line of the body (chunked) until the server
    /// ends it or onLine returns false. An answer other than 200 throws `AdminHTTPError`.
    public func stream(_ path: String, onLine: (String) -> Bool) throws {
        try stream(path, idleCheck: { false }, onLine: onLine)
    }

    /// `stream(_:onLine:)` that also calls `idleCheck` about every 200 ms while nothing
    /// arrives (a quiet trace); it ends the stream, without an error, by returning true.
    public func stream(_ path: String, idleCheck: () -> Bool, onLine: (String) -> Bool) throws {
        let connection = try AdminConnection(socket: self.path)
        defer { connection.close() }
        do {
            try withoutActuallyEscaping(idleCheck) { idleCheck in
                connection.idleCheck = idleCheck
                defer { connection.idleCheck = nil }
                connection.setReceiveTimeout(milliseconds: 200)
                try stream(on: connection, path: path, onLine: onLine)
            }
        } catch is AdminConnection.IdleStop {
            return
        }
    }

    private func stream(on connection: AdminConnection, path: String, onLine: (String) -> Bool) throws {
        try connection.send(method: "GET", target: path, body: nil)
        let head = try connection.readHead()
        var pending: [UInt8] = []
        if head.status != 200 {
            try connection.readBody(head) { chunk in
                pending += chunk.prefix(65536 - min(pending.count, 65536))
                return true
            }
            throw AdminHTTPError(status: head.status, body: String(decoding: pending, as: UTF8.self))
        }
        var more = true
        try connection.readBody(head) { chunk in
            pending += chunk
            var start = 0
            while more, let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > start && pending[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                more = onLine(String(decoding: pending[start..<end], as: UTF8.self))
                start = newline + 1
            }
            pending.removeFirst(start)
            if pending.count > Self.responseLimit {
                throw AdminResponseError(path: self.path, message: "a line over \(Self.responseLimit) bytes")
            }
            return more
        }
        if more && !pending.isEmpty { _ = onLine(String(decoding: pending, as: UTF8.self)) }
    }

    /// Compatibility for loomctl's existing calls: POST /v1/command with the JSON
    /// request; returns the JSON body (without a trailing newline), whatever the status
    /// (loomd's refusals are JSON with an `error` field too).
    public func request(_ json: String) throws -> String {
        var answer = try call("POST", "/v1/command", body: json).body
        while answer.last?.isNewline == true { answer.removeLast() }
        return answer
    }
}

/// loomd could not be reached.
public struct AdminClientError: Error, CustomStringConvertible {
    public let path: String
    public let error: SystemError
    public var description: String {
        if error.errno == EACCES {
            return "permission denied on \(path): the admin API is root-only; run loomctl as root"
        }
        return
            "cannot reach loomd at \(path): \(error); is loomd running, and is this the socket it was started with (--admin-socket)?"
    }
}

/// loomd's answer was not the HTTP this client expects.
public struct AdminResponseError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "unexpected answer from loomd at \(path): \(message)" }
}

/// loomd refused a streaming request.
public struct AdminHTTPError: Error, CustomStringConvertible {
    public let status: Int
    public let body: String
    public var description: String {
        let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        if let error = object?["error"] as? String { return "loomd: \(error)" }
        return "loomd answered \(status): \(body)"
    }
}

/// One HTTP exchange on a blocking Unix socket.
private final class AdminConnection {
    struct Head {
        var status: Int
        /// Lowercased names.
        var headers: [String: String]
    }

    /// Thrown when `idleCheck` ends a quiet stream.
    struct IdleStop: Error {}

    let path: String
    let fd: FileDescriptor
    /// Asked after each receive timeout (see `setReceiveTimeout`): true stops.
    var idleCheck: (() -> Bool)?
    private var buffer: [UInt8] = []
    private var offset = 0
    private var atEnd = false

    init(socket path: String) throws {
        self.path = path
        do {
            fd = try FileDescriptor.unixConnect(path: path)
        } catch {
            throw AdminClientError(path: path, error: error)
        }
    }

    func close() { fd.close() }

    /// SO_RCVTIMEO: a receive with nothing to read returns after this long, to ask
    /// `idleCheck`.
    func setReceiveTimeout(milliseconds: Int) {
        var timeout = timeval(tv_sec: milliseconds / 1000, tv_usec: suseconds_t(milliseconds % 1000 * 1000))
        _ = setsockopt(fd.rawValue, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(method: String, target: String, body: String?) throws {
        var request = "\(method) \(target) HTTP/1.1\r\nHost: loomd\r\nConnection: close\r\n"
        if let body {
            request += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        } else {
            request += "\r\n"
        }
        do {
            try fd.writeAll(request)
        } catch {
            throw AdminClientError(path: path, error: error)
        }
    }

    /// The status line and headers.
    func readHead() throws -> Head {
        let status = try readLine()
        let parts = status.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else {
            throw AdminResponseError(path: path, message: "not an HTTP status line: \(status.prefix(200))")
        }
        var headers: [String: String] = [:]
        var lines = 0
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            lines += 1
            guard lines < 200, let colon = line.firstIndex(of: ":") else {
                throw AdminResponseError(path: path, message: "bad header line: \(line.prefix(200))")
            }
            headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmingSpaces()
        }
        return Head(status: code, headers: headers)
    }

    /// Passes the body to `chunk` piece by piece until it ends or `chunk` returns false.
    func readBody(_ head: Head, _ chunk: ([UInt8]) throws -> Bool) throws {
        if head.headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                let sizeLine = try readLine()
                let hex = sizeLine.split(separator: ";", maxSplits: 1).first.map {
                    $0.trimmingCharacters(in: .whitespaces)
                }
                guard let hex, let size = Int(hex, radix: 16), size >= 0 else {
                    throw AdminResponseError(path: path, message: "bad chunk size: \(sizeLine.prefix(100))")
                }
                if size == 0 {
                    while try !readLine().isEmpty {}  // trailers
                    return
                }
                var left = size
                while left > 0 {
                    let piece = try read(upTo: left)
                    left -= piece.count
                    if try !chunk(piece) { return }
                }
                guard try readLine().isEmpty else {
                    throw AdminResponseError(path: path, message: "chunk not followed by CRLF")
                }
            }
        } else if let text = head.headers["content-length"] {
            guard var left = Int(text), left >= 0 else {
                throw AdminResponseError(path: path, message: "bad content-length: \(text)")
            }
            while left > 0 {
                let piece = try read(upTo: left)
                left -= piece.count
                if try !chunk(piece) { return }
            }
        } else {
            while try fill() {
                let piece = Array(buffer[offset...])
                offset = buffer.count
                if try !chunk(piece) { return }
            }
        }
    }

    /// Up to `count` bytes (at least one); end of stream is an error.
    private func read(upTo count: Int) throws -> [UInt8] {
        if offset == buffer.count, try !fill() {
            throw AdminResponseError(path: path, message: "loomd closed the connection in the middle of its answer")
        }
        let n = min(count, buffer.count - offset)
        defer { offset += n }
        return Array(buffer[offset..<offset + n])
    }

    /// One line without its CRLF (or LF); end of stream is an error.
    private func readLine() throws -> String {
        var scanned = offset
        while true {
            if let newline = buffer[scanned...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > offset && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: buffer[offset..<end], as: UTF8.self)
                offset = newline + 1
                return line
            }
            let partial = buffer.count - offset
            guard partial < 65536 else {
                throw AdminResponseError(path: path, message: "a header line over 64 KiB")
            }
            if try !fill() {
                throw AdminResponseError(
                    path: path,
                    message: buffer.isEmpty
                        ? "loomd closed the connection without answering (an older loomd without the HTTP API?)"
                        : "loomd closed the connection in the middle of its answer"
                )
            }
            scanned = offset + partial  // fill() moved the unread bytes to the front
        }
    }

    /// Reads more bytes into the buffer (dropping what was consumed); false at end of stream.
    private func fill() throws -> Bool {
        if atEnd { return false }
        if offset > 0 {
            buffer.removeFirst(offset)
            offset = 0
        }
        let start = buffer.count
        buffer += [UInt8](repeating: 0, count: 65536)
        while true {
            let result: IOResult<Int>
            do {
                result = try buffer.withUnsafeMutableBytes { raw in
                    try fd.receive(into: raw.baseAddress! + start, count: 65536)
                }
            } catch let error as SystemError {
                buffer.removeLast(65536)
                throw AdminClientError(path: path, error: error)
            }
            guard let n = result.value else {
                // The receive timeout: nothing came.
                if idleCheck?() == true {
                    buffer.removeLast(65536)
                    throw IdleStop()
                }
                continue
            }
            buffer.removeLast(65536 - n)
            if n == 0 { atEnd = true }
            return n > 0
        }
    }
}
