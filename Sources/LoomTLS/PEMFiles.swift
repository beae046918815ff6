// Reading and writing the CA's and workloads' PEM files, with the checks an operator needs
// to hear about before a key is used: missing or unreadable files, keys readable by others,
// directories others can write to. Keys are created with their final mode (O_EXCL, never a
// chmod after the secret is written); replacing a file goes through a new file and
// rename(2), so a reader never sees half a key or a key with a wider mode.
#if canImport(Glibc)
    import Glibc
#endif

enum PEMFiles {
    /// A file's bytes and permission bits.
    struct Contents {
        var bytes: [UInt8]
        let mode: mode_t

        /// Overwrites the bytes (for key material, once parsed).
        mutating func wipe() {
            for i in bytes.indices { bytes[i] = 0 }
        }
    }

    /// Larger files are not PEM certificates or keys.
    static let maximumSize = 1 << 20

    /// Reads a whole regular file; `hint` says what to do when it cannot be read.
    static func read(_ path: String, hint: String) throws(TLSError) -> Contents {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw TLSError("cannot read \(path): \(errnoText()); \(hint)") }
        defer { _ = Glibc.close(fd) }
        var status = stat()
        if fstat(fd, &status) != 0 { throw TLSError("cannot read \(path): \(errnoText()); \(hint)") }
        guard status.st_mode & S_IFMT == S_IFREG else { throw TLSError("\(path) is not a regular file; \(hint)") }
        guard status.st_size <= maximumSize else {
            throw TLSError("\(path) is \(status.st_size) bytes: too large for a PEM certificate or key")
        }
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(fd, buffer.baseAddress! + filled, buffer.count - filled)
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw TLSError("cannot read \(path): \(errnoText()); \(hint)") }
            if n == 0 { break }
            filled += n
        }
        bytes.removeLast(bytes.count - filled)
        return Contents(bytes: bytes, mode: status.st_mode & 0o7777)
    }

    /// A private key file must not be readable or writable by group or others.
    static func checkOwnerOnly(_ path: String, mode: mode_t, role: String) throws(TLSError) {
        if mode & 0o077 != 0 {
            throw TLSError(
                "\(path) is mode \(octal(mode)): \(role) key must be readable by its owner only (chmod 600 \(path))"
            )
        }
    }

    /// The directory holding a CA key must not be writable by group or others (they could
    /// swap the key or the certificate).
    static func checkDirectory(_ directory: String, hint: String) throws(TLSError) {
        var status = stat()
        if stat(directory, &status) != 0 {
            throw TLSError("cannot use directory \(directory): \(errnoText()); \(hint)")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else { throw TLSError("\(directory) is not a directory") }
        let mode = status.st_mode & 0o7777
        if mode & 0o022 != 0 {
            throw TLSError(
                "\(directory) is mode \(octal(mode)): a CA directory must not be group- or world-writable (chmod 700 \(directory))"
            )
        }
    }

    /// Creates `path` (which must not exist) with `mode` and `contents`, flushed to disk.
    static func create(_ path: String, contents: String, mode: mode_t) throws(TLSError) {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        if fd < 0 { throw TLSError("cannot create \(path): \(errnoText())") }
        var ok = fchmod(fd, mode) == 0  // the umask may have taken bits away; never adds any
        if ok { ok = writeAll(fd, contents) }
        if ok { ok = fsync(fd) == 0 }
        let failure = errnoText()
        _ = Glibc.close(fd)
        if !ok {
            _ = unlink(path)
            throw TLSError("cannot write \(path): \(failure)")
        }
    }

    /// Replaces (or creates) `path` with a file of `mode` holding `contents`: a new file
    /// next to it, renamed over it.
    static func replace(_ path: String, contents: String, mode: mode_t) throws(TLSError) {
        let temporary = "\(path).tmp-\(getpid())"
        _ = unlink(temporary)
        try create(temporary, contents: contents, mode: mode)
        if rename(temporary, path) != 0 {
            let failure = errnoText()
            _ = unlink(temporary)
            throw TLSError("cannot write \(path): \(failure)")
        }
    }

    /// mkdir -p, the last component with `mode`, missing parents with 0755.
    static func makeDirectory(_ path: String, mode: mode_t) throws(TLSError) {
        if exists(path) { return }
        let parent = directory(of: path)
        if parent != path && !exists(parent) { try makeDirectory(parent, mode: 0o755) }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw TLSError("cannot create directory \(path): \(errnoText())")
        }
        _ = chmod(path, mode)  // against the umask
    }

    static func remove(_ path: String) { _ = unlink(path) }

    static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    /// The directory part of a path ("." for a bare file name).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    private static func writeAll(_ fd: CInt, _ text: String) -> Bool {
        var text = text
        return text.withUTF8 { buffer in
            var written = 0
            while written < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                written += n
            }
            return true
        }
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// The current time in Unix seconds.
func unixNow() -> Int64 { Int64(time(nil)) }

/// Unix seconds as "2035-01-31 12:00:00 UTC".
public func utcText(_ seconds: Int64) -> String {
    var t = time_t(seconds)
    var parts = tm()
    guard gmtime_r(&t, &parts) != nil else { return "\(seconds)" }
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) UTC"
}
