import Testing

@testable import LoomMesh

#if canImport(Glibc)
    import Glibc
#endif

/// Opt-in: heap allocations in steady state, counted by the LD_PRELOAD counter of the
/// integration tests. Run alone (other tests allocate meanwhile), optimized (only an
/// optimized build is held to zero):
///
///     cc -shared -fPIC -O2 -o /tmp/libmc.so Tests/Integration/malloc_count.c -ldl
///     LD_PRELOAD=/tmp/libmc.so LOOM_MALLOC_COUNT_FILE=/tmp/mc.txt \
///         swift test -c release -Xswiftc -enable-testing --filter BalancerAllocationTests
@Suite(.enabled(if: getenv("LOOM_MALLOC_COUNT_FILE") != nil))
struct BalancerAllocationTests {
    /// The counter's total so far (reading it allocates nothing).
    static func allocations() -> Int {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGURG)
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)  // test threads may block it
        raise(SIGURG)
        let fd = open(getenv("LOOM_MALLOC_COUNT_FILE"), O_RDONLY)
        defer { close(fd) }
        var buffer: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        return withUnsafeMutableBytes(of: &buffer) { raw in
            let n = read(fd, raw.baseAddress, raw.count)
            var value = 0
            for i in 0..<max(n, 0) where raw[i] >= 48 && raw[i] <= 57 { value = value * 10 + Int(raw[i] - 48) }
            return value
        }
    }

    @Test func picksAndOutlierChecksAllocateNothing() {
        let weights = (0..<100).map { UInt32(1 + $0 % 4) }
        var balancers = LoadBalancing.allCases.map { Balancer(policy: $0, weights: weights, seed: 1) }
        var detector = OutlierDetector(count: 100, policy: OutlierPolicy())
        let hello = ClientHello.records(ClientHello.message(sni: "a.example"), fragment: 30)
        let head = Array("GET / HTTP/1.1\r\nHost: a.example\r\n".utf8)
        for b in balancers.indices { _ = balancers[b].pick(clientHash: 1) { _ in true } }  // builds the ring
        let before = Self.allocations()
        let baseline = Self.allocations() - before
        let start = Self.allocations()
        var sink = 0
        for i in 0..<20_000 {
            let now = Int64(i)
            for b in balancers.indices {
                let e = balancers[b].pick(clientHash: UInt64(i) &* 0x9E37_79B9) {
                    $0 != i % 7 && !detector.isEjected($0, now: now)
                }!
                balancers[b].opened(e)
                balancers[b].closed(e)
                sink &+= e
            }
            if detector.failed(i % 100, now: now) { sink &+= 1 }
            if i % 3 == 0 { detector.succeeded(i % 100) }
            hello.withUnsafeBytes {
                if case .tls(let name?) = Sniffer.sniff($0, limit: 4096) { sink &+= name.utf8.count }
            }
            head.withUnsafeBytes { if Sniffer.sniff($0, limit: 4096) == .needMore { sink &+= 1 } }
        }
        let allocated = Self.allocations() - start - baseline
        print("allocations in 20,000 rounds of picks, outlier checks and sniffs: \(allocated) (\(sink % 2))")
        #if !DEBUG
            #expect(allocated == 0)  // unoptimized code allocates where optimized code does not
        #endif
    }
}
