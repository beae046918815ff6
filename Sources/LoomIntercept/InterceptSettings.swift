// What a pod's interception looks like: ports, mark, exemptions, fail policy.

import LoomSystem

/// What happens to a pod's new connections when loomd is gone.
public enum FailPolicy: String, Sendable, CaseIterable {
    /// Intercepted connections are refused: nothing bypasses the mesh (default).
    case closed
    /// Connections go straight to their destination once loomd's heartbeat expires.
    case open
}

/// Interception settings of one pod.
public struct InterceptSettings: Equatable, Sendable {
    /// Outbound capture port (15001).
    public var outboundPort: UInt16
    /// Inbound capture port (15006).
    public var inboundPort: UInt16
    /// Inbound mTLS tunnel port (15008): never redirected.
    public var tunnelPort: UInt16
    /// Socket mark on loomd's own upstream sockets: never redirected.
    public var mark: UInt32
    /// Destination ports that outbound connections reach directly.
    public var excludeOutboundPorts: [UInt16]
    /// Local ports that inbound connections reach directly.
    public var excludeInboundPorts: [UInt16]
    /// Destination prefixes that outbound connections reach directly.
    public var excludeCIDRs: [CIDR]
    public var failPolicy: FailPolicy
    /// How long loomd's heartbeat keeps `open` pods intercepted (seconds).
    public var heartbeatSeconds: Int
    /// Capture inbound connections too (a `prerouting` chain redirecting to
    /// `inboundPort`). Off: outbound capture only.
    public var captureInbound: Bool

    public init(
        outboundPort: UInt16 = LoomPorts.outbound,
        inboundPort: UInt16 = LoomPorts.inbound,
        tunnelPort: UInt16 = LoomPorts.tunnel,
        mark: UInt32 = LoomPorts.socketMark,
        excludeOutboundPorts: [UInt16] = [],
        excludeInboundPorts: [UInt16] = [],
        excludeCIDRs: [CIDR] = [],
        failPolicy: FailPolicy = .closed,
        heartbeatSeconds: Int = 5,
        captureInbound: Bool = true
    ) {
        self.outboundPort = outboundPort
        self.inboundPort = inboundPort
        self.tunnelPort = tunnelPort
        self.mark = mark
        self.excludeOutboundPorts = excludeOutboundPorts
        self.excludeInboundPorts = excludeInboundPorts
        self.excludeCIDRs = excludeCIDRs
        self.failPolicy = failPolicy
        self.heartbeatSeconds = heartbeatSeconds
        self.captureInbound = captureInbound
    }

    /// Parses a comma-separated port list such as `22,8080`.
    public static func ports(parsing text: String, option: String) throws(InterceptError) -> [UInt16] {
        var result: [UInt16] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = part.trimmingCharacters(in: " ")
            guard let port = UInt16(trimmed), port > 0 else {
                throw .invalidPort(option: option, value: String(part))
            }
            if !result.contains(port) { result.append(port) }
        }
        return result.sorted()
    }
}

/// A setting that cannot be turned into rules, naming the value.
public enum InterceptError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidCIDR(String, reason: String)
    case invalidPort(option: String, value: String)

    public var description: String {
        switch self {
        case .invalidCIDR(let text, let reason): return "invalid CIDR '\(text)': \(reason)"
        case .invalidPort(let option, let value):
            return "\(option): '\(value)' is not a port (1-65535); give a comma-separated list such as 22,8080"
        }
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var s = self
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}
