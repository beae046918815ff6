import Testing

@testable import LoomRelay

/// Drives one direction's state machine with made-up splice results.
/// A flow that has already shown a bulk transfer (a copy filled the scratch buffer), so
/// it splices from now on.
func bulkFlow(capacity: Int) -> FlowState {
    var flow = FlowState()
    flow.sourceReadable = true
    flow.sinkWritable = true
    flow.pipeAcquired(capacity: capacity)
    flow.copied(read: FlowState.copyChunk, written: FlowState.copyChunk)
    flow.pipeReleased()
    flow.pipeAcquired(capacity: capacity)
    return flow
}

@Suite struct FlowStateTests {
    @Test func idleDirectionWaitsAndHoldsNoPipe() {
        let flow = FlowState()
        #expect(flow.nextStep() == .wait)
        #expect(!flow.holdsPipe)
    }

    @Test func readableSourceTakesAPipeThenCopiesASmallMessage() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.sinkWritable = true
        #expect(flow.nextStep() == .acquirePipe)
        flow.pipeAcquired(capacity: 65536)
        #expect(flow.nextStep() == .copy(count: FlowState.copyChunk))
        flow.copied(read: 300, written: 300)
        #expect(!flow.sourceReadable, "a short recv proves the socket empty: no EAGAIN probe")
        #expect(flow.bytesRelayed == 300)
        #expect(flow.nextStep() == .releasePipe)
    }

    @Test func aShortCopyAfterAHangUpReadsOnToEndOfStream() {
        // The peer's last bytes and its FIN came in one readiness event: no new edge
        // will announce the FIN, so a short recv must not end the reading.
        var flow = FlowState()
        flow.sourceReadable = true
        flow.sourceHungUp = true
        flow.sinkWritable = true
        flow.pipeAcquired(capacity: 65536)
        flow.copied(read: 127, written: 127)
        #expect(flow.sourceReadable)
        #expect(flow.nextStep() == .copy(count: FlowState.copyChunk))
        flow.copied(read: 0, written: 0)
        #expect(flow.sourceEnded)
    }

    @Test func aCopyTheSinkCannotTakeIsParkedInThePipe() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.sinkWritable = true
        flow.pipeAcquired(capacity: 65536)
        flow.copied(read: 1000, written: 400)
        #expect(flow.buffered == 600)
        #expect(!flow.sinkWritable)
        #expect(flow.nextStep() == .wait, "no more reads until the parked bytes leave")
        flow.sinkWritable = true
        #expect(flow.nextStep() == .spliceOut(count: 600))
    }

    @Test func aFullScratchBufferMakesTheDirectionSplice() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.sinkWritable = true
        flow.pipeAcquired(capacity: 65536)
        flow.copied(read: FlowState.copyChunk, written: FlowState.copyChunk)
        #expect(flow.bulk && flow.sourceReadable)
        #expect(flow.nextStep() == .spliceIn(count: 65536))
    }

    @Test func endOfStreamSeenByACopy() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.pipeAcquired(capacity: 65536)
        flow.copied(read: 0, written: 0)
        #expect(flow.sourceEnded)
        #expect(flow.nextStep() == .releasePipe)
        flow.copied(read: nil, written: 0)
    }

    @Test func bytesInThePipeGoOutOnlyWhenTheSinkIsWritable() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.pipeAcquired(capacity: 65536)
        flow.splicedIn(1000)
        #expect(flow.nextStep() == .wait, "sink not writable yet: backpressure, no more reads")
        flow.sinkWritable = true
        #expect(flow.nextStep() == .spliceOut(count: 1000))
        flow.splicedOut(400)
        #expect(flow.nextStep() == .spliceOut(count: 600))
        flow.splicedOut(nil)
        #expect(!flow.sinkWritable)
        #expect(flow.nextStep() == .wait)
        #expect(flow.buffered == 600)
    }

    @Test func doesNotReadWhilePipeHoldsBytes() {
        // EAGAIN into a non-empty pipe would be ambiguous (pipe full or source empty).
        var flow = FlowState()
        flow.sourceReadable = true
        flow.sinkWritable = false
        flow.pipeAcquired(capacity: 4096)
        flow.splicedIn(10)
        #expect(flow.nextStep() == .wait)
    }

    @Test func drainedPipeIsReleasedWhenSourceHasNothing() {
        var flow = bulkFlow(capacity: 4096)
        flow.splicedIn(100)
        flow.splicedOut(100)
        #expect(flow.nextStep() == .spliceIn(count: 4096), "source still readable: keep the pipe")
        flow.splicedIn(nil)
        #expect(flow.nextStep() == .releasePipe)
        flow.pipeReleased()
        #expect(flow.nextStep() == .wait)
        #expect(flow.bytesRelayed == UInt64(FlowState.copyChunk) + 100)
    }

    @Test func halfCloseIsForwardedOnlyAfterThePipeDrains() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.pipeAcquired(capacity: 4096)
        flow.splicedIn(500)
        flow.splicedIn(0)  // would not happen with bytes buffered, but EOF must still wait
        #expect(flow.sourceEnded)
        #expect(flow.nextStep() == .wait, "FIN must not overtake the 500 bytes")
        flow.sinkWritable = true
        #expect(flow.nextStep() == .spliceOut(count: 500))
        flow.splicedOut(500)
        #expect(flow.nextStep() == .releasePipe)
        flow.pipeReleased()
        #expect(flow.nextStep() == .shutdownSink)
        flow.sinkShutDown()
        #expect(flow.nextStep() == .done)
        #expect(flow.isDone)
    }

    @Test func endOfStreamWithEmptyPipe() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.pipeAcquired(capacity: 4096)
        flow.splicedIn(0)
        #expect(flow.nextStep() == .releasePipe)
        flow.pipeReleased()
        #expect(flow.nextStep() == .shutdownSink)
    }

    @Test func aReadThatFillsThePipeAsksOnceForABiggerOne() {
        var flow = bulkFlow(capacity: 65536)
        flow.splicedIn(65536)
        #expect(flow.bulk)
        #expect(flow.nextStep() == .spliceOut(count: 65536), "bytes first")
        flow.splicedOut(65536)
        #expect(flow.nextStep() == .growPipe)
        flow.pipeGrown(capacity: 65536)  // the pool said no
        #expect(flow.nextStep() == .spliceIn(count: 65536))
        flow.splicedIn(65536)
        flow.splicedOut(65536)
        #expect(flow.nextStep() == .spliceIn(count: 65536), "asked once per pipe")
    }

    @Test func waitingForAPipeDoesNotAskAgain() {
        var flow = FlowState()
        flow.sourceReadable = true
        flow.waitingForPipe = true
        #expect(flow.nextStep() == .wait)
        flow.pipeAcquired(capacity: 8192)
        #expect(!flow.waitingForPipe)
        #expect(flow.nextStep() == .copy(count: FlowState.copyChunk))
    }
}

@Suite struct ConnectionStateTests {
    @Test func connectTimeoutFiresOnlyWhileConnecting() {
        var state = ConnectionState(now: 1000)
        #expect(state.timeoutCheck(now: 5000, connectTimeoutMs: 10_000, idleTimeoutMs: 60_000) == nil)
        #expect(state.timeoutCheck(now: 11_000, connectTimeoutMs: 10_000, idleTimeoutMs: 60_000) == .connectTimeout)
        state.connected(now: 2000)
        #expect(state.timeoutCheck(now: 11_000, connectTimeoutMs: 10_000, idleTimeoutMs: 60_000) == nil)
    }

    @Test func idleTimeoutCountsFromLastActivity() {
        var state = ConnectionState(now: 0)
        state.connected(now: 0)
        state.touched(now: 50_000)
        #expect(state.timeoutCheck(now: 100_000, connectTimeoutMs: 1, idleTimeoutMs: 60_000) == nil)
        #expect(state.timeoutCheck(now: 110_000, connectTimeoutMs: 1, idleTimeoutMs: 60_000) == .idleTimeout)
        #expect(state.timeoutCheck(now: 10_000_000, connectTimeoutMs: 1, idleTimeoutMs: 0) == nil, "0 disables")
    }

    @Test func finishedOnlyWhenBothDirectionsForwardedFIN() {
        var state = ConnectionState(now: 0)
        state.connected(now: 0)
        state.outbound.sinkShutDown()
        #expect(!state.isFinished)
        state.inbound.sinkShutDown()
        #expect(state.isFinished)
    }

    @Test func resetsAreNeverCleanCloses() {
        #expect(CloseReason.upstreamReset.resets)
        #expect(CloseReason.clientReset.resets)
        #expect(CloseReason.upstreamRefused.resets)
        #expect(CloseReason.connectTimeout.resets)
        #expect(!CloseReason.finished.resets)
    }
}
