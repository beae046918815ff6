// An epoll set owned by one relay loop. Events are read through accessors because
// struct epoll_event is packed on x86_64 (see CLoomLinux.h). The event buffer is allocated
// once per loop, so waiting allocates nothing.
import CLoomLinux

/// Readiness bits, as epoll reports them.
public struct EpollEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let readable = EpollEvents(rawValue: CLOOM_EPOLLIN)
    public static let writable = EpollEvents(rawValue: CLOOM_EPOLLOUT)
    public static let error = EpollEvents(rawValue: CLOOM_EPOLLERR)
    public static let hangup = EpollEvents(rawValue: CLOOM_EPOLLHUP)
    public static let readHangup = EpollEvents(rawValue: CLOOM_EPOLLRDHUP)
    public static let edgeTriggered = EpollEvents(rawValue: CLOOM_EPOLLET)
}

/// One epoll instance with a fixed-size event buffer.
public final class Epoll {
    /// The epoll descriptor.
    public let fd: FileDescriptor
    private let events: OpaquePointer
    private let capacity: CInt
    /// Number of events returned by the last `wait`.
    public private(set) var count: Int = 0

    public init(capacity: Int = 256) throws(SystemError) {
        fd = FileDescriptor(rawValue: try syscall("epoll_create1") { cloom_epoll_create() })
        guard let buffer = cloom_epoll_events_alloc(CInt(capacity)) else {
            fd.close()
            throw SystemError("epoll_events_alloc", errno: Errno.noMemory)
        }
        events = buffer
        self.capacity = CInt(capacity)
    }

    deinit {
        cloom_epoll_events_free(events)
        fd.close()
    }

    /// Registers `target` for `interest`, with `token` returned in its events.
    public func add(_ target: FileDescriptor, interest: EpollEvents, token: UInt64) throws(SystemError) {
        _ = try syscall("epoll_ctl(ADD)") {
            cloom_epoll_ctl(fd.rawValue, CLOOM_EPOLL_ADD, target.rawValue, interest.rawValue, token)
        }
    }

    /// Changes the interest of a registered descriptor.
    public func modify(_ target: FileDescriptor, interest: EpollEvents, token: UInt64) throws(SystemError) {
        _ = try syscall("epoll_ctl(MOD)") {
            cloom_epoll_ctl(fd.rawValue, CLOOM_EPOLL_MOD, target.rawValue, interest.rawValue, token)
        }
    }

    /// Waits up to `timeoutMs` (-1: forever) and returns how many events are ready.
    @discardableResult
    public func wait(timeoutMs: Int32) throws(SystemError) -> Int {
        count = Int(try syscall("epoll_wait") { cloom_epoll_wait(fd.rawValue, events, capacity, timeoutMs) })
        return count
    }

    /// The token and readiness of event `index` (< `count`).
    @inline(__always)
    public func event(_ index: Int) -> (token: UInt64, events: EpollEvents) {
        (
            cloom_epoll_event_data(events, CInt(index)),
            EpollEvents(rawValue: cloom_epoll_event_mask(events, CInt(index)))
        )
    }
}
