// The tunnel header in LoomSystem's terms. Kept apart from TunnelHeader.swift, which
// imports nothing so that the fuzzer can compile it alone. Both types share conventions
// (IPv4 in host order, IPv6 as big-endian halves), so the conversions are one-to-one.
import LoomSystem

extension TunnelAddress {
    public init(_ address: SocketAddress) {
        switch address {
        case .v4(let a, let p): self = .v4(address: a, port: p)
        case .v6(let hi, let lo, let p): self = .v6(hi: hi, lo: lo, port: p)
        }
    }

    public var socketAddress: SocketAddress {
        switch self {
        case .v4(let a, let p): return .v4(address: a, port: p)
        case .v6(let hi, let lo, let p): return .v6(hi: hi, lo: lo, port: p)
        }
    }
}

extension TunnelHeader {
    /// The header a connecting Loom sends for `client`, bound for `destination` (the
    /// endpoint pod IP with the target port).
    public init(client: ClientAddress, destination: UpstreamAddress) {
        self.init(source: TunnelAddress(client.address), destination: TunnelAddress(destination.address))
    }

    /// The original client, as the receiving Loom reports it.
    public var client: ClientAddress { ClientAddress(source.socketAddress) }

    /// Where the receiving Loom connects.
    public var upstream: UpstreamAddress { UpstreamAddress(destination.socketAddress) }
}
