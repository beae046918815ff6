// Fixed, seedable hashing and randomness for load balancing: no system clock, no system
// randomness, the same numbers on every machine and every run.
import LoomSystem

/// Seeded SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, one add and one mix per number.
struct BalancerRandom: Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    @inline(__always)
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// Uniform in 0..<bound (bound > 0), by multiply-high (Lemire) without the rejection
    /// step: the bias is below bound / 2^64.
    @inline(__always)
    mutating func next(below bound: UInt64) -> UInt64 {
        next().multipliedFullWidth(by: bound).high
    }

    /// SplitMix64's finalizer: a bijective mix of all 64 bits.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Balancer {
    /// The hash `ringHash` keys on for a client: its IP only (not the port), the same on
    /// every loop, node and run. An IPv4-mapped IPv6 address hashes as its IPv4 address.
    public static func clientHash(_ address: SocketAddress) -> UInt64 {
        let (hi, lo) = ipBits(address)
        return BalancerRandom.mix(BalancerRandom.mix(hi ^ 0x6C6F_6F6D_2D63_6C69) ^ lo)
    }

    /// A stable key for an endpoint (IP and port) to place it on the hash ring, so that it
    /// keeps its place when other endpoints come and go.
    public static func endpointKey(_ address: SocketAddress) -> UInt64 {
        let (hi, lo) = ipBits(address)
        return BalancerRandom.mix(
            BalancerRandom.mix(BalancerRandom.mix(hi ^ 0x6C6F_6F6D_2D65_6E64) ^ lo) ^ UInt64(address.port)
        )
    }

    /// The address as 128 bits, IPv4 as `::ffff:a.b.c.d`.
    private static func ipBits(_ address: SocketAddress) -> (UInt64, UInt64) {
        switch address {
        case .v4(let a, _): return (0, 0xFFFF_0000_0000 | UInt64(a))
        case .v6(let hi, let lo, _): return (hi, lo)
        }
    }
}
