import Testing

@testable import LoomRelay
@testable import LoomSystem

@Suite struct ResourceBudgetTests {
    @Test func defaultBudgetOnThisMachineShape() {
        // 20,000 fds, fs.pipe-user-pages-soft = 16384, 64 KiB pipes, 4 KiB pages, 2 loops.
        let b = ResourceBudget(
            fileLimit: 20_000,
            pipePages: 16384,
            pipeSize: 0,
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
            pipeSize: 0,
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
            pipeSize: 0,
            pageSize: 4096,
            loops: 1,
            requestedConnections: 10
        )
        #expect(!b.clamped)
        #expect(b.maxConnections == 10)
    }

    @Test func biggerPipesMeanFewerPipes() {
        let b = ResourceBudget(
            fileLimit: 20_000,
            pipePages: 16384,
            pipeSize: 1 << 20,
            pageSize: 4096,
            loops: 2,
            requestedConnections: nil
        )
        #expect(b.pagesPerPipe == 256)
        #expect(b.maxPipes == 64)
    }
}

@Suite struct PipePoolTests {
    @Test func reusesEmptyPipesAndStopsAtItsLimit() throws {
        var pool = PipePool(pipeSize: 0, limit: 2, cacheLimit: 2)
        let a = try #require(try pool.acquire())
        let b = try #require(try pool.acquire())
        #expect(try pool.acquire() == nil, "at the limit: callers wait")
        pool.release(a, empty: true)
        #expect(pool.cachedCount == 1)
        let c = try #require(try pool.acquire())
        #expect(c.read == a.read, "an empty pipe is reused")
        pool.release(b, empty: false)
        #expect(pool.open == 1, "a pipe with bytes left is closed, never reused")
        pool.release(c, empty: true)
        pool.drain()
        #expect(pool.open == 0)
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
