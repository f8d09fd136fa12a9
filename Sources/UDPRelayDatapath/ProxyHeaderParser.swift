#if canImport(Glibc)
import Glibc
#endif

/// Reads the PROXY protocol version 2 header (HAProxy's `proxy-protocol.txt`, section 2.2) at
/// the start of a datagram received with `accept_proxy_protocol = v2`: the 12-byte signature,
/// version 2 with command PROXY or LOCAL, the family and transport, the length of what follows,
/// then (PROXY) the source and destination addresses and ports and TLVs.
///
/// Accepted: command LOCAL (any family; what follows is skipped by its length), and command
/// PROXY over DGRAM with INET (12 address bytes) or INET6 (36), followed by TLVs that each fit
/// in the length. Everything else (another signature, version or command, STREAM, UNSPEC or
/// UNIX with PROXY, a length past the datagram, an address block too short for its family, a
/// TLV running past the length) is malformed.
///
/// Pure, allocation-free and dependent on nothing but Glibc, so that a libFuzzer target
/// compiles it alone (`Fuzz/FuzzProxyProtocol.swift`). It never reads at or past `count`.
public enum ProxyHeaderParser {
    /// `\r\n\r\n\0\r\nQUIT\n`, as two big-endian words.
    static let signature: (UInt64, UInt32) = (0x0D0A_0D0A_000D_0A51, 0x5549_540A)
    /// Signature, version/command, family/transport and length.
    static let fixedSize = 16
    /// Room `parse` needs at `source`: a `sockaddr_in6`.
    public static let sourceCapacity = MemoryLayout<sockaddr_in6>.size

    /// What a malformed header returns.
    public static let malformed = -1

    /// Parses the header at the start of the `count` bytes at `data`. Returns its length (the
    /// payload follows it), or `malformed`. For PROXY, the source address and port (the client)
    /// is written to `source` (at least `sourceCapacity` bytes) as a `sockaddr_in` or
    /// `sockaddr_in6`; for LOCAL, `source` gets family 0 (the datagram's real source stands).
    @inline(__always)
    public static func parse(_ data: UnsafeRawPointer, count: Int, source: UnsafeMutableRawPointer) -> Int {
        guard count >= fixedSize,
            UInt64(bigEndian: data.loadUnaligned(as: UInt64.self)) == signature.0,
            UInt32(bigEndian: data.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) == signature.1
        else { return malformed }
        let versionCommand = data.load(fromByteOffset: 12, as: UInt8.self)
        let familyTransport = data.load(fromByteOffset: 13, as: UInt8.self)
        let length = Int(UInt16(bigEndian: data.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
        guard versionCommand >> 4 == 2, fixedSize + length <= count else { return malformed }
        switch versionCommand & 0x0F {
        case 0:  // LOCAL: the addresses, if any, are to be ignored.
            source.storeBytes(of: 0, as: sa_family_t.self)
            return fixedSize + length
        case 1:
            break
        default:
            return malformed
        }
        let addresses = data + fixedSize
        let addressLength: Int
        switch familyTransport {
        case 0x12:  // INET, DGRAM
            addressLength = 12
            guard length >= addressLength else { return malformed }
            source.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<sockaddr_in>.size)
            source.storeBytes(of: sa_family_t(AF_INET), as: sa_family_t.self)
            // Address and port in network order, as a sockaddr keeps them.
            source.storeBytes(of: addresses.loadUnaligned(as: UInt32.self), toByteOffset: 4, as: UInt32.self)
            source.storeBytes(of: addresses.loadUnaligned(fromByteOffset: 8, as: UInt16.self), toByteOffset: 2, as: UInt16.self)
        case 0x22:  // INET6, DGRAM
            addressLength = 36
            guard length >= addressLength else { return malformed }
            source.initializeMemory(as: UInt8.self, repeating: 0, count: sourceCapacity)
            source.storeBytes(of: sa_family_t(AF_INET6), as: sa_family_t.self)
            (source + 8).copyMemory(from: addresses, byteCount: 16)
            source.storeBytes(of: addresses.loadUnaligned(fromByteOffset: 32, as: UInt16.self), toByteOffset: 2, as: UInt16.self)
        default:
            return malformed
        }
        // TLVs: a type byte and a 16-bit length, each within the header's length.
        var offset = addressLength
        while offset < length {
            guard length - offset >= 3 else { return malformed }
            let tlvLength = Int(UInt16(bigEndian: addresses.loadUnaligned(fromByteOffset: offset + 1, as: UInt16.self)))
            offset += 3 + tlvLength
        }
        guard offset == length else { return malformed }
        return fixedSize + length
    }
}
