// libFuzzer entry for the tunnel header codec (Sources/LoomMesh/TunnelHeader.swift),
// compiled with it alone by scripts/fuzz-tunnel-header.sh; see Tests/Fuzz/README.md.
// Traps on any input for which the codec breaks one of its promises:
// - a header's length is within minimumLength...maxLength and within the input;
// - its encoding parses back to the same header, with `encodedLength` bytes, and is the
//   input's own first bytes when the input had no TLVs;
// - the input cut at the header's length gives the same header, one byte less `needMore`;
// - a verdict never changes with one more byte, except from `needMore`;
// - a header made of the input's bytes (either family at either end) encodes to bytes that
//   parse back to it, both ends as IPv6 if the families differ, or are refused if its
//   destination port is 0.
// (Out-of-bounds reads are AddressSanitizer's to find.)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    checkEncoding(input)
    let verdict = TunnelHeader.parse(input)
    if size > 0 {
        let shorter = TunnelHeader.parse(UnsafeRawBufferPointer(rebasing: input[..<(size - 1)]))
        if shorter != .needMore && shorter != verdict {
            fatalError("one more byte changed \(shorter) into \(verdict)")
        }
    }
    guard case .header(let header, let length) = verdict else { return 0 }
    guard length >= TunnelHeader.minimumLength + 12, length <= TunnelHeader.maxLength, length <= size else {
        fatalError("length \(length) out of range for \(size) bytes")
    }
    if TunnelHeader.parse(UnsafeRawBufferPointer(rebasing: input[..<length])) != verdict {
        fatalError("the header alone parses differently")
    }
    if TunnelHeader.parse(UnsafeRawBufferPointer(rebasing: input[..<(length - 1)])) != .needMore {
        fatalError("the header less one byte is not needMore")
    }
    let encoded = header.encoded()
    guard encoded.count == header.encodedLength, encoded.count == 28 || encoded.count == 52 else {
        fatalError("encoded \(encoded.count) bytes, encodedLength \(header.encodedLength)")
    }
    let again = encoded.withUnsafeBytes { TunnelHeader.parse($0) }
    if again != .header(header, length: encoded.count) {
        fatalError("round trip: \(header) became \(again)")
    }
    if length == encoded.count && !encoded.elementsEqual(input[..<length]) {
        fatalError("encoding differs from the input it was parsed from")
    }
    return 0
}

/// Encodes a header whose addresses and ports are the input's bytes (zeros past its end).
func checkEncoding(_ input: UnsafeRawBufferPointer) {
    var offset = 1
    func next<T: FixedWidthInteger>(_: T.Type) -> T {
        var value: T = 0
        for _ in 0..<MemoryLayout<T>.size {
            value = value << 8 | T(offset < input.count ? input[offset] : 0)
            offset += 1
        }
        return value
    }
    func address(v6: Bool) -> TunnelAddress {
        if v6 { return .v6(hi: next(UInt64.self), lo: next(UInt64.self), port: next(UInt16.self)) }
        return .v4(address: next(UInt32.self), port: next(UInt16.self))
    }
    let families = input.isEmpty ? 0 : input[0]
    let header = TunnelHeader(source: address(v6: families & 1 != 0), destination: address(v6: families & 2 != 0))
    let encoded = header.encoded()
    let verdict = encoded.withUnsafeBytes { TunnelHeader.parse($0) }
    if header.destination.port == 0 {
        guard verdict == .invalid("destination port 0") else { fatalError("port 0 encoded as \(verdict)") }
        return
    }
    var expected = header
    if (families ^ families >> 1) & 1 != 0 {
        let (sourceHi, sourceLo, sourcePort) = header.source.asV6
        let (destinationHi, destinationLo, destinationPort) = header.destination.asV6
        expected.source = .v6(hi: sourceHi, lo: sourceLo, port: sourcePort)
        expected.destination = .v6(hi: destinationHi, lo: destinationLo, port: destinationPort)
    }
    if verdict != .header(expected, length: header.encodedLength) {
        fatalError("\(header) encoded as \(encoded), parsed as \(verdict)")
    }
}
