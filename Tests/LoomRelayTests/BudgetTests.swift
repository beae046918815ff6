import Testing

@testable import LoomRelay
@testable import LoomSystem

@Suite struct ResourceBudgetTests {
    @Test func defaultBudgetOnThisMachineShape() {
        // 20,000 fds, fs.pipe-user-pages-soft = 16384, 64 KiB pipes, 4 KiB pages, 2 loops.
        let b = ResourceBudget(
            fileLimit: 20_000,
            pipePages: 16384,
            pageSize: 4096,
            loops: 2,
            requestedConnections: nil
        )
        #expect(b.pagesPerPipe == 16)
        #expect(b.maxPipes == 1024)
        #expect(b.reservedFiles + 2 * b.maxPipes + 2 * b.maxConnections <= 20_000)
        #expect(b.maxConnections >= 5000, "the 5,000-connection test must fit")
    }

    @Test func requestedLimitAboveBudgetIsClamped() {
        let b = ResourceBudget(
            fileLimit: 1024,
            pipePages: 16384,
            pageSize: 4096,
            loops: 1,
            requestedConnections: 100_000
        )
        #expect(b.clamped)
        #expect(b.reservedFiles + 2 * b.maxPipes + 2 * b.maxConnections <= 1024)
    }

    @Test func requestedLimitWithinBudgetIsKept() {
        let b = ResourceBudget(
            fileLimit: 20_000,
            pipePages: 16384,
            pageSize: 4096,
            loops: 1,
            requestedConnections: 10
        )
        #expect(!b.clamped)
        #expect(b.maxConnections == 10)
    }

    @Test func fewFdsCapPipesToo() {
        let b = ResourceBudget(
            fileLimit: 600,
            pipePages: 16384,
            pageSize: 4096,
            loops: 2,
            requestedConnections: nil
        )
        #expect(b.maxPipes <= (600 - b.reservedFiles) / 4, "pipes take at most half the free fds")
        #expect(b.pipePagesPerLoop(loops: 2) == b.maxPipes * 16 / 2)
    }
}

@Suite struct PipePoolTests {
    @Test func reusesEmptyPipesAndStopsAtItsPageBudget() throws {
        var pool = PipePool(bulkSize: 65536, pageLimit: 32, pageSize: 4096, cacheLimit: 2)
        let a = try #require(try pool.acquire())
        let b = try #require(try pool.acquire())
        #expect(try pool.acquire() == nil, "32 pages = two 64 KiB pipes: callers wait")
        pool.release(a, empty: true)
        #expect(pool.cachedCount == 1)
        let c = try #require(try pool.acquire())
        #expect(c.read == a.read, "an empty pipe is reused")
        pool.release(b, empty: false)
        #expect(pool.open == 1, "a pipe with bytes left is closed, never reused")
        pool.release(c, empty: true)
        pool.drain()
        #expect(pool.open == 0 && pool.openPages == 0)
    }

    @Test func bulkPipesGrowWithinTheBudgetAndAreReusedForBulk() throws {
        var pool = PipePool(bulkSize: 1 << 20, pageLimit: 256 + 16, pageSize: 4096)
        let small = try #require(try pool.acquire())
        #expect(small.capacity == 65536)
        let grown = pool.grow(small)
        #expect(grown.capacity == 1 << 20)
        #expect(pool.openPages == 256)
        let other = try #require(try pool.acquire())
        #expect(pool.grow(other).capacity == 65536, "no pages left for a second bulk pipe")
        pool.release(other, empty: true)
        pool.release(grown, empty: true)
        #expect(try pool.acquire(bulk: true)?.capacity == 1 << 20, "bulk directions get the bulk pipe back")
        #expect(try pool.acquire(bulk: false)?.capacity == 65536)
    }

    @Test func pipeSizeIsAskedOfTheKernel() throws {
        let pipe = try Pipe.make(size: 1 << 18)
        defer { pipe.close() }
        #expect(pipe.capacity == 1 << 18)
    }
}

@Suite struct TokenTests {
    @Test func tokensRoundTrip() {
        let conn = Connection(index: 12345)
        conn.generation = 77
        let (index, generation, side) = Token.decode(conn.token(.upstream))
        #expect(index == 12345 && generation == 77 && side == .upstream)
        #expect(!Token.isListener(conn.token(.client)))
        #expect(Token.isListener(Token.listener(1)))
    }
}

@Suite struct LogBudgetTests {
    @Test func capsLinesPerSecondAndCountsTheRest() {
        var budget = LogBudget(linesPerSecond: 3)
        let allowed = (0..<10).filter { _ in budget.allow(now: 5000) }.count
        #expect(allowed == 3)
        let early = budget.takeSuppressed(now: 5500)
        #expect(early == nil, "reported once the second is over")
        let reported = budget.takeSuppressed(now: 6000)
        #expect(reported == 7)
        let again = budget.takeSuppressed(now: 7000)
        #expect(again == nil)
        let fresh = budget.allow(now: 6000)
        #expect(fresh, "a new second, new lines")
    }
}
