// A relay loop's pipes. Pipes are taken when a direction has bytes to move and given back
// as soon as they are empty, so an idle connection holds none. Only empty pipes are
// reused; a pipe that still holds bytes when its connection dies is closed.
//
// Pipes start at the kernel's default size (64 KiB). A direction that fills its pipe in
// one splice is a bulk transfer: its pipe grows to `bulkSize` (1 MiB by default), which
// cuts the splice calls per byte by up to 16 and the relay's CPU per GB with them.
// Every pipe is charged in pages against the loop's share of the pipe page budget
// (`fs.pipe-user-pages-soft`); past it, new pipes wait (FIFO, in the loop) and pipes
// stay small.
import LoomSystem

/// Pipes of one relay loop (single-threaded, no locks).
public struct PipePool {
    /// Size of a new pipe (the kernel default, 64 KiB).
    public let defaultSize: Int
    /// Size a bulk direction's pipe grows to; equal to `defaultSize`: never grow.
    public let bulkSize: Int
    /// Pages this loop's pipes may hold in total.
    public let pageLimit: Int
    /// Bytes per page.
    public let pageSize: Int
    /// Empty default-size pipes kept for reuse.
    public let cacheLimit: Int
    /// Empty bulk pipes kept for reuse.
    public let bulkCacheLimit: Int
    private var cached: [Pipe] = []
    private var cachedBulk: [Pipe] = []
    /// Pipes open now (in use + cached).
    public private(set) var open = 0
    /// Pages charged for the pipes open now.
    public private(set) var openPages = 0

    public init(defaultSize: Int = 65536, bulkSize: Int, pageLimit: Int, pageSize: Int = 4096, cacheLimit: Int = 64) {
        self.defaultSize = defaultSize
        self.bulkSize = max(bulkSize, defaultSize)
        self.pageSize = pageSize
        self.pageLimit = max(pageLimit, 2 * defaultSize / pageSize)
        self.cacheLimit = min(cacheLimit, self.pageLimit / max(1, defaultSize / pageSize))
        self.bulkCacheLimit = min(8, self.pageLimit / max(1, self.bulkSize / pageSize))
        cached.reserveCapacity(self.cacheLimit)
        cachedBulk.reserveCapacity(self.bulkCacheLimit)
    }

    /// Pipes lent out now.
    public var inUse: Int { open - cached.count - cachedBulk.count }
    /// Empty pipes cached.
    public var cachedCount: Int { cached.count + cachedBulk.count }

    private func pages(_ bytes: Int) -> Int { (bytes + pageSize - 1) / pageSize }

    /// An empty pipe, or nil when the loop is at its pipe page budget. `bulk` prefers a
    /// cached bulk-size pipe.
    public mutating func acquire(bulk: Bool = false) throws(SystemError) -> Pipe? {
        if bulk, let pipe = cachedBulk.popLast() { return pipe }
        if let pipe = cached.popLast() { return pipe }
        if let pipe = cachedBulk.popLast() { return pipe }
        guard openPages + pages(defaultSize) <= pageLimit else { return nil }
        let pipe = try Pipe.make(size: 0)
        open += 1
        openPages += pages(pipe.capacity)
        return pipe
    }

    /// Grows an (empty or part-full) pipe to the bulk size if the page budget allows;
    /// returns the pipe with its capacity now.
    public mutating func grow(_ pipe: Pipe) -> Pipe {
        guard pipe.capacity < bulkSize else { return pipe }
        let extra = pages(bulkSize) - pages(pipe.capacity)
        guard openPages + extra <= pageLimit, let grown = pipe.resized(to: bulkSize) else { return pipe }
        openPages += pages(grown.capacity) - pages(pipe.capacity)
        return grown
    }

    /// Takes a pipe back. `empty` must be true only if no byte is left inside.
    public mutating func release(_ pipe: Pipe, empty: Bool) {
        if empty && pipe.capacity > defaultSize && cachedBulk.count < bulkCacheLimit {
            cachedBulk.append(pipe)
        } else if empty && pipe.capacity <= defaultSize && cached.count < cacheLimit {
            cached.append(pipe)
        } else {
            close(pipe)
        }
    }

    private mutating func close(_ pipe: Pipe) {
        pipe.close()
        open -= 1
        openPages -= pages(pipe.capacity)
    }

    /// Closes every cached pipe (at loop exit).
    public mutating func drain() {
        while let pipe = cached.popLast() { close(pipe) }
        while let pipe = cachedBulk.popLast() { close(pipe) }
    }
}
