// Real TLS 1.3 handshakes in one process over non-blocking socket pairs: mutual
// authentication, refused peers (another CA, an expired certificate) with the reasons a
// trace shows, a megabyte each way with writes retried after wantWrite, half close with
// close_notify, truncation, a reset, and kernel TLS asked for on a kernel without it.
import LoomSystem
import XCTest

@testable import LoomTLS

#if canImport(Glibc)
    import Glibc
#endif

final class TLSStreamTests: XCTestCase {
    var directory: TemporaryDirectory!
    var ca: CertificateAuthority!
    var fds: [Int32] = []
    let clientID = SpiffeID(trustDomain: "cluster.local", namespace: "demo", serviceAccount: "client")
    let serverID = SpiffeID(trustDomain: "cluster.local", namespace: "demo", serviceAccount: "server")

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)  // as loomd: a write to a gone peer is EPIPE
        directory = try TemporaryDirectory()
        ca = try CertificateAuthority.create(directory: directory.file("ca"), trustDomain: "cluster.local")
    }

    override func tearDown() {
        for fd in fds { close(fd) }
        directory.remove()
    }

    func context(
        _ identity: SpiffeID,
        issuer: CertificateAuthority? = nil,
        validSeconds: Int64 = 3600,
        kernelTLS: Bool = false
    ) throws -> TLSContext {
        let certificate = try (issuer ?? ca).issue(identity: identity, validSeconds: validSeconds)
        return try TLSContext(certificate: certificate, authority: ca, kernelTLS: kernelTLS)
    }

    /// A client and a server stream on the two ends of a new socket pair.
    func connect(client: TLSContext, server: TLSContext) throws -> (client: TLSStream, server: TLSStream) {
        let (a, b) = nonBlockingSocketPair()
        fds += [a, b]
        return (try TLSStream.client(context: client, fd: a), try TLSStream.server(context: server, fd: b))
    }

    func connected() throws -> (client: TLSStream, server: TLSStream) {
        let pair = try connect(client: try context(clientID), server: try context(serverID))
        let result = pumpHandshake(pair.client, pair.server)
        XCTAssertEqual(result.client, .done(0))
        XCTAssertEqual(result.server, .done(0))
        return pair
    }

    func testMutualHandshake() throws {
        let clientContext = try context(clientID)
        let serverContext = try context(serverID)
        let (client, server) = try connect(client: clientContext, server: serverContext)
        XCTAssertNil(client.peerURI)
        XCTAssertNil(client.cipher)
        let result = pumpHandshake(client, server)
        XCTAssertEqual(result.client, .done(0))
        XCTAssertEqual(result.server, .done(0))
        XCTAssertEqual(client.peerURI, serverID.uri)
        XCTAssertEqual(server.peerURI, clientID.uri)
        XCTAssertEqual(server.peerIdentity, clientID)
        XCTAssertEqual(client.peerSerial, serverContext.certificate.serial)
        XCTAssertEqual(server.peerSerial, clientContext.certificate.serial)
        for stream in [client, server] {
            XCTAssertEqual(stream.version, "TLSv1.3")
            XCTAssertTrue(TLSContext.ciphersuites.split(separator: ":").contains { $0 == stream.cipher ?? "" })
            XCTAssertFalse(stream.sessionReused)
            XCTAssertFalse(stream.kernelTLS.send)
            XCTAssertFalse(stream.kernelTLS.receive)
        }
        XCTAssertEqual(writeAll(client, Array("ping".utf8)), .done(4))
        let (status, bytes) = readSome(server)
        XCTAssertEqual(status, .done(4))
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "ping")
    }

    func testResumptionWithTheServersTicket() throws {
        let clientContext = try context(clientID)
        let serverContext = try context(serverID)
        let first = try connect(client: clientContext, server: serverContext)
        XCTAssertEqual(pumpHandshake(first.client, first.server).client, .done(0))
        // The ticket travels after the handshake: the client sees it when it reads.
        XCTAssertEqual(writeAll(first.server, Array("hi".utf8)), .done(2))
        XCTAssertEqual(readSome(first.client).0, .done(2))
        let ticket = try XCTUnwrap(first.client.takeSession())
        XCTAssertNil(first.client.takeSession(), "a ticket is taken once")

        let (a, b) = nonBlockingSocketPair()
        fds += [a, b]
        let client = try TLSStream.client(context: clientContext, fd: a, session: ticket)
        let server = try TLSStream.server(context: serverContext, fd: b)
        let result = pumpHandshake(client, server)
        XCTAssertEqual(result.client, .done(0))
        XCTAssertEqual(result.server, .done(0))
        XCTAssertTrue(client.sessionReused)
        XCTAssertTrue(server.sessionReused)
        // Both ends still know who the other is (from the session's certificates).
        XCTAssertEqual(client.peerURI, serverID.uri)
        XCTAssertEqual(server.peerURI, clientID.uri)

        // A server with a new context (a rotated certificate) has new ticket keys: a full
        // handshake, not an error.
        let rotated = try context(serverID)
        let (c, d) = nonBlockingSocketPair()
        fds += [c, d]
        let client2 = try TLSStream.client(context: clientContext, fd: c, session: ticket)
        let server2 = try TLSStream.server(context: rotated, fd: d)
        XCTAssertEqual(pumpHandshake(client2, server2).server, .done(0))
        XCTAssertFalse(server2.sessionReused)
        XCTAssertEqual(server2.peerURI, clientID.uri)
    }

    func testClientOfAnotherCAIsRefused() throws {
        let other = try CertificateAuthority.create(directory: directory.file("other"), trustDomain: "cluster.local")
        let (client, server) = try connect(
            client: try context(clientID, issuer: other),
            server: try context(serverID)
        )
        let result = pumpHandshake(client, server)
        let failure = try XCTUnwrap(result.server.failure, "\(result)")
        XCTAssertEqual(failure.kind, .verify)
        XCTAssertEqual(failure.reason, "certificate verify failed: unable to get local issuer certificate")
        // TLS 1.3: the client finished first and learns of the refusal from the alert.
        let (status, _) = result.client == .done(0) ? readSome(client) : (result.client, [])
        let alert = try XCTUnwrap(status.failure, "\(status)")
        XCTAssertEqual(alert.kind, .protocolError)
        XCTAssertTrue(alert.reason.contains("alert"), alert.reason)

        // The thread's error queue was left clean: the next connection is not blamed.
        _ = try connected()
    }

    func testServerOfAnotherCAIsRefused() throws {
        let other = try CertificateAuthority.create(directory: directory.file("other"), trustDomain: "cluster.local")
        let (client, server) = try connect(
            client: try context(clientID),
            server: try context(serverID, issuer: other)
        )
        let result = pumpHandshake(client, server)
        let failure = try XCTUnwrap(result.client.failure, "\(result)")
        XCTAssertEqual(failure.kind, .verify)
        XCTAssertTrue(failure.reason.contains("unable to get local issuer certificate"), failure.reason)
        let alert = try XCTUnwrap(result.server.failure, "\(result)")
        XCTAssertEqual(alert.kind, .protocolError)
        XCTAssertTrue(alert.reason.contains("unknown ca"), alert.reason)
    }

    func testExpiredClientIsRefused() throws {
        let (client, server) = try connect(
            client: try context(clientID, validSeconds: -3600),
            server: try context(serverID)
        )
        let result = pumpHandshake(client, server)
        let failure = try XCTUnwrap(result.server.failure, "\(result)")
        XCTAssertEqual(failure.kind, .verify)
        XCTAssertEqual(failure.reason, "certificate verify failed: certificate has expired")
        XCTAssertEqual(failure.description, failure.reason)
    }

    func testAMegabyteEachWay() throws {
        let (client, server) = try connected()
        let size = 1 << 20
        var generator = SystemRandomNumberGenerator()
        let up = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let down = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var sent = (up: 0, down: 0)
        var received = (up: [UInt8](), down: [UInt8]())
        var wantWrites = 0
        var buffer = [UInt8](repeating: 0, count: 16384)

        /// Writes the next chunk (the same pointer and count again after wantWrite).
        func push(_ stream: TLSStream, _ data: [UInt8], _ offset: inout Int) {
            guard offset < data.count else { return }
            let count = min(256 * 1024, data.count - offset)
            let status = data.withUnsafeBytes { stream.write(from: $0.baseAddress! + offset, count: count) }
            switch status {
            case .done(let n):
                XCTAssertEqual(n, count)
                offset += n
            case .wantWrite, .wantRead: wantWrites += 1
            default: XCTFail("write: \(status)")
            }
        }
        func pull(_ stream: TLSStream, _ into: inout [UInt8]) {
            while true {
                let status = buffer.withUnsafeMutableBytes { stream.read(into: $0.baseAddress!, count: $0.count) }
                guard case .done(let n) = status else {
                    XCTAssertEqual(status, .wantRead)
                    return
                }
                into += buffer[..<n]
            }
        }
        var rounds = 0
        while received.up.count < size || received.down.count < size {
            rounds += 1
            XCTAssertLessThan(rounds, 10000)
            if rounds >= 10000 { break }
            push(client, up, &sent.up)
            push(server, down, &sent.down)
            pull(server, &received.up)
            pull(client, &received.down)
        }
        XCTAssertGreaterThan(wantWrites, 0, "the socket buffer never filled: wantWrite was not exercised")
        XCTAssertEqual(received.up.count, size)
        XCTAssertEqual(checksum(received.up), checksum(up))
        XCTAssertEqual(received.down, down)
    }

    func testHalfClose() throws {
        let (client, server) = try connected()
        XCTAssertEqual(writeAll(client, Array("last words".utf8)), .done(10))
        XCTAssertEqual(client.shutdown(), .done(0))
        XCTAssertEqual(client.shutdown(), .done(0), "a second shutdown does nothing")
        var (status, bytes) = readSome(server)
        XCTAssertEqual(status, .done(10))
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "last words")
        (status, _) = readSome(server)
        XCTAssertEqual(status, .closed)
        // The other direction still works.
        XCTAssertEqual(writeAll(server, Array("reply".utf8)), .done(5))
        (status, bytes) = readSome(client)
        XCTAssertEqual(status, .done(5))
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "reply")
        XCTAssertEqual(server.shutdown(), .done(0))
        (status, _) = readSome(client)
        XCTAssertEqual(status, .closed)
    }

    func testEndOfStreamWithoutCloseNotifyIsTruncation() throws {
        let (client, server) = try connected()
        XCTAssertEqual(writeAll(client, Array("x".utf8)), .done(1))
        // Take the server's session ticket first: closing with unread bytes would be a reset.
        XCTAssertEqual(readSome(client).0, .wantRead)
        close(fds[0])
        fds.removeFirst()
        var (status, _) = readSome(server)
        XCTAssertEqual(status, .done(1))
        (status, _) = readSome(server)
        let failure = try XCTUnwrap(status.failure, "\(status)")
        XCTAssertEqual(failure.kind, .truncated)
        XCTAssertEqual(failure.reason, "peer closed the connection without close_notify (truncated)")
        _ = client
    }

    func testWriteToAGonePeerIsReset() throws {
        let (client, server) = try connected()
        close(fds[1])
        fds.removeLast()
        let status = writeAll(client, [UInt8](repeating: 1, count: 1000))
        let failure = try XCTUnwrap(status.failure, "\(status)")
        XCTAssertEqual(failure.kind, .reset)
        XCTAssertEqual(failure.errno, EPIPE)
        _ = server
    }

    /// SSL_OP_ENABLE_KTLS on a TCP connection: the handshake works whether or not the
    /// kernel has TLS; without it the streams report that the kernel took nothing over.
    func testKernelTLSRequested() throws {
        let listener = try FileDescriptor.tcpSocket(family: AF_INET)
        defer { listener.close() }
        try listener.listen(on: .v4(address: 0x7f00_0001, port: 0), reusePort: false, backlog: 1)
        let address = try XCTUnwrap(listener.localAddress())
        let a = try FileDescriptor.tcpSocket(family: AF_INET)
        fds.append(a.rawValue)
        _ = try a.connect(to: address)
        var accepted: FileDescriptor?
        for _ in 0..<1000 where accepted == nil {
            if case .processed(let (fd, _)) = try listener.accept() { accepted = fd } else { usleep(1000) }
        }
        let b = try XCTUnwrap(accepted)
        fds.append(b.rawValue)
        let client = try TLSStream.client(context: try context(clientID, kernelTLS: true), fd: a.rawValue)
        let server = try TLSStream.server(context: try context(serverID, kernelTLS: true), fd: b.rawValue)
        XCTAssertTrue(client.context.kernelTLS)
        var result = pumpHandshake(client, server)
        for _ in 0..<100 where result.client != .done(0) || result.server != .done(0) {
            usleep(1000)  // loopback TCP: the bytes may take a moment
            result = pumpHandshake(client, server)
        }
        XCTAssertEqual(result.client, .done(0))
        XCTAssertEqual(result.server, .done(0))
        XCTAssertEqual(server.peerURI, clientID.uri)
        if !KernelTLS.probe().isAvailable {
            XCTAssertFalse(client.kernelTLS.send || client.kernelTLS.receive)
            XCTAssertFalse(server.kernelTLS.send || server.kernelTLS.receive)
        }
        XCTAssertEqual(writeAll(client, Array("over tcp".utf8)), .done(8))
        var (status, bytes) = readSome(server)
        for _ in 0..<100 where status == .wantRead { (status, bytes) = readSome(server) }
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "over tcp")
    }

    private func checksum(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        return hash
    }
}
