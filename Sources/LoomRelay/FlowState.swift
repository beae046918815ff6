// The state of one direction of a relayed connection, apart from any I/O.
//
// Small messages are copied: one recv into the loop's scratch buffer and one send, with
// any unsent rest parked in the direction's pipe. A recv that returns less than it asked
// for proves the socket empty, so no extra call is needed to see EAGAIN. A direction
// whose recv fills the scratch buffer is a bulk transfer and switches to splice for good:
// bytes flow source socket -> pipe -> sink socket with no copy. Sockets are registered edge-triggered,
// so readiness is remembered here until a call answers EAGAIN. `nextStep()` says what the
// loop should do next; the loop does it and reports the result back. Tests drive this
// type with made-up results, no sockets involved.

/// One direction of a relay (client -> upstream or upstream -> client).
public struct FlowState: Equatable, Sendable {
    /// What the loop should do next for this direction.
    public enum Step: Equatable, Sendable {
        /// Move `count` bytes from the pipe to the sink.
        case spliceOut(count: Int)
        /// Move up to `count` bytes from the source into the (empty) pipe.
        case spliceIn(count: Int)
        /// Copy up to `count` bytes: recv into the scratch buffer, send to the sink, park
        /// what the sink did not take in the (empty) pipe.
        case copy(count: Int)
        /// Take a pipe from the pool before reading.
        case acquirePipe
        /// The last read filled the pipe: ask the pool for a bigger one (bulk transfer).
        case growPipe
        /// Give the (empty) pipe back: an idle direction holds no pipe.
        case releasePipe
        /// The source ended and every byte reached the sink: send FIN to the sink.
        case shutdownSink
        /// Nothing to do until the sockets signal readiness or a pipe comes free.
        case wait
        /// This direction is complete: FIN forwarded after the last byte.
        case done
    }

    /// Bytes spliced into the pipe and not yet out of it.
    public private(set) var buffered = 0
    /// Capacity of the pipe held, 0 when none is held.
    public private(set) var pipeCapacity = 0
    /// The source may have bytes (or EOF) to read: set by readiness, cleared by EAGAIN.
    public var sourceReadable = false
    /// The source's peer has shut down its side (EPOLLRDHUP seen): end of stream waits
    /// behind any bytes, and no new edge will announce it.
    public var sourceHungUp = false
    /// The sink may accept bytes: set by readiness, cleared by EAGAIN.
    public var sinkWritable = false
    /// The source returned end of stream.
    public private(set) var sourceEnded = false
    /// FIN has been forwarded to the sink.
    public private(set) var sinkShut = false
    /// Queued for a pipe because the pool was at its budget.
    public var waitingForPipe = false
    /// The last read filled the whole pipe; a bigger pipe would take fewer calls.
    public private(set) var growWanted = false
    /// A grow was asked for the pipe held now (once per pipe).
    private var growAsked = false
    /// This direction has filled a scratch buffer or a pipe: it splices, and prefers a
    /// bulk pipe.
    public private(set) var bulk = false
    /// Bytes that reached the sink in total.
    public private(set) var bytesRelayed: UInt64 = 0

    public init() {}

    /// Bytes one copy step reads at most (the loop's scratch buffer). Messages of this
    /// size or more make the direction bulk.
    public static let copyChunk = 16384

    /// True while a pipe is held.
    public var holdsPipe: Bool { pipeCapacity > 0 }

    /// True when the direction has ended cleanly.
    public var isDone: Bool { sinkShut && !holdsPipe }

    /// The next action. Reads happen only into an empty pipe: with a non-empty pipe,
    /// EAGAIN from splice could mean "pipe full" rather than "source empty", and clearing
    /// `sourceReadable` on the wrong reason would lose an edge-triggered wake-up.
    public func nextStep() -> Step {
        if buffered > 0 { return sinkWritable ? .spliceOut(count: buffered) : .wait }
        if sourceEnded {
            if holdsPipe { return .releasePipe }
            return sinkShut ? .done : .shutdownSink
        }
        if !sourceReadable { return holdsPipe ? .releasePipe : .wait }
        if !holdsPipe { return waitingForPipe ? .wait : .acquirePipe }
        if growWanted { return .growPipe }
        return bulk ? .spliceIn(count: pipeCapacity) : .copy(count: Self.copyChunk)
    }

    /// A pipe of `capacity` bytes was handed to this direction.
    public mutating func pipeAcquired(capacity: Int) {
        precondition(capacity > 0 && !holdsPipe)
        pipeCapacity = capacity
        waitingForPipe = false
        growAsked = false
    }

    /// Result of `.growPipe`: the capacity the pipe has now (unchanged if the pool's
    /// budget said no; then this direction does not ask again while it holds the pipe).
    public mutating func pipeGrown(capacity: Int) {
        pipeCapacity = capacity
        growWanted = false
    }

    /// The pipe was given back (it was empty).
    public mutating func pipeReleased() {
        precondition(buffered == 0)
        pipeCapacity = 0
    }

    /// Result of `.spliceIn`: `nil` for EAGAIN, 0 for end of stream, else bytes read.
    public mutating func splicedIn(_ result: Int?) {
        guard let n = result else {
            sourceReadable = false
            return
        }
        if n == 0 {
            sourceEnded = true
        } else {
            if buffered == 0 && n >= pipeCapacity && !growAsked {
                growWanted = true
                growAsked = true
                bulk = true
            }
            buffered += n
        }
    }

    /// Result of `.copy`: `read` is nil for EAGAIN, 0 for end of stream, else bytes
    /// received; `written` bytes of them reached the sink, the rest went into the pipe.
    public mutating func copied(read: Int?, written: Int) {
        guard let n = read else {
            sourceReadable = false
            return
        }
        if n == 0 {
            sourceEnded = true
            return
        }
        precondition(written <= n && buffered == 0)
        bytesRelayed &+= UInt64(written)
        buffered = n - written
        if written < n { sinkWritable = false }
        if n < Self.copyChunk {
            // A short recv took everything the socket had; new bytes bring a new edge.
            // Not so for end of stream already announced with the bytes: read on to it.
            sourceReadable = sourceHungUp
        } else {
            bulk = true
        }
    }

    /// Result of `.spliceOut`: `nil` for EAGAIN, else bytes written.
    public mutating func splicedOut(_ result: Int?) {
        guard let n = result else {
            sinkWritable = false
            return
        }
        precondition(n <= buffered)
        buffered -= n
        bytesRelayed &+= UInt64(n)
    }

    /// FIN was sent to the sink.
    public mutating func sinkShutDown() { sinkShut = true }
}
