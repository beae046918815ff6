// Plain files loomd writes (the access log).
#if canImport(Glibc)
    import Glibc
#endif

extension FileDescriptor {
    /// Opens (creating with mode 0640) a file for appending.
    public static func openAppend(path: String) throws(SystemError) -> FileDescriptor {
        FileDescriptor(
            rawValue: try syscall("open") { Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640) }
        )
    }
}
