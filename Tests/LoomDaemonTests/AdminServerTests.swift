// The admin API's HTTP server and client, on real sockets: round trips, routing left to
// the handler, chunked streams and their cancellation, back-pressure, body limit,
// malformed requests, the root-only check (as root) and the metrics TCP listener.
import Foundation
import Logging
import Synchronization
import Testing

@testable import LoomDaemon

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct AdminServerTests {
    @Test func getAndPostRoundTrip() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let client = AdminClient(path: fixture.path)

        let get = try client.call("GET", "/echo?a=1&b=x%20y+z&flag")
        #expect(get.status == 200)
        #expect(get.body == "GET /echo a=1 b=x y z flag= tcp=false |")

        let post = try client.call("POST", "/echo", body: "{\"hello\":\"world\"}")
        #expect(post.status == 200)
        #expect(post.body == "POST /echo tcp=false |{\"hello\":\"world\"}")

        let command = try client.request("{\"op\":\"status\"}")
        #expect(command == "POST /v1/command tcp=false |{\"op\":\"status\"}")

        let missing = try client.call("GET", "/nope")
        #expect(missing.status == 404)
        #expect(missing.body == "{\"error\":\"no route /nope\"}")
    }

    @Test func handlersRunOffTheEventLoop() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let slowDone = Flag()
        let path = fixture.path
        let thread = Thread {
            _ = try? AdminClient(path: path).call("GET", "/slow")
            slowDone.value.store(true, ordering: .relaxed)
        }
        thread.start()
        #expect(eventually { fixture.routes.calls.withLock { $0.contains("/slow") } })
        let started = Date()
        let echo = try AdminClient(path: path).call("GET", "/echo")
        #expect(echo.status == 200)
        #expect(Date().timeIntervalSince(started) < 0.9)
        let slowWasDone = slowDone.value.load(ordering: .relaxed)
        #expect(!slowWasDone, "the quick request waited for the slow handler")
        #expect(eventually { slowDone.value.load(ordering: .relaxed) })
    }

    @Test func streamsLinesChunkedUntilTheStreamEnds() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let expected = (0..<25).map { "{\"line\":\($0)}" }
        fixture.routes.finite.withLock { $0 = FiniteStream(lines: expected) }
        var received: [String] = []
        try AdminClient(path: fixture.path).stream("/finite") { line in
            received.append(line)
            return true
        }
        #expect(received == expected)
        let stream = try #require(fixture.routes.finite.withLock { $0 })
        #expect(stream.cancels.load(ordering: .relaxed) == 1, "cancel() once after the stream ended")

        // The raw answer: 200, ndjson, chunked.
        fixture.routes.finite.withLock { $0 = FiniteStream(lines: ["a", "b"]) }
        let raw = try RawSocket.unix(fixture.path)
        raw.send("GET /finite HTTP/1.1\r\nHost: x\r\n\r\n")
        let answer = raw.readAll()
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(answer.lowercased().contains("content-type: application/x-ndjson\r\n"))
        #expect(answer.lowercased().contains("transfer-encoding: chunked\r\n"))
        #expect(answer.hasSuffix("a\nb\n\r\n0\r\n\r\n"))
    }

    @Test func cancelsWhenTheClientGoesAway() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        var received = 0
        try AdminClient(path: fixture.path).stream("/endless") { _ in
            received += 1
            return received < 3
        }
        #expect(received == 3)
        #expect(eventually { fixture.routes.endless.cancels.load(ordering: .relaxed) == 1 })
        let polls = fixture.routes.endless.polls.load(ordering: .relaxed)
        usleep(300_000)
        #expect(fixture.routes.endless.cancels.load(ordering: .relaxed) == 1)
        #expect(fixture.routes.endless.polls.load(ordering: .relaxed) == polls, "polled after cancel()")
    }

    @Test func idleCheckEndsAQuietStream() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let started = Date()
        var lines = 0
        var checks = 0
        try AdminClient(path: fixture.path).stream(
            "/quiet",
            idleCheck: {
                checks += 1
                return Date().timeIntervalSince(started) > 0.5
            },
            onLine: { _ in
                lines += 1
                return true
            }
        )
        #expect(lines == 0)
        #expect(checks >= 2)
        #expect(Date().timeIntervalSince(started) < 2)
        #expect(eventually { fixture.routes.quiet.cancels.load(ordering: .relaxed) == 1 })
    }

    @Test func aClientThatDoesNotReadStopsThePolling() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let raw = try RawSocket.unix(fixture.path)
        raw.send("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        usleep(1_000_000)
        // The socket buffers fill after a few polls of 64 KiB; then polling stops (at
        // 20 polls a second it would go on for ever).
        let polls = fixture.routes.endless.polls.load(ordering: .relaxed)
        #expect(polls >= 1 && polls <= 12, "\(polls) polls")
        usleep(500_000)
        let later = fixture.routes.endless.polls.load(ordering: .relaxed)
        #expect(later == polls, "polled \(later - polls) times while the client was not reading")
        raw.close()
        #expect(eventually { fixture.routes.endless.cancels.load(ordering: .relaxed) == 1 })
    }

    @Test func stopCancelsOpenStreams() throws {
        let fixture = try Fixture()
        let lines = Count()
        let ended = Flag()
        let path = fixture.path
        let thread = Thread {
            _ = try? AdminClient(path: path).stream("/endless") { _ in
                lines.value.add(1, ordering: .relaxed)
                return true
            }
            ended.value.store(true, ordering: .relaxed)
        }
        thread.start()
        #expect(eventually { lines.value.load(ordering: .relaxed) > 0 })
        fixture.stop()
        #expect(fixture.routes.endless.cancels.load(ordering: .relaxed) == 1)
        #expect(eventually { ended.value.load(ordering: .relaxed) })
        #expect(!FileManager.default.fileExists(atPath: path), "stop() removes the socket file")
    }

    @Test func bodiesOverOneMebibyteAreRefused() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let client = AdminClient(path: fixture.path)
        let fits = try client.call("POST", "/size", body: String(repeating: "x", count: 1 << 20))
        #expect(fits.status == 200)
        #expect(fits.body == "1048576")
        let over = try client.call("POST", "/size", body: String(repeating: "x", count: (1 << 20) + 1))
        #expect(over.status == 413)
        #expect(over.body.contains("\"error\""))
        #expect(fixture.routes.calls.withLock { $0.filter { $0 == "/size" }.count } == 1)

        // Chunked, without a length: counted as it comes.
        let raw = try RawSocket.unix(fixture.path)
        let chunk = String(repeating: "y", count: 65536)
        raw.send("POST /size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in 0..<17 { raw.send("10000\r\n\(chunk)\r\n") }
        raw.send("0\r\n\r\n")
        #expect(raw.readAll().hasPrefix("HTTP/1.1 413 "))
    }

    @Test func malformedRequestsGet400AndTheServerCarriesOn() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        for garbage in ["GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: zz\r\n\r\n", "\u{1}\u{2}\u{3}\r\n\r\n"] {
            let raw = try RawSocket.unix(fixture.path)
            let started = Date()
            raw.send(garbage)
            let answer = raw.readAll()
            #expect(answer.hasPrefix("HTTP/1.1 400 "), "\(garbage.debugDescription): \(answer.debugDescription)")
            #expect(Date().timeIntervalSince(started) < 2, "the connection is closed after the 400")
        }
        // A client that connects and leaves.
        try RawSocket.unix(fixture.path).close()
        #expect(try AdminClient(path: fixture.path).call("GET", "/echo").status == 200)
    }

    @Test func keepAliveAndPipelinedRequests() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let raw = try RawSocket.unix(fixture.path)
        raw.send(
            "GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        let answer = raw.readAll()
        #expect(answer.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "\(answer)")
        #expect(answer.contains("n=1") && answer.contains("n=2"))
    }

    @Test func expectContinueIsAnswered() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let raw = try RawSocket.unix(fixture.path)
        raw.send(
            "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        )
        #expect(raw.readSome() == "HTTP/1.1 100 Continue\r\n\r\n")
        raw.send("hello")
        let answer = raw.readAll()
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(answer.hasSuffix("|hello"))
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")))
    func curlTalksToIt() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        let size = try Self.curl(
            fixture.path,
            "--data-binary",
            String(repeating: "c", count: 5000),
            "http://loomd/size"
        )
        #expect(size == "5000")
        fixture.routes.finite.withLock { $0 = FiniteStream(lines: ["one", "two", "three", "four"]) }
        #expect(try Self.curl(fixture.path, "-N", "http://loomd/finite") == "one\ntwo\nthree\nfour\n")
        #expect(
            try Self.curl(fixture.path, "http://loomd/nope", "-w", " %{http_code}")
                == "{\"error\":\"no route /nope\"} 404"
        )
    }

    private static func curl(_ socket: String, _ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "--max-time", "10", "--unix-socket", socket] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func theMetricsListenerServesOnlyMetrics() throws {
        let fixture = try Fixture(metrics: true)
        defer { fixture.stop() }
        let port = try #require(fixture.server.metricsLocalAddress?.port)
        let raw = try RawSocket.tcp(port: port)
        raw.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let answer = raw.readAll()
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(answer.contains("content-type: text/plain; version=0.0.4\r\n"))
        #expect(answer.hasSuffix("\r\n\r\nloom_up 1 tcp=true\n"))

        for request in ["GET /v1/status", "POST /metrics", "GET /metricsx"] {
            let raw = try RawSocket.tcp(port: port)
            raw.send("\(request) HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            #expect(raw.readAll().hasPrefix("HTTP/1.1 404 Not Found\r\n"), "\(request)")
        }
        #expect(fixture.routes.calls.withLock { $0 } == ["/metrics"], "only GET /metrics reached the handler")
        // The Unix socket still serves everything.
        #expect(try AdminClient(path: fixture.path).call("GET", "/metrics").body == "loom_up 1 tcp=false\n")
    }

    @Test func bindFailuresNameTheAddress() throws {
        let first = try Fixture(metrics: true)
        defer { first.stop() }
        let port = try #require(first.server.metricsLocalAddress?.port)
        let dir = Fixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/admin.sock"
        let bindError = #expect(throws: AdminListenError.self) {
            _ = try AdminServer(path: path, metricsAddress: ("127.0.0.1", port), logger: Logger(label: "test")) { _ in
                .error(500, "unused")
            }
        }
        let text = bindError?.description ?? ""
        #expect(text.hasPrefix("cannot listen for metrics on 127.0.0.1:\(port): "), "\(text)")
        #expect(text.contains("--metrics-address"))
        #expect(!FileManager.default.fileExists(atPath: path), "a failed start leaves no socket file")

        // A live server on the path is not replaced.
        let inUse = #expect(throws: AdminError.self) {
            _ = try AdminServer(path: first.path, metricsAddress: nil, logger: Logger(label: "test")) { _ in
                .error(500, "unused")
            }
        }
        #expect(inUse?.description.contains("is in use by a running loomd") == true)
        #expect(try AdminClient(path: first.path).call("GET", "/echo").status == 200)
    }

    @Test func socketAndDirectoryAreRootOnly() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        var info = stat()
        #expect(stat(fixture.path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(stat(fixture.directory + "/run", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
    }

    @Test(
        .enabled(if: getuid() == 0, "needs root to switch a child to another uid"),
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")),
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"))
    )
    func nonRootPeersGet403() throws {
        let fixture = try Fixture()
        defer { fixture.stop() }
        // As loomd sets it up, uid 65534 cannot even connect.
        let refused = try Self.asNobody(fixture.path)
        #expect(refused.contains("errno 13"), "\(refused)")
        // Opened up for the test: the server itself refuses.
        chmod(fixture.directory, 0o755)
        chmod(fixture.directory + "/run", 0o755)
        chmod(fixture.path, 0o666)
        let answer = try Self.asNobody(fixture.path)
        #expect(answer.hasPrefix("HTTP/1.1 403 Forbidden"), "\(answer)")
        #expect(answer.hasSuffix("{\"error\":\"the admin API is root-only (peer uid 65534)\"}"), "\(answer)")
        #expect(fixture.routes.calls.withLock { $0 }.isEmpty, "the handler never ran")
        // Root still gets through.
        #expect(try AdminClient(path: fixture.path).call("GET", "/echo").status == 200)
    }

    /// GET /echo over `path` from a python child running as uid/gid 65534.
    private static func asNobody(_ path: String) throws -> String {
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sys.argv[1])
            except OSError as e:
                print("errno %d" % e.errno, end="")
                sys.exit(0)
            s.sendall(b"GET /echo HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            out = b""
            while True:
                b = s.recv(65536)
                if not b: break
                out += b
            sys.stdout.write(out.decode())
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = [
            "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script, path,
        ]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func clientErrorsSayWhatToDo() throws {
        let dir = Fixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let missing = #expect(throws: AdminClientError.self) {
            _ = try AdminClient(path: dir + "/none.sock").call("GET", "/v1/status")
        }
        let text = missing?.description ?? ""
        #expect(text.hasPrefix("cannot reach loomd at \(dir)/none.sock: ") && text.contains("is loomd running"))
        let denied = AdminClientError(path: "/run/loom/admin.sock", error: .init("connect", errno: EACCES))
        #expect(
            denied.description
                == "permission denied on /run/loom/admin.sock: the admin API is root-only; run loomctl as root"
        )
        #expect(AdminHTTPError(status: 501, body: "{\"error\":\"not yet\"}").description == "loomd: not yet")
    }

    @Test func queriesAndMetricsAddressesParse() {
        let request = AdminHTTPRequest(method: "GET", target: "/v1/trace?pod=a%2Fb&n=10&x=%zz&q=a+b&empty")
        #expect(request.path == "/v1/trace")
        #expect(request.query == ["pod": "a/b", "n": "10", "x": "%zz", "q": "a b", "empty": ""])
        #expect(AdminHTTPRequest(method: "GET", target: "/plain").query.isEmpty)

        #expect(MetricsAddress(parsing: "127.0.0.1:15090") == MetricsAddress(host: "127.0.0.1", port: 15090))
        #expect(MetricsAddress(parsing: "[::1]:15090") == MetricsAddress(host: "::1", port: 15090))
        #expect(MetricsAddress(parsing: "localhost:9") == MetricsAddress(host: "localhost", port: 9))
        #expect(MetricsAddress(host: "::1", port: 15090).description == "[::1]:15090")
        for bad in [
            "15090", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":15090", "::1:15090", "[::1]15090", "a b:1",
        ] {
            #expect(MetricsAddress(parsing: bad) == nil, "\(bad)")
        }
    }
}

// MARK: - Fixture

/// A server on a temporary socket with test routes.
private final class Fixture: Sendable {
    let directory: String
    let path: String
    let server: AdminServer
    let routes = TestRoutes()
    private let stopped = Flag()

    init(metrics: Bool = false) throws {
        directory = Self.temporaryDirectory()
        path = directory + "/run/admin.sock"
        let routes = self.routes
        server = try AdminServer(
            path: path,
            metricsAddress: metrics ? ("127.0.0.1", 0) : nil,
            logger: Logger(label: "admin-test"),
            handler: routes.answer
        )
    }

    func stop() {
        guard !stopped.value.exchange(true, ordering: .relaxed) else { return }
        server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "loom-admin-\(getpid())-\(UUID().uuidString.prefix(8))"
    }
}

/// The test handler, and what it saw.
private final class TestRoutes: Sendable {
    /// Paths the handler was called for, in order.
    let calls = Mutex<[String]>([])
    let endless = EndlessStream()
    let quiet = QuietStream()
    let finite = Mutex<FiniteStream?>(nil)

    @Sendable func answer(_ request: AdminHTTPRequest) -> AdminAnswer {
        calls.withLock { $0.append(request.path) }
        switch request.path {
        case "/echo", "/v1/command":
            let query = request.query.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            let head = ([request.method, request.path] + query + ["tcp=\(request.viaTCP)"]).joined(separator: " ")
            return .response(AdminHTTPResponse(contentType: "text/plain", body: head + " |" + request.text))
        case "/size":
            return .response(AdminHTTPResponse(body: "\(request.body.count)"))
        case "/slow":
            usleep(1_000_000)
            return .response(AdminHTTPResponse(body: "slow"))
        case "/metrics":
            return .response(
                AdminHTTPResponse(contentType: "text/plain; version=0.0.4", body: "loom_up 1 tcp=\(request.viaTCP)\n")
            )
        case "/endless":
            return .stream(endless)
        case "/quiet":
            return .stream(quiet)
        case "/finite":
            return finite.withLock { $0 }.map { .stream($0) } ?? .error(500, "no stream")
        default:
            return .error(404, "no route \(request.path)")
        }
    }
}

private final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}

private final class Count: Sendable {
    let value = Atomic<Int>(0)
}

/// Gives its lines three per poll, then ends.
private final class FiniteStream: AdminStream {
    private let left: Mutex<[String]>
    let cancels = Atomic<Int>(0)

    init(lines: [String]) { left = Mutex(lines) }

    func poll() -> (lines: [String], ended: Bool) {
        left.withLock { left in
            let batch = Array(left.prefix(3))
            left.removeFirst(batch.count)
            return (batch, left.isEmpty)
        }
    }

    func cancel() { cancels.add(1, ordering: .relaxed) }
}

/// 64 KiB of lines per poll, forever.
private final class EndlessStream: AdminStream {
    let polls = Atomic<Int>(0)
    let cancels = Atomic<Int>(0)
    private static let line = String(repeating: "z", count: 1023)

    func poll() -> (lines: [String], ended: Bool) {
        polls.add(1, ordering: .relaxed)
        return (Array(repeating: Self.line, count: 64), false)
    }

    func cancel() { cancels.add(1, ordering: .relaxed) }
}

/// Nothing, for ever.
private final class QuietStream: AdminStream {
    let cancels = Atomic<Int>(0)

    func poll() -> (lines: [String], ended: Bool) { ([], false) }

    func cancel() { cancels.add(1, ordering: .relaxed) }
}

/// Polls `condition` for up to three seconds.
private func eventually(_ condition: () -> Bool) -> Bool {
    for _ in 0..<300 {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// A blocking client socket that speaks raw bytes, with a 5 s receive timeout.
private final class RawSocket {
    let fd: Int32
    private var closed = false

    private init(fd: Int32) {
        self.fd = fd
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    static func unix(_ path: String) throws -> RawSocket {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            throw AdminClientError(path: path, error: .init("connect", errno: errno))
        }
        return RawSocket(fd: fd)
    }

    static func tcp(port: Int) throws -> RawSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            throw AdminClientError(path: "127.0.0.1:\(port)", error: .init("connect", errno: errno))
        }
        return RawSocket(fd: fd)
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 { return }
            offset += n
        }
    }

    /// What one recv returns.
    func readSome() -> String {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        return String(decoding: chunk[0..<max(n, 0)], as: UTF8.self)
    }

    /// Everything until the server closes (or 5 s of silence).
    func readAll() -> String {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    func close() {
        if closed { return }
        closed = true
        Glibc.close(fd)
    }

    deinit { close() }
}
