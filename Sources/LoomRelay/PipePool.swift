// A relay loop's pipes. Pipes are taken when a direction has bytes to move and given back
// as soon as they are empty, so an idle connection holds none. Only empty pipes are
// reused; a pipe that still holds bytes when its connection dies is closed. The pool never
// creates more than `limit` pipes (the loop's share of the pipe page budget); past that,
// directions wait in FIFO order for a pipe to come free.
import LoomSystem

/// Pipes of one relay loop (single-threaded, no locks).
public struct PipePool {
    /// Pipe size asked of the kernel (0: default).
    public let pipeSize: Int
    /// Pipes this loop may have open at once, in use or cached.
    public let limit: Int
    /// Empty pipes kept open for reuse.
    public let cacheLimit: Int
    private var cached: [Pipe] = []
    /// Pipes open now (in use + cached).
    public private(set) var open = 0

    public init(pipeSize: Int, limit: Int, cacheLimit: Int) {
        self.pipeSize = pipeSize
        self.limit = max(1, limit)
        self.cacheLimit = min(cacheLimit, self.limit)
        cached.reserveCapacity(self.cacheLimit)
    }

    /// Pipes lent out now.
    public var inUse: Int { open - cached.count }
    /// Empty pipes cached.
    public var cachedCount: Int { cached.count }

    /// An empty pipe, or nil when the loop is at its pipe budget.
    public mutating func acquire() throws(SystemError) -> Pipe? {
        if let pipe = cached.popLast() { return pipe }
        guard open < limit else { return nil }
        let pipe = try Pipe.make(size: pipeSize)
        open += 1
        return pipe
    }

    /// Takes a pipe back. `empty` must be true only if no byte is left inside.
    public mutating func release(_ pipe: Pipe, empty: Bool) {
        if empty && cached.count < cacheLimit {
            cached.append(pipe)
        } else {
            pipe.close()
            open -= 1
        }
    }

    /// Closes every cached pipe (at loop exit).
    public mutating func drain() {
        while let pipe = cached.popLast() {
            pipe.close()
            open -= 1
        }
    }
}
