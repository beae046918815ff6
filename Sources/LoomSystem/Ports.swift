// Loom's well-known ports and socket mark, in one place (ARCHITECTURE.md, "Ports and
// marks"). The relay and the rule plan both default to these.

/// Ports and the socket mark every Loom part agrees on.
public enum LoomPorts {
    /// Outbound capture, in each pod's netns.
    public static let outbound: UInt16 = 15001
    /// Inbound capture (plaintext), in each pod's netns.
    public static let inbound: UInt16 = 15006
    /// Inbound mTLS tunnel from other Loom nodes; never redirected.
    public static let tunnel: UInt16 = 15008
    /// SO_MARK on every socket loomd opens toward an upstream: 0x4c4f ("LO"), clear of
    /// the bits kube-proxy (0x4000, 0x8000), Istio (0x539) and Cilium (0x200, 0xf00) use.
    public static let socketMark: UInt32 = 0x4c4f
}
