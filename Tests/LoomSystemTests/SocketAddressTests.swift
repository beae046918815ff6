import Glibc
import Testing

@testable import LoomSystem

@Suite struct SocketAddressTests {
    @Test(arguments: ["10.0.2.7:8080", "[fd00::1]:443", "[::1]:15001", "127.0.0.1:1"])
    func parsesAndPrintsBack(_ text: String) throws {
        let address = try #require(SocketAddress(parsing: text))
        #expect(address.description == text)
    }

    @Test func roundTripsThroughSockaddr() throws {
        for text in ["192.168.1.20:65535", "[2001:db8::42]:80"] {
            let address = try #require(SocketAddress(parsing: text))
            var storage = sockaddr_storage()
            _ = address.write(to: &storage)
            #expect(SocketAddress(storage: storage) == address)
        }
    }

    @Test func loopbackAndUnspecified() throws {
        #expect(try #require(SocketAddress(parsing: "127.3.4.5:1")).isLoopback)
        #expect(try #require(SocketAddress(parsing: "[::1]:1")).isLoopback)
        #expect(try #require(SocketAddress(parsing: "[::ffff:127.0.0.1]:1")).isLoopback)
        #expect(!(try #require(SocketAddress(parsing: "10.0.0.1:1")).isLoopback))
        #expect(try #require(SocketAddress(parsing: "0.0.0.0:1")).isUnspecified)
        #expect(try #require(SocketAddress(parsing: "[::]:1")).isUnspecified)
    }

    @Test func rejectsGarbage() {
        #expect(SocketAddress(parsing: "not an address:80") == nil)
        #expect(SocketAddress(parsing: "10.0.0.1") == nil, "no port, no default")
        #expect(SocketAddress(parsing: "10.0.0.1", defaultPort: 80)?.port == 80)
        #expect(SocketAddress(parsing: "[::1") == nil)
        #expect(SocketAddress(parsing: "10.0.0.1:99999") == nil)
    }
}

@Suite struct NetworkNamespaceTests {
    @Test func selectorsResolveToPaths() {
        #expect(NetworkNamespace.resolvePath("pod-a") == "/var/run/netns/pod-a")
        #expect(NetworkNamespace.resolvePath("1234") == "/proc/1234/ns/net")
        #expect(NetworkNamespace.resolvePath("/run/netns/x") == "/run/netns/x")
    }

    @Test func missingNamespaceSaysWhatToCheck() {
        #expect {
            try NetworkNamespace.open("loom-test-no-such-netns")
        } throws: { error in
            "\(error)".contains("ip netns list")
        }
    }
}

@Suite struct SyscallTests {
    @Test func errorsCarryCallAndErrno() {
        #expect(throws: SystemError("connect", errno: Errno.connectionRefused)) {
            throw SystemError("connect", errno: Errno.connectionRefused)
        }
        #expect(SystemError("connect", errno: Errno.connectionRefused).description.contains("refused"))
    }

    @Test func emptyNonBlockingPipeReadWouldBlock() throws {
        let pipe = try Pipe.make(size: 0)
        defer { pipe.close() }
        let other = try Pipe.make(size: 0)
        defer { other.close() }
        #expect(try splice(from: pipe.read, to: other.write, count: 100) == .wouldBlock)
    }
}

@Suite struct MarkParsingTests {
    @Test func hexAndDecimal() {
        #expect(UInt32(decimalOrHex: "0x4c4f") == 0x4c4f)
        #expect(UInt32(decimalOrHex: "0X4C4F") == 0x4c4f)
        #expect(UInt32(decimalOrHex: "19535") == 19535)
        #expect(UInt32(decimalOrHex: "loom") == nil)
        #expect(UInt32(decimalOrHex: "0x1ffffffff") == nil)
    }
}
