// A wake-up for a thread blocked in epoll_wait: other threads signal it after queueing a
// control message; the owner drains it and reads its queue.
import CLoomLinux

/// An eventfd used as a doorbell.
public struct EventNotifier: Sendable {
    public let fd: FileDescriptor

    public init() throws(SystemError) {
        fd = FileDescriptor(rawValue: try syscall("eventfd") { cloom_eventfd() })
    }

    /// Rings the bell (any thread).
    public func signal() { _ = cloom_eventfd_signal(fd.rawValue) }

    /// Clears the bell (the owning thread).
    public func drain() { _ = cloom_eventfd_drain(fd.rawValue) }

    public func close() { fd.close() }
}

/// Device and inode of a file: two opens of the same netns file have the same identity.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    /// The identity of the file at `path`, or nil if it is gone.
    public init?(path: String) {
        var dev: UInt64 = 0
        var ino: UInt64 = 0
        guard cloom_file_identity(path, &dev, &ino) == 0 else { return nil }
        device = dev
        inode = ino
    }

    /// The identity of an open file.
    public init?(_ fd: FileDescriptor) {
        var dev: UInt64 = 0
        var ino: UInt64 = 0
        guard cloom_fd_identity(fd.rawValue, &dev, &ino) == 0 else { return nil }
        device = dev
        inode = ino
    }
}

/// When a file was last written and how big it is: a change means "read it again".
public struct FileStamp: Hashable, Sendable {
    public let modifiedNanoseconds: Int64
    public let size: Int64
    public let identity: FileIdentity

    /// The stamp of the file at `path`, or nil if it is gone.
    public init?(path: String) {
        var mtime: Int64 = 0
        var size: Int64 = 0
        guard cloom_file_stamp(path, &mtime, &size) == 0, let identity = FileIdentity(path: path) else { return nil }
        modifiedNanoseconds = mtime
        self.size = size
        self.identity = identity
    }
}
