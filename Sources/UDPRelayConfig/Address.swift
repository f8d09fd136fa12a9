#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as a plain value (network byte order bytes), without any socket I/O.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// IPv4, the four bytes in network order packed big-endian into a `UInt32`.
    case v4(UInt32)
    /// IPv6, the sixteen bytes in network order packed big-endian into two `UInt64`s.
    case v6(high: UInt64, low: UInt64)

    /// Parses a literal (`192.0.2.1`, `2001:db8::1`). Returns nil for anything else.
    public init?(literal: some StringProtocol) {
        let text = String(literal)
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            self = .v6(high: IPAddress.pack(bytes[0..<8]), low: IPAddress.pack(bytes[8..<16]))
            return
        }
        return nil
    }

    static func pack(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        bytes.reduce(0) { ($0 << 8) | UInt64($1) }
    }

    /// The sixteen or four bytes in network order.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a):
            return (0..<4).map { UInt8(truncatingIfNeeded: a >> (24 - 8 * $0)) }
        case .v6(let high, let low):
            return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
                + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
        }
    }

    public var isIPv6: Bool {
        if case .v6 = self { return true }
        return false
    }

    /// `0.0.0.0` or `::`.
    public var isWildcard: Bool {
        switch self {
        case .v4(let a): return a == 0
        case .v6(let h, let l): return h == 0 && l == 0
        }
    }

    /// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for; nil for any
    /// other address.
    var mappedIPv4: IPAddress? {
        guard case .v6(let h, let l) = self, h == 0, l >> 32 == 0xFFFF else { return nil }
        return .v4(UInt32(truncatingIfNeeded: l))
    }

    /// `127.0.0.0/8` or `::1`.
    public var isLoopback: Bool {
        switch self {
        case .v4(let a): return a >> 24 == 127
        case .v6(let h, let l): return h == 0 && l == 1
        }
    }

    public var description: String {
        switch self {
        case .v4(let a):
            return "\(a >> 24).\(a >> 16 & 0xFF).\(a >> 8 & 0xFF).\(a & 0xFF)"
        case .v6(let high, let low):
            // inet_ntop for RFC 5952's shortest form; the address goes in as stored (big-endian).
            var raw = in6_addr()
            withUnsafeMutableBytes(of: &raw) { dst in
                dst.storeBytes(of: high.bigEndian, as: UInt64.self)
                dst.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count))
            return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
    }
}

/// An IP address and UDP port: `A.B.C.D:PORT` or `[V6]:PORT`.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var ip: IPAddress
    /// Port 0 asks the kernel for an ephemeral port (useful in tests).
    public var port: UInt16

    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parses `A.B.C.D:PORT` or `[V6]:PORT`.
    public init(parsing text: some StringProtocol) throws(ValueErrorMessage) {
        let s = Substring(text)
        let hostPart: Substring
        let portPart: Substring
        if s.first == "[" {
            guard let close = s.firstIndex(of: "]") else {
                throw ValueErrorMessage("expected '[IPv6]:PORT', missing ']' in '\(s)'")
            }
            hostPart = s[s.index(after: s.startIndex)..<close]
            let after = s[s.index(after: close)...]
            guard after.first == ":" else { throw ValueErrorMessage("expected ':PORT' after ']' in '\(s)'") }
            portPart = after.dropFirst()
            guard let ip = IPAddress(literal: hostPart), ip.isIPv6 else {
                throw ValueErrorMessage("'\(hostPart)' is not an IPv6 address")
            }
            self.ip = ip
        } else {
            guard let colon = s.lastIndex(of: ":") else {
                throw ValueErrorMessage("expected 'ADDRESS:PORT' (e.g. 127.0.0.1:7007 or [::1]:7007), got '\(s)'")
            }
            hostPart = s[..<colon]
            portPart = s[s.index(after: colon)...]
            if hostPart.contains(":") {
                throw ValueErrorMessage("IPv6 addresses need brackets: '[\(hostPart)]:\(portPart)'")
            }
            guard let ip = IPAddress(literal: hostPart) else {
                throw ValueErrorMessage("'\(hostPart)' is not an IPv4 address (write IPv6 as [ADDR]:PORT)")
            }
            self.ip = ip
        }
        guard let port = UInt16(portPart) else {
            throw ValueErrorMessage("port must be a number from 0 to 65535, got '\(portPart)'")
        }
        self.port = port
    }

    public var description: String {
        ip.isIPv6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address means a single host.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public var network: IPAddress
    public var prefixLength: Int

    public init(parsing text: some StringProtocol) throws(ValueErrorMessage) {
        let s = Substring(text)
        let addressPart: Substring
        var length: Int?
        if let slash = s.firstIndex(of: "/") {
            addressPart = s[..<slash]
            guard let l = Int(s[s.index(after: slash)...]) else {
                throw ValueErrorMessage("prefix length must be a number in '\(s)'")
            }
            length = l
        } else {
            addressPart = s
        }
        guard let ip = IPAddress(literal: addressPart) else {
            throw ValueErrorMessage("'\(addressPart)' is not an IPv4 or IPv6 address")
        }
        let max = ip.isIPv6 ? 128 : 32
        let l = length ?? max
        guard (0...max).contains(l) else {
            throw ValueErrorMessage("prefix length must be 0 to \(max) for '\(addressPart)', got \(l)")
        }
        self.network = CIDR.mask(ip, l)
        self.prefixLength = l
    }

    public init(network: IPAddress, prefixLength: Int) {
        self.network = CIDR.mask(network, prefixLength)
        self.prefixLength = prefixLength
    }

    static func mask(_ ip: IPAddress, _ length: Int) -> IPAddress {
        switch ip {
        case .v4(let a):
            return .v4(length == 0 ? 0 : a & (UInt32.max << (32 - length)))
        case .v6(let h, let l):
            let hm: UInt64 = length >= 64 ? .max : (length == 0 ? 0 : UInt64.max << (64 - length))
            let lm: UInt64 = length <= 64 ? 0 : (length >= 128 ? .max : UInt64.max << (128 - length))
            return .v6(high: h & hm, low: l & lm)
        }
    }

    /// Whether `ip` lies inside this network (an IPv4 network never contains an IPv6 address).
    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.isIPv6 == network.isIPv6 else { return false }
        return CIDR.mask(ip, prefixLength) == network
    }

    public var description: String { "\(network)/\(prefixLength)" }
}

/// A value-level error message from the public value parsers.
public struct ValueErrorMessage: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
