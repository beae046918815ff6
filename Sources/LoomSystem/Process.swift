// Process-wide facts and settings: clocks, resource limits, signals, /proc readings.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

/// Process-level helpers.
public enum SystemProcess {
    /// Monotonic coarse milliseconds (vDSO, no syscall): cheap enough for every event batch.
    @inline(__always)
    public static func nowMilliseconds() -> Int64 { cloom_now_ms() }

    /// Monotonic microseconds (vDSO clock_gettime, no syscall), for busy-poll windows.
    @inline(__always)
    public static func nowMicroseconds() -> Int64 { cloom_now_us() }

    /// Raises the soft open-files limit to the hard limit and returns it.
    public static func raiseOpenFilesLimit() -> Int { Int(cloom_raise_nofile_limit()) }

    /// Blocks the daemon's signals in this thread and its future threads; ignores SIGPIPE.
    public static func blockSignals() { _ = cloom_block_signals() }

    /// Waits for SIGTERM, SIGINT, SIGHUP, SIGUSR1 or SIGUSR2 (they must be blocked first).
    public static func waitForSignal() -> CInt { cloom_wait_signal() }

    public static let sigterm = SIGTERM
    public static let sigint = SIGINT
    public static let sighup = SIGHUP
    public static let sigusr1 = SIGUSR1
    public static let sigusr2 = SIGUSR2

    /// Starts the program at `path` with `arguments` (argv[0] first); its PID.
    public static func spawn(path: String, arguments: [String]) throws(SystemError) -> Int32 {
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        defer { for p in argv { free(p) } }
        return try syscall("posix_spawn") { cloom_spawn(path, argv) }
    }

    /// Sends `signal` to this process (wakes the thread in `waitForSignal`).
    public static func signalSelf(_ signal: CInt) { _ = kill(getpid(), signal) }

    /// Reads a small integer from a /proc or /sys file, e.g. a sysctl.
    public static func readInteger(path: String) -> Int? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 64)
        guard fgets(&line, 64, file) != nil else { return nil }
        let text = String(decoding: line.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self).split(
            whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first
        return text.flatMap { Int($0) }
    }

    /// The page size of this machine.
    public static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }

    /// Number of CPUs available.
    public static var processorCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Hands memory freed by the allocator back to the kernel (glibc `malloc_trim`), e.g.
    /// after a configuration parse left megabytes of parser nodes behind.
    public static func releaseFreedMemory() { _ = cloom_malloc_trim() }

    /// This process's id.
    public static var id: Int32 { getpid() }

    /// Takes an exclusive lock on `path` (created 0600) for the life of the process, or
    /// throws EWOULDBLOCK if another process holds it.
    public static func lockFile(_ path: String) throws(SystemError) -> FileDescriptor {
        let fd = FileDescriptor(rawValue: try syscall("open") { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) })
        if flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
            let error = SystemError("flock", errno: errno)
            fd.close()
            throw error
        }
        return fd
    }
}

extension UInt32 {
    /// Parses `0x4c4f` (hex) or `19535` (decimal), as marks are written.
    public init?(decimalOrHex text: String) {
        let lower = text.lowercased()
        guard let value = lower.hasPrefix("0x") ? UInt32(lower.dropFirst(2), radix: 16) : UInt32(lower) else {
            return nil
        }
        self = value
    }
}
