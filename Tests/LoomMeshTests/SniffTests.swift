import Testing

@testable import LoomMesh

func sniff(_ bytes: [UInt8], limit: Int = 16_384) -> SniffOutcome {
    bytes.withUnsafeBytes { Sniffer.sniff($0, limit: limit) }
}

func sniff(_ text: String, limit: Int = 16_384) -> SniffOutcome { sniff(Array(text.utf8), limit: limit) }

func isMalformed(_ outcome: SniffOutcome) -> Bool {
    if case .malformed = outcome { return true }
    return false
}

/// Builds ClientHellos byte by byte (RFC 8446 4.1.2).
enum ClientHello {
    static func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xff), UInt8(value & 0xff)] }

    static func sniExtension(_ names: [String]) -> (type: Int, body: [UInt8]) {
        var list: [UInt8] = []
        for name in names { list += [0] + u16(name.utf8.count) + Array(name.utf8) }
        return (0, u16(list.count) + list)
    }

    /// The handshake message (header included).
    static func message(sni: String? = nil, extensions: [(type: Int, body: [UInt8])]? = nil) -> [UInt8] {
        var body: [UInt8] = [3, 3] + [UInt8](repeating: 0xAB, count: 32)
        body += [32] + [UInt8](repeating: 0x11, count: 32)  // session id
        body += u16(4) + [0x13, 0x01, 0x13, 0x02]  // cipher suites
        body += [1, 0]  // compression: null
        var all = extensions ?? [(type: 0x2b, body: [2, 3, 4])]  // supported_versions
        if let sni { all.insert(sniExtension([sni]), at: 0) }
        if extensions != nil || sni != nil || !all.isEmpty {
            var block: [UInt8] = []
            for e in all { block += u16(e.type) + u16(e.body.count) + e.body }
            body += u16(block.count) + block
        }
        return [1, UInt8(body.count >> 16), UInt8(body.count >> 8 & 0xff), UInt8(body.count & 0xff)] + body
    }

    /// The message in handshake records of at most `fragment` bytes.
    static func records(_ message: [UInt8], fragment: Int = 16_384, version: UInt8 = 1) -> [UInt8] {
        var out: [UInt8] = []
        var start = 0
        while start < message.count {
            let end = min(start + fragment, message.count)
            out += [22, 3, version] + u16(end - start) + message[start..<end]
            start = end
        }
        return out
    }
}

func bytes(hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        out.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return out
}

/// `openssl s_client -connect 127.0.0.1:PORT -servername X.Example` (OpenSSL 3.0), as
/// captured by a Python listener on loopback: one record, TLS 1.3 with 1.2 fallback.
let opensslClientHello = bytes(
    hex: "1603010136010001320303cb36ef2ee6550a1edb47852c4561d0d894c6bbb5b101a34a501112ae726ff4aa20589060e8a4"
        + "1024fac8d2e8ff8c000f9904eb5aa437a8759328aa62184ce46021003e130213031301c02cc030009fcca9cca8ccaac02bc0"
        + "2f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000ab0000000e00"
        + "0c000009582e4578616d706c65000b000403000102000a00160014001d0017001e0019001801000101010201030104002300"
        + "000016000000170000000d002a0028040305030603080708080809080a080b080408050806040105010601030303010302"
        + "040205020602002b0009080304030303020301002d00020101003300260024001d00205317db36400b39e2e0e0580f177667"
        + "4d8cf965a950d65adc6f876916aedd4b31"
)

@Suite struct SniffTLSTests {
    @Test func capturedOpenSSLClientHelloGivesItsServerNameLowercased() {
        #expect(opensslClientHello.count == 315)
        #expect(sniff(opensslClientHello) == .tls(serverName: "x.example"))
    }

    @Test func handMadeClientHellos() {
        #expect(
            sniff(ClientHello.records(ClientHello.message(sni: "Api.Example.COM")))
                == .tls(serverName: "api.example.com")
        )
        #expect(sniff(ClientHello.records(ClientHello.message(sni: "example.com."))) == .tls(serverName: "example.com"))
        #expect(sniff(ClientHello.records(ClientHello.message())) == .tls(serverName: nil))
        #expect(sniff(ClientHello.records(ClientHello.message(extensions: []))) == .tls(serverName: nil))
        // SSL 3.0 record version, and bytes after the ClientHello (ignored).
        let trailing = ClientHello.records(ClientHello.message(sni: "a.b"), version: 0) + [23, 3, 3, 0, 1, 0]
        #expect(sniff(trailing) == .tls(serverName: "a.b"))
        // A ClientHello with no extensions block at all.
        var bare = ClientHello.message(extensions: [])
        bare.removeLast(2)
        bare[3] -= 2
        #expect(sniff(ClientHello.records(bare)) == .tls(serverName: nil))
    }

    @Test func unknownNameTypesAreSkipped() {
        var list: [UInt8] = [7] + ClientHello.u16(3) + Array("xyz".utf8)
        list += [0] + ClientHello.u16(5) + Array("a.com".utf8)
        let hello = ClientHello.message(extensions: [(0, ClientHello.u16(list.count) + list)])
        #expect(sniff(ClientHello.records(hello)) == .tls(serverName: "a.com"))
    }

    @Test func everyTruncationNeedsMoreThenTheLimitSaysTooLarge() {
        let hellos = [
            opensslClientHello,
            ClientHello.records(ClientHello.message(sni: "a.example")),
            ClientHello.records(ClientHello.message(sni: "split.example"), fragment: 7),
            ClientHello.records(ClientHello.message(sni: "tiny.example"), fragment: 1),
        ]
        for hello in hellos {
            let answer = sniff(hello)
            #expect(answer != .needMore && !isMalformed(answer))
            for n in 0..<hello.count {
                let prefix = Array(hello.prefix(n))
                #expect(sniff(prefix) == .needMore, "\(n) of \(hello.count)")
                if n > 0 {
                    #expect(sniff(hello, limit: n) == .malformed("TLS ClientHello larger than \(n) bytes"))
                }
            }
            #expect(sniff(hello, limit: hello.count) == answer)
        }
    }

    @Test func aClientHelloSplitOverRecordsIsReassembled() {
        let message = ClientHello.message(sni: "Frag.Example.net")
        for fragment in [1, 2, 3, 4, 5, 50, message.count - 1] {
            #expect(sniff(ClientHello.records(message, fragment: fragment)) == .tls(serverName: "frag.example.net"))
        }
    }

    @Test func aClientHelloThatCannotFitFailsAtOnce() {
        let big = ClientHello.message(sni: "big.example", extensions: [(0x15, [UInt8](repeating: 0, count: 3000))])
        let records = ClientHello.records(big)
        // The lengths in the first 9 bytes already say it needs more than 1024.
        #expect(sniff(Array(records.prefix(9)), limit: 1024) == .malformed("TLS ClientHello larger than 1024 bytes"))
        #expect(sniff(Array(records.prefix(8)), limit: 1024) == .needMore)
        #expect(sniff(records, limit: 4096) == .tls(serverName: "big.example"))
    }

    @Test func brokenClientHellosAreMalformed() {
        let message = ClientHello.message(sni: "a.example")
        var notHello = message
        notHello[0] = 2
        #expect(sniff(ClientHello.records(notHello)) == .malformed("TLS handshake is not a ClientHello"))
        let twoNames = ClientHello.message(extensions: [ClientHello.sniExtension(["a.com", "b.com"])])
        #expect(isMalformed(sniff(ClientHello.records(twoNames))))
        let twoExtensions = ClientHello.message(
            extensions: [ClientHello.sniExtension(["a.com"]), ClientHello.sniExtension(["a.com"])]
        )
        #expect(sniff(ClientHello.records(twoExtensions)) == .malformed("duplicate server_name extension"))
        for name in ["a b.com", "a/b", "", ".", "é.com", String(repeating: "a", count: 256)] {
            let hello = ClientHello.message(extensions: [ClientHello.sniExtension([name])])
            #expect(isMalformed(sniff(ClientHello.records(hello))), "\(name)")
        }
        let badList: [UInt8] = ClientHello.u16(20) + [0] + ClientHello.u16(5) + Array("a.com".utf8)
        let badLength = ClientHello.message(extensions: [(0, badList)])
        #expect(sniff(ClientHello.records(badLength)) == .malformed("bad server_name extension"))
        var badExtensions = ClientHello.message(sni: "a.example")
        badExtensions[badExtensions.count - 1] = 9  // cuts into supported_versions' body
        badExtensions.append(0)
        badExtensions[3] += 1
        #expect(isMalformed(sniff(ClientHello.records(badExtensions))))
        #expect(isMalformed(sniff([22, 3, 1, 0, 0, 1])))  // empty record
        #expect(isMalformed(sniff([22, 3, 1, 0x40, 1, 1])))  // record over 2^14
        var interleaved = ClientHello.records(message, fragment: 20)
        interleaved[25] = 23
        #expect(sniff(interleaved) == .malformed(SniffTLS.interleaved))
        var badVersion = ClientHello.records(message, fragment: 20)
        badVersion[27] = 9
        #expect(sniff(badVersion) == .malformed("bad TLS record version"))
        var badSession = ClientHello.records(message)
        badSession[5 + 4 + 2 + 32] = 33
        #expect(sniff(badSession) == .malformed("bad ClientHello session id"))
    }

    @Test func notTLSAtAll() {
        #expect(sniff([22]) == .needMore)
        #expect(sniff([22, 3]) == .needMore)
        #expect(sniff([22, 3, 1, 0]) == .needMore)
        #expect(sniff([22, 2]) == .opaque)
        #expect(sniff([22, 3, 5]) == .opaque)
        #expect(sniff([0x80, 0x2e, 0x01, 0x03, 0x01]) == .opaque)  // SSLv2-compatible hello
        #expect(sniff([23, 3, 3, 0, 5]) == .opaque)  // application data
    }
}

@Suite struct SniffHTTPTests {
    @Test func aRequestHead() {
        let head =
            "GET /api/v1?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent:  curl/8.1 \r\nX-Env:canary\r\n\r\n"
        let expected = HTTPRequestHead(
            method: "GET",
            path: "/api/v1?x=1",
            host: "example.com",
            headers: [("host", "Example.COM:8080"), ("user-agent", "curl/8.1"), ("x-env", "canary")]
        )
        #expect(sniff(head) == .http(expected))
        #expect(sniff(head + "body bytes \u{0}\u{1}") == .http(expected))
    }

    @Test func hostForms() {
        func host(_ value: String) -> String?? {
            guard case .http(let head) = sniff("GET / HTTP/1.1\r\nHost: \(value)\r\n\r\n") else { return .none }
            return .some(head.host)
        }
        #expect(host("a.example") == "a.example")
        #expect(host("A.Example.:443") == "a.example")
        #expect(host("[FD00::1]:8080") == "fd00::1")
        #expect(host("[::1]") == "::1")
        #expect(host("10.0.0.1:80") == "10.0.0.1")
        #expect(host("") == .some(nil))
        #expect(host("a.example:") == "a.example")
        for bad in ["a b", "a/b", "a:b", "a:80:90", "[::1", "[::1]x", "[zz::1]", "u@a.example"] {
            #expect(host(bad) == .none, "\(bad)")
            #expect(isMalformed(sniff("GET / HTTP/1.1\r\nHost: \(bad)\r\n\r\n")), "\(bad)")
        }
    }

    @Test func withoutHost() {
        #expect(sniff("GET / HTTP/1.0\r\n\r\n") == .http(HTTPRequestHead(method: "GET", path: "/")))
        let options = sniff("OPTIONS * HTTP/1.1\r\nAccept: */*\r\n\r\n")
        #expect(options == .http(HTTPRequestHead(method: "OPTIONS", path: "*", headers: [("accept", "*/*")])))
    }

    @Test func requestTargetForms() {
        let absolute = sniff("GET http://Foo.Example:81/p/q?r=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        let expected = HTTPRequestHead(
            method: "GET",
            path: "/p/q?r=1",
            host: "foo.example",
            headers: [("host", "other.example")]
        )
        #expect(absolute == .http(expected))
        #expect(
            sniff("GET https://a.b HTTP/1.1\r\n\r\n") == .http(HTTPRequestHead(method: "GET", path: "/", host: "a.b"))
        )
        #expect(
            sniff("GET h2c://a.b?x HTTP/1.1\r\n\r\n") == .http(HTTPRequestHead(method: "GET", path: "/?x", host: "a.b"))
        )
        let connect = sniff("CONNECT DB.example:5432 HTTP/1.1\r\n\r\n")
        #expect(connect == .http(HTTPRequestHead(method: "CONNECT", path: "DB.example:5432", host: "db.example")))
        #expect(sniff("GET http://user@a.b/ HTTP/1.1\r\n\r\n") == .malformed("user info in request target"))
        #expect(sniff("GET a.b/c HTTP/1.1\r\n\r\n") == .malformed("bad request target"))
        #expect(sniff("GET 1http://a HTTP/1.1\r\n\r\n") == .malformed("bad request target"))
    }

    @Test func everyPrefixNeedsMore() {
        let head = "POST /upload HTTP/1.1\r\nHost: up.example\r\nContent-Length: 3\r\n\r\n"
        let full = Array(head.utf8)
        for n in 0..<full.count {
            #expect(sniff(Array(full.prefix(n))) == .needMore, "\(n)")
            if n > 0 {
                #expect(sniff(full, limit: n) == .malformed("request head larger than \(n) bytes"))
            }
        }
        guard case .http(let request) = sniff(full, limit: full.count) else {
            Issue.record("not HTTP")
            return
        }
        #expect(request.method == "POST" && request.host == "up.example" && request.headers.count == 2)
    }

    @Test func oversizeHeads() {
        let big = "GET / HTTP/1.1\r\nHost: a\r\nCookie: " + String(repeating: "c", count: 5000) + "\r\n\r\n"
        #expect(sniff(big, limit: 1024) == .malformed("request head larger than 1024 bytes"))
        #expect(sniff(String(big.prefix(1000)), limit: 1024) == .needMore)
        #expect(sniff(big, limit: 8192) != .needMore)
    }

    @Test func malformedHeads() {
        let cases: [(String, String)] = [
            ("GET / HTTP/1.1\r\nHost example\r\n\r\n", "bad character in header name"),
            ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", "header line without a colon"),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", "bad character in header name"),
            ("GET / HTTP/1.1\r\n: x\r\n\r\n", "empty header name"),
            ("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", "obsolete line folding"),
            ("GET / HTTP/1.1\r\nX-A: a\u{1}b\r\n\r\n", "control character in header value"),
            ("GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n", "control character in header value"),
            ("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", "bare CR in request head"),
            ("GET / HTTP/1.1\r\n\rx", "bare CR in request head"),
            ("GET / HTTP/1.1\nHost: x\n\n", "request line does not end in CRLF"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "conflicting Host headers"),
            ("GET / HTTP/1.x\r\n\r\n", "bad HTTP version"),
            ("GET / HTTP/x.1\r\n\r\n", "bad HTTP version"),
        ]
        for (text, reason) in cases {
            #expect(sniff(text) == .malformed(reason), "\(text.debugDescription)")
        }
        // The same Host twice (any case) is fine.
        guard case .http(let head) = sniff("GET / HTTP/1.1\r\nHost: a.b\r\nhost: A.B\r\n\r\n") else {
            Issue.record("not HTTP")
            return
        }
        #expect(head.host == "a.b" && head.headers.count == 2)
    }

    @Test func malformedIsKnownBeforeTheHeadEnds() {
        #expect(sniff("GET / HTTP/1.1\r\nX-A: \u{1}") == .malformed("control character in header value"))
        #expect(sniff("GET / HTTP/1.1\r\n  ") == .malformed("obsolete line folding"))
        #expect(sniff("GET / HTTP/1.") == .needMore)
        #expect(sniff("GET / HTTP/1.1\r\n") == .needMore)
        #expect(sniff("GET / HTTP/1.1x") == .malformed("request line does not end in CRLF"))
    }

    @Test func otherProtocolsAreOpaqueAtOnce() {
        #expect(sniff([]) == .needMore)
        #expect(sniff([0]) == .opaque)
        #expect(sniff([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]) == .opaque)  // PostgreSQL SSLRequest
        #expect(sniff("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") == .opaque)
        #expect(sniff("SSH-2.0-OpenSSH_9.2p1") == .needMore)  // still a possible method
        #expect(sniff("*1\r\n$4\r\nPING\r\n") == .opaque)  // Redis
        #expect(sniff("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == .opaque)  // HTTP/2 prior knowledge
        #expect(sniff("GET\r\n") == .opaque)
        #expect(sniff("SET key value\r\n") == .opaque)  // Redis inline command
        #expect(sniff("GET / HTTQ") == .opaque)
        #expect(sniff("GET  / HTTP/1.1\r\n\r\n") == .opaque)
        #expect(sniff("GET /\u{7f} HTTP/1.1\r\n\r\n") == .opaque)
        #expect(sniff("GET /\t HTTP/1.1\r\n\r\n") == .opaque)
        #expect(sniff(" GET / HTTP/1.1\r\n\r\n") == .opaque)
        #expect(sniff(String(repeating: "A", count: 33)) == .opaque)
        #expect(sniff("{\"json\": 1}") == .opaque)
    }
}

@Suite struct SniffFuzzTests {
    /// Random bytes and mutated ClientHellos and heads: never a crash, and a final answer
    /// for a prefix stays the answer for the whole input.
    @Test func randomInputs() {
        var random = BalancerRandom(seed: 42)
        let seeds: [[UInt8]] = [
            opensslClientHello,
            ClientHello.records(ClientHello.message(sni: "a.example"), fragment: 40),
            Array("GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nX-A: b\r\n\r\n".utf8),
            Array("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n".utf8),
        ]
        var outcomes: [String: Int] = [:]
        for round in 0..<3000 {
            var input: [UInt8]
            if round % 3 == 0 {
                let count = Int(random.next(below: 64))
                input = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                if !input.isEmpty && round % 2 == 0 { input[0] = 22 }
            } else {
                input = seeds[Int(random.next(below: UInt64(seeds.count)))]
                for _ in 0...Int(random.next(below: 4)) {
                    let at = Int(random.next(below: UInt64(input.count)))
                    input[at] = UInt8(truncatingIfNeeded: random.next())
                }
            }
            let whole = sniff(input)
            let step = max(1, input.count / 40)
            for n in stride(from: 0, to: input.count, by: step) {
                let part = sniff(Array(input.prefix(n)))
                if part != .needMore { #expect(part == whole, "prefix \(n) of \(input)") }
            }
            outcomes["\(whole)".prefix(6).description, default: 0] += 1
        }
        print("sniff fuzz outcomes: \(outcomes.sorted { $0.key < $1.key })")
    }
}

@Suite struct RouteMatchTests {
    @Test func wildcardNames() {
        let cases: [(String, String, Bool)] = [
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "xexample.com", false),
            ("*.example.com", ".example.com", false),
            ("*.Example.com", "A.EXAMPLE.COM", true),
            ("api.example.com", "API.example.com", true),
            ("api.example.com", "api.example.com.", true),
            ("api.example.com", "api.example.co", false),
            ("*", "anything.at.all", true),
            ("*", "", false),
            ("*example.com", "aexample.com", false),
        ]
        for (pattern, name, expected) in cases {
            #expect(Sniffer.nameMatches(pattern, name) == expected, "\(pattern) ~ \(name)")
        }
    }

    @Test func fields() {
        let tls = SniffOutcome.tls(serverName: "shop.example.com")
        let noSNI = SniffOutcome.tls(serverName: nil)
        let http = SniffOutcome.http(
            HTTPRequestHead(
                method: "GET",
                path: "/api/v2/items",
                host: "shop.example.com",
                headers: [("host", "shop.example.com"), ("x-env", "canary")]
            )
        )
        let all: [SniffOutcome] = [tls, noSNI, http, .opaque, .malformed("x"), .needMore]
        for outcome in all { #expect(RouteMatch().matches(outcome)) }

        #expect(RouteMatch(sni: "*.example.com").matches(tls))
        #expect(!RouteMatch(sni: "*.example.com").matches(noSNI))
        #expect(!RouteMatch(sni: "*.example.com").matches(http))
        #expect(!RouteMatch(sni: "other.example.com").matches(tls))

        #expect(RouteMatch(host: "shop.example.com").matches(http))
        #expect(RouteMatch(host: "*.example.com", pathPrefix: "/api/").matches(http))
        #expect(!RouteMatch(host: "*.example.com").matches(tls))
        #expect(!RouteMatch(pathPrefix: "/api").matches(.opaque))
        #expect(!RouteMatch(pathPrefix: "/web").matches(http))
        #expect(RouteMatch(headers: [HeaderMatch(name: "x-env", value: "canary")]).matches(http))
        #expect(!RouteMatch(headers: [HeaderMatch(name: "x-env", value: "Canary")]).matches(http))
        #expect(!RouteMatch(headers: [HeaderMatch(name: "x-other", value: "canary")]).matches(http))
        let everything = RouteMatch(
            host: "*.example.com",
            pathPrefix: "/api",
            headers: [
                HeaderMatch(name: "x-env", value: "canary"), HeaderMatch(name: "host", value: "shop.example.com"),
            ]
        )
        #expect(everything.matches(http))
        #expect(!RouteMatch(sni: "shop.example.com", host: "shop.example.com").matches(http))
    }

    @Test func sniffedThenMatched() {
        let outcome = sniff("GET /api/x HTTP/1.1\r\nHost: Shop.Example.com:8080\r\nX-Env: canary\r\n\r\n")
        #expect(
            RouteMatch(host: "*.example.com", pathPrefix: "/api", headers: [.init(name: "x-env", value: "canary")])
                .matches(outcome)
        )
        let hello = sniff(ClientHello.records(ClientHello.message(sni: "Pay.Example.COM")))
        #expect(RouteMatch(sni: "*.example.com").matches(hello))
    }
}
