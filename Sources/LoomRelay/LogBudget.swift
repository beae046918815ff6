// A per-loop cap on connection log lines: at most N a second, the rest counted and
// reported as one line. A reset storm (a client tearing down thousands of connections)
// must not turn loomd's log into the bottleneck.

/// Token bucket of log lines per second (no clock of its own: callers pass `now`).
public struct LogBudget: Sendable, Equatable {
    /// Lines allowed per second.
    public let linesPerSecond: Int
    private var windowStart: Int64 = 0
    private var used = 0
    private var suppressed = 0

    public init(linesPerSecond: Int) { self.linesPerSecond = linesPerSecond }

    /// Whether a line may be logged at `now` (milliseconds); counts it either way.
    public mutating func allow(now: Int64) -> Bool {
        if now - windowStart >= 1000 {
            windowStart = now
            used = 0
        }
        if used < linesPerSecond {
            used += 1
            return true
        }
        suppressed += 1
        return false
    }

    /// The number of lines suppressed so far, once a second has passed since the window
    /// began; resets the count.
    public mutating func takeSuppressed(now: Int64) -> Int? {
        guard suppressed > 0, now - windowStart >= 1000 else { return nil }
        defer { suppressed = 0 }
        return suppressed
    }
}
