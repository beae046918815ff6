// The reading end of the trace table: an NFQUEUE socket in one pod's network namespace.
// Every packet read is accepted at once (the trace watches, it never decides), then its
// headers are read into a KernelPacket. CLoomNetfilter (queue.c) does the netlink part.
import CLoomNetfilter
import LoomSystem
import Synchronization

/// An NFQUEUE queue bound in the network namespace of the thread that opened it.
///
/// Like NetfilterSocket, the socket stays in the namespace it was created in: open it on a
/// thread that has entered the pod's namespace (`NetworkNamespace.withEntered`), then use
/// it from anywhere. Watch `fd` for readability and call `receive(max:)`. Calls are
/// serialised. Remove the trace table before closing: the kernel drops what is still
/// queued when the socket closes (close drains first, but the table may queue more).
public final class TraceQueue: Sendable {
    /// Bytes of each packet the kernel copies: an IPv4 or IPv6 header and a TCP header.
    public static let copyRange = UInt32(CLOOM_NFT_QUEUE_MAX_COPY)

    /// What the queue has seen since it was opened.
    public struct Counters: Equatable, Sendable {
        /// Packets read from the socket (each one accepted).
        public var read = 0
        /// Packets returned by `receive`.
        public var returned = 0
        /// Packets read and accepted but not returned: not IPv4/IPv6 TCP, from another
        /// hook, without the kernel's packet header, past `max` in one read, or drained by
        /// `close()`.
        public var unparsed = 0
        /// Packets that could not be given a verdict (left queued until the socket closes).
        public var unanswered = 0
        /// Errors the kernel sent back for verdicts, and the last one (errno).
        public var kernelErrors = 0
        public var lastError: CInt = 0
        /// Times the socket reported lost messages.
        public var overruns = 0
        /// The last error reading the socket (errno), 0 if none.
        public var lastReadError: CInt = 0
    }

    private struct State {
        var handle: OpaquePointer?
        var buffer: [cloom_nft_queued_packet] = []
        var counters = Counters()
    }

    /// The queue number.
    public let queue: UInt16
    /// The socket, for epoll. Owned by the queue: `close()` closes it.
    public let fd: FileDescriptor
    private let state: Mutex<State>

    /// Binds queue `queue` in the calling thread's network namespace: non-blocking, packets
    /// copied up to `copyRange` bytes, fail open (a full queue accepts rather than drops).
    public init(queue: UInt16) throws(NetfilterError) {
        var err: CInt = 0
        guard
            let handle = cloom_nft_queue_open(
                queue,
                Self.copyRange,
                CLOOM_NFQA_CFG_F_FAIL_OPEN,
                CLOOM_NF_ACCEPT,
                &err
            )
        else {
            throw NetfilterError(operation: .openQueue, message: "queue \(queue)", errno: -err)
        }
        self.queue = queue
        fd = FileDescriptor(rawValue: cloom_nft_queue_fd(handle))
        state = Mutex(State(handle: handle))
    }

    deinit { close() }

    /// Accepts what is still queued, then closes the socket (the kernel unbinds the queue).
    /// Closing twice is harmless; `receive` returns nothing afterwards.
    public func close() {
        state.withLock { state in
            guard let handle = state.handle else { return }
            _ = Self.drain(handle, &state, max: 0)
            cloom_nft_queue_close(handle)
            state.handle = nil
        }
    }

    /// Reads what is queued without blocking, at most `max` packets (the rest stays queued
    /// for the next call), accepts every packet it reads before returning, parsed or not,
    /// and returns those that are IPv4 or IPv6 TCP packets of the output or prerouting hook.
    public func receive(max: Int) -> [KernelPacket] {
        guard max > 0 else { return [] }
        return state.withLock { state in
            guard let handle = state.handle else { return [] }
            return Self.drain(handle, &state, max: max)
        }
    }

    /// What the queue has seen so far.
    public var counters: Counters {
        state.withLock { $0.counters }
    }

    /// Reads up to `max` packets and parses them; `max` 0 reads and accepts everything
    /// queued and returns nothing.
    private static func drain(_ handle: OpaquePointer, _ state: inout State, max: Int) -> [KernelPacket] {
        var counts = cloom_nft_queue_counts()
        let stored: CInt
        if max == 0 {
            stored = cloom_nft_queue_receive(handle, CLOOM_NF_ACCEPT, nil, 0, &counts)
        } else {
            if state.buffer.count < max {
                state.buffer = Array(repeating: cloom_nft_queued_packet(), count: max)
            }
            stored = state.buffer.withUnsafeMutableBufferPointer { buffer in
                cloom_nft_queue_receive(handle, CLOOM_NF_ACCEPT, buffer.baseAddress, UInt32(max), &counts)
            }
        }
        state.counters.read += Int(counts.read)
        state.counters.unparsed += Int(counts.unstored)
        state.counters.unanswered += Int(counts.unanswered)
        state.counters.kernelErrors += Int(counts.errors)
        state.counters.overruns += Int(counts.overruns)
        if counts.last_error != 0 { state.counters.lastError = -counts.last_error }
        if stored < 0 { state.counters.lastReadError = -stored }
        let now = SystemProcess.nowMilliseconds()
        var packets: [KernelPacket] = []
        for index in 0..<Int(Swift.max(0, stored)) {
            if let packet = parse(&state.buffer[index], receivedAtMs: now) {
                packets.append(packet)
            } else {
                state.counters.unparsed += 1
            }
        }
        state.counters.returned += packets.count
        return packets
    }

    /// The KernelPacket of one queued packet, or nil if it is not one the trace expects.
    private static func parse(_ queued: inout cloom_nft_queued_packet, receivedAtMs: Int64) -> KernelPacket? {
        let hook: KernelPacket.Hook
        switch UInt32(queued.hook) {
        case CLOOM_NF_INET_LOCAL_OUT: hook = .output
        case CLOOM_NF_INET_PRE_ROUTING: hook = .prerouting
        default: return nil
        }
        let length = Int(Swift.min(queued.length, Self.copyRange))
        let bytes = withUnsafeBytes(of: &queued.bytes) { Array($0.prefix(length)) }
        guard let (source, destination) = KernelPacket.addresses(ofPacket: bytes) else { return nil }
        return KernelPacket(
            hook: hook,
            source: source,
            destination: destination,
            inInterface: queued.in_interface,
            outInterface: queued.out_interface,
            mark: queued.mark,
            receivedAtMs: receivedAtMs
        )
    }
}
