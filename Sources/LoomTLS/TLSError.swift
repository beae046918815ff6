// The one error type of LoomTLS: a line for the operator that names the file or the step
// and OpenSSL's reason, and says what to do. Also the small helpers that turn CLoomTLS's
// answers (malloc'd strings, the thread's error queue) into Swift values.
import CLoomTLS

public struct TLSError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }

    /// `message` followed by OpenSSL's reason for the failure just seen (the thread's error
    /// queue is cleared).
    static func openssl(_ message: String) -> TLSError {
        TLSError("\(message) (OpenSSL: \(OpenSSLError.takeReason()))")
    }
}

enum OpenSSLError {
    /// The reason text of the first queued error, and the queue cleared.
    static func takeReason() -> String {
        reason(cloom_tls_take_error())
    }

    static func reason(_ code: UInt) -> String {
        if code == 0 { return "no reason given" }
        if let text = cloom_tls_error_reason(code) { return String(cString: text) }
        return "error 0x\(String(code, radix: 16))"
    }
}

/// A malloc'd C string from CLoomTLS as a String (nil for NULL); the C string is freed.
func takeString(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
    guard let pointer else { return nil }
    defer { cloom_tls_free(pointer) }
    return String(cString: pointer)
}
