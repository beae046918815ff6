// Workload identities as SPIFFE IDs: spiffe://<trust domain>/ns/<namespace>/sa/<service
// account>, the form Istio and Linkerd put in a workload certificate's URI SAN. Parsing is
// strict (one form, lowercase scheme and trust domain, no empty or extra segments, no
// query or fragment), so an identity read from a peer's certificate can be compared as a
// value.

public struct SpiffeID: Hashable, Sendable, CustomStringConvertible {
    public let trustDomain: String
    public let namespace: String
    public let serviceAccount: String

    /// No validation: use `init?(uri:)` or `resolve` for text from outside.
    public init(trustDomain: String, namespace: String, serviceAccount: String) {
        self.trustDomain = trustDomain
        self.namespace = namespace
        self.serviceAccount = serviceAccount
    }

    /// Parses exactly `spiffe://<td>/ns/<ns>/sa/<sa>`.
    public init?(uri: String) {
        let scheme = "spiffe://"
        guard uri.hasPrefix(scheme) else { return nil }
        let parts = uri.dropFirst(scheme.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "ns", parts[3] == "sa",
            SpiffeID.isValidTrustDomain(parts[0]), SpiffeID.isValidSegment(parts[2]),
            SpiffeID.isValidSegment(parts[4])
        else { return nil }
        self.init(trustDomain: String(parts[0]), namespace: String(parts[2]), serviceAccount: String(parts[4]))
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>`.
    public var uri: String { "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)" }

    public var description: String { uri }

    /// An identity from the full URI, `ns/<ns>/sa/<sa>` or `<ns>/<sa>` (the short forms in
    /// `trustDomain`); nil if the text is none of these.
    public static func resolve(_ text: String, trustDomain: String) -> SpiffeID? {
        if text.hasPrefix("spiffe://") { return SpiffeID(uri: text) }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 4, parts[0] == "ns", parts[2] == "sa" {
            return SpiffeID(uri: "spiffe://\(trustDomain)/ns/\(parts[1])/sa/\(parts[3])")
        }
        if parts.count == 2 { return SpiffeID(uri: "spiffe://\(trustDomain)/ns/\(parts[0])/sa/\(parts[1])") }
        return nil
    }

    /// A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_'.
    public static func isValidTrustDomain(_ text: some StringProtocol) -> Bool {
        !text.isEmpty
            && text.utf8.allSatisfy {
                ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || isDigitOrPunctuation($0)
            }
    }

    /// A path segment: letters, digits, '.', '-' and '_', and not "." or "..".
    static func isValidSegment(_ text: some StringProtocol) -> Bool {
        !text.isEmpty && text != "." && text != ".."
            && text.utf8.allSatisfy {
                ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z"))
                    || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) || isDigitOrPunctuation($0)
            }
    }

    private static func isDigitOrPunctuation(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: ".") || c == UInt8(ascii: "-")
            || c == UInt8(ascii: "_")
    }
}
