// An indexed binary min-heap of endpoints for weighted round robin and least connections:
// O(log n) per pick and per opened/closed, no allocation after init.

/// Endpoints with a positive weight ordered by `numerator / weight` (exact: compared as
/// 128-bit cross products), ties by `tie`.
struct BalancerHeap: Sendable {
    enum Mode: Sendable {
        /// Weighted round robin by deadlines: an endpoint's k-th turn (k from 0) is due at
        /// (2k + 1) / (2 * weight), numerator 2k + 1, ties by index. Over every cycle of
        /// sum(weights) / gcd picks each endpoint gets exactly weight / gcd of them (the due
        /// times below the cycle's end are exactly those), interleaved as evenly as the
        /// weights allow; equal weights give 0, 1, 2, ... An endpoint passed over because it
        /// is unavailable loses that turn (it does not save up a burst for when it returns).
        case deadline
        /// Least connections: numerator = active connections, ties by least recently picked
        /// (round robin among equals).
        case leastLoaded
    }

    struct Entry: Sendable {
        var numerator: UInt64
        var tie: UInt64
        var weight: UInt32
        var endpoint: Int32

        @inline(__always)
        func precedes(_ other: Entry) -> Bool {
            let left = numerator.multipliedFullWidth(by: UInt64(other.weight))
            let right = other.numerator.multipliedFullWidth(by: UInt64(weight))
            if left.high != right.high { return left.high < right.high }
            if left.low != right.low { return left.low < right.low }
            return tie < other.tie
        }
    }

    let mode: Mode
    private var slots: [Entry] = []
    private var position: [Int32] = []  // endpoint → slot, -1 when not in the heap
    // Scratch for a pick that meets unavailable endpoints: the slots to look at next, and
    // the slots passed over.
    private var frontier: [Int32] = []
    private var passed: [Int32] = []
    private var sequence: UInt64 = 0

    /// An empty heap (for policies that do not use one).
    init() { mode = .deadline }

    /// Every endpoint with a positive weight.
    init(mode: Mode, weights: [UInt32]) {
        self.mode = mode
        position = [Int32](repeating: -1, count: weights.count)
        for (e, w) in weights.enumerated() where w > 0 {
            position[e] = Int32(slots.count)
            slots.append(Entry(numerator: mode == .deadline ? 1 : 0, tie: UInt64(e), weight: w, endpoint: Int32(e)))
        }
        frontier = [Int32](repeating: 0, count: slots.count + 1)
        passed = [Int32](repeating: 0, count: slots.count + 1)
        sequence = UInt64(weights.count)
        for slot in stride(from: slots.count / 2 - 1, through: 0, by: -1) { siftDown(slot) }
    }

    /// The first endpoint in heap order that `isAvailable` accepts, which then takes its
    /// turn. O(log n) when the first is available; k unavailable ones ahead of it add
    /// O(k^2) comparisons and O(k log n) moves (in deadline mode they lose their turn).
    mutating func pick(_ isAvailable: (Int) -> Bool) -> Int? {
        guard let top = slots.first else { return nil }
        guard isAvailable(Int(top.endpoint)) else { return pickPastUnavailable(isAvailable) }
        take(0)
        return Int(top.endpoint)
    }

    /// Sets an endpoint's numerator (its active connections, for `.leastLoaded`).
    mutating func setNumerator(_ e: Int, _ value: UInt64) {
        let slot = Int(position[e])
        guard slot >= 0 else { return }
        let old = slots[slot].numerator
        slots[slot].numerator = value
        if value < old { siftUp(slot) } else { siftDown(slot) }
    }

    /// The endpoint at `slot` takes its turn.
    private mutating func take(_ slot: Int) {
        switch mode {
        case .deadline:
            slots[slot].numerator &+= 2
        case .leastLoaded:
            slots[slot].tie = sequence
            sequence &+= 1
        }
        siftDown(slot)
    }

    /// Best-first search from the root past unavailable endpoints without changing the
    /// heap; then the chosen one takes its turn and (deadline mode) the passed ones lose
    /// theirs, deepest first, so that each sift meets valid heaps below it.
    private mutating func pickPastUnavailable(_ isAvailable: (Int) -> Bool) -> Int? {
        var frontierCount = 1
        var passedCount = 0
        frontier[0] = 0
        var chosen = -1
        while frontierCount > 0 {
            var best = 0
            for i in 1..<frontierCount where slots[Int(frontier[i])].precedes(slots[Int(frontier[best])]) { best = i }
            let slot = Int(frontier[best])
            frontierCount -= 1
            frontier[best] = frontier[frontierCount]
            if isAvailable(Int(slots[slot].endpoint)) {
                chosen = slot
                break
            }
            passed[passedCount] = Int32(slot)
            passedCount += 1
            for child in 2 * slot + 1...2 * slot + 2 where child < slots.count {
                frontier[frontierCount] = Int32(child)
                frontierCount += 1
            }
        }
        let endpoint = chosen >= 0 ? Int(slots[chosen].endpoint) : nil
        if chosen >= 0 { take(chosen) }
        if mode == .deadline {
            for i in stride(from: passedCount - 1, through: 0, by: -1) {
                let slot = Int(passed[i])
                slots[slot].numerator &+= 2
                siftDown(slot)
            }
        }
        return endpoint
    }

    private mutating func siftUp(_ start: Int) {
        slots.withUnsafeMutableBufferPointer { slots in
            position.withUnsafeMutableBufferPointer { position in
                var slot = start
                let entry = slots[slot]
                while slot > 0 {
                    let parent = (slot - 1) / 2
                    guard entry.precedes(slots[parent]) else { break }
                    slots[slot] = slots[parent]
                    position[Int(slots[slot].endpoint)] = Int32(slot)
                    slot = parent
                }
                slots[slot] = entry
                position[Int(entry.endpoint)] = Int32(slot)
            }
        }
    }

    private mutating func siftDown(_ start: Int) {
        slots.withUnsafeMutableBufferPointer { slots in
            position.withUnsafeMutableBufferPointer { position in
                let size = slots.count
                var slot = start
                let entry = slots[slot]
                while true {
                    var child = 2 * slot + 1
                    guard child < size else { break }
                    if child + 1 < size && slots[child + 1].precedes(slots[child]) { child += 1 }
                    guard slots[child].precedes(entry) else { break }
                    slots[slot] = slots[child]
                    position[Int(slots[slot].endpoint)] = Int32(slot)
                    slot = child
                }
                slots[slot] = entry
                position[Int(entry.endpoint)] = Int32(slot)
            }
        }
    }
}
