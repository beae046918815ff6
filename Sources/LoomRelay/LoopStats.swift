// Counters a relay loop publishes for the admin API. The loop keeps plain counters and
// stores them here once per event batch with relaxed atomics (a plain store on x86-64),
// so readers on other threads never slow the loop down.
import Synchronization

/// A snapshot of one loop's counters.
public struct LoopCounters: Sendable, Equatable {
    public var active = 0
    public var accepted = 0
    /// Connections refused before relaying (not redirected, or aimed at Loom itself).
    public var refused = 0
    public var finished = 0
    /// Connections that ended in a reset, a refusal by the upstream, or a timeout.
    public var failed = 0
    public var bytesOutbound: UInt64 = 0
    public var bytesInbound: UInt64 = 0
    public var pipesInUse = 0
    public var pipesCached = 0
    public var pipeWaiters = 0
    /// Times a direction had to wait for a pipe (the page budget was used up).
    public var pipeWaits = 0
    public var acceptPaused = false
    /// Copy buffers held by mTLS connections now.
    public var copyBuffers = 0

    public init() {}

    /// Sum of two snapshots (for node totals).
    public static func + (a: LoopCounters, b: LoopCounters) -> LoopCounters {
        var r = LoopCounters()
        r.active = a.active + b.active
        r.accepted = a.accepted + b.accepted
        r.refused = a.refused + b.refused
        r.finished = a.finished + b.finished
        r.failed = a.failed + b.failed
        r.bytesOutbound = a.bytesOutbound &+ b.bytesOutbound
        r.bytesInbound = a.bytesInbound &+ b.bytesInbound
        r.pipesInUse = a.pipesInUse + b.pipesInUse
        r.pipesCached = a.pipesCached + b.pipesCached
        r.pipeWaiters = a.pipeWaiters + b.pipeWaiters
        r.pipeWaits = a.pipeWaits + b.pipeWaits
        r.acceptPaused = a.acceptPaused || b.acceptPaused
        r.copyBuffers = a.copyBuffers + b.copyBuffers
        return r
    }
}

/// Published counters of one loop, readable from any thread.
public final class LoopStats: Sendable {
    private let active = Atomic<Int>(0)
    private let accepted = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)
    private let bytesOutbound = Atomic<UInt64>(0)
    private let bytesInbound = Atomic<UInt64>(0)
    private let pipesInUse = Atomic<Int>(0)
    private let pipesCached = Atomic<Int>(0)
    private let pipeWaiters = Atomic<Int>(0)
    private let pipeWaits = Atomic<Int>(0)
    private let acceptPaused = Atomic<Bool>(false)
    private let copyBuffers = Atomic<Int>(0)

    public init() {}

    /// Called by the owning loop only.
    func publish(_ c: LoopCounters) {
        active.store(c.active, ordering: .relaxed)
        accepted.store(c.accepted, ordering: .relaxed)
        refused.store(c.refused, ordering: .relaxed)
        finished.store(c.finished, ordering: .relaxed)
        failed.store(c.failed, ordering: .relaxed)
        bytesOutbound.store(c.bytesOutbound, ordering: .relaxed)
        bytesInbound.store(c.bytesInbound, ordering: .relaxed)
        pipesInUse.store(c.pipesInUse, ordering: .relaxed)
        pipesCached.store(c.pipesCached, ordering: .relaxed)
        pipeWaiters.store(c.pipeWaiters, ordering: .relaxed)
        pipeWaits.store(c.pipeWaits, ordering: .relaxed)
        acceptPaused.store(c.acceptPaused, ordering: .relaxed)
        copyBuffers.store(c.copyBuffers, ordering: .relaxed)
    }

    /// The latest published counters.
    public func snapshot() -> LoopCounters {
        var c = LoopCounters()
        c.active = active.load(ordering: .relaxed)
        c.accepted = accepted.load(ordering: .relaxed)
        c.refused = refused.load(ordering: .relaxed)
        c.finished = finished.load(ordering: .relaxed)
        c.failed = failed.load(ordering: .relaxed)
        c.bytesOutbound = bytesOutbound.load(ordering: .relaxed)
        c.bytesInbound = bytesInbound.load(ordering: .relaxed)
        c.pipesInUse = pipesInUse.load(ordering: .relaxed)
        c.pipesCached = pipesCached.load(ordering: .relaxed)
        c.pipeWaiters = pipeWaiters.load(ordering: .relaxed)
        c.pipeWaits = pipeWaits.load(ordering: .relaxed)
        c.acceptPaused = acceptPaused.load(ordering: .relaxed)
        c.copyBuffers = copyBuffers.load(ordering: .relaxed)
        return c
    }
}
