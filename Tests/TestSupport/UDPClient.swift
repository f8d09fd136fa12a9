import Foundation
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A blocking UDP socket for tests: send to an address, wait (with a deadline) for a reply.
public final class UDPClient {
    public let fd: Int32
    public let family: Int32

    /// Binds to `bind` (port 0 by default) so the kernel picks a free port.
    public init(bind: SocketAddress) throws {
        family = bind.ip.isIPv6 ? AF_INET6 : AF_INET
        fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        // 4 MiB whatever net.core.rmem_max says (the FORCE options need root, as CI runs):
        // capped at a default rmem_max of 208 KiB, a burst of a few hundred replies that a
        // slow (ThreadSanitizer) reader has not taken yet overflows the buffer and is lost.
        var big: Int32 = 4 << 20
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, 4) != 0 { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, 4) }
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, 4) != 0 { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, 4) }
        var (storage, len) = TestAddress.storage(bind)
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, len) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw POSIXError(.init(rawValue: e)!)
        }
    }

    /// A client on loopback of the given family.
    public convenience init(ipv6: Bool = false) throws {
        try self.init(bind: ipv6 ? SocketAddress(ip: .v6(high: 0, low: 1), port: 0) : SocketAddress(ip: .v4(0x7F00_0001), port: 0))
    }

    deinit { close(fd) }

    public var localAddress: SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return TestAddress.from(storage)!
    }

    @discardableResult
    public func send(_ bytes: [UInt8], to address: SocketAddress) -> Int {
        var (storage, len) = TestAddress.storage(address)
        return bytes.withUnsafeBytes { buf in
            withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buf.baseAddress, buf.count, 0, $0, len)
                }
            }
        }
    }

    /// Waits up to `timeout` seconds for one datagram; nil on timeout.
    public func receive(timeout: Double = 5) -> (bytes: [UInt8], from: SocketAddress)? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let rc = poll(&pfd, 1, Int32(timeout * 1000))
        guard rc > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 70000)
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = buffer.withUnsafeMutableBytes { buf in
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, buf.baseAddress, buf.count, 0, $0, &len)
                }
            }
        }
        guard n >= 0 else { return nil }
        return (Array(buffer[0..<n]), TestAddress.from(storage)!)
    }

    /// Receives until `count` datagrams arrived or nothing came for `idle` seconds.
    public func receiveMany(_ count: Int, idle: Double = 3) -> [[UInt8]] {
        var out: [[UInt8]] = []
        while out.count < count, let r = receive(timeout: idle) { out.append(r.bytes) }
        return out
    }
}

/// sockaddr conversions for tests (independent of the daemon's own code under test).
public enum TestAddress {
    public static func storage(_ a: SocketAddress) -> (sockaddr_storage, socklen_t) {
        var s = sockaddr_storage()
        let text = "\(a.ip)"
        if a.ip.isIPv6 {
            withUnsafeMutablePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    p.pointee.sin6_family = sa_family_t(AF_INET6)
                    p.pointee.sin6_port = a.port.bigEndian
                    _ = inet_pton(AF_INET6, text, &p.pointee.sin6_addr)
                }
            }
            return (s, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        withUnsafeMutablePointer(to: &s) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                p.pointee.sin_family = sa_family_t(AF_INET)
                p.pointee.sin_port = a.port.bigEndian
                _ = inet_pton(AF_INET, text, &p.pointee.sin_addr)
            }
        }
        return (s, socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    public static func from(_ s: sockaddr_storage) -> SocketAddress? {
        var s = s
        var buf = [CChar](repeating: 0, count: 64)
        switch Int32(s.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p -> SocketAddress? in
                    var addr = p.pointee.sin_addr
                    inet_ntop(AF_INET, &addr, &buf, 64)
                    return SocketAddress(ip: IPAddress(literal: cString(buf))!, port: UInt16(bigEndian: p.pointee.sin_port))
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p -> SocketAddress? in
                    var addr = p.pointee.sin6_addr
                    inet_ntop(AF_INET6, &addr, &buf, 64)
                    return SocketAddress(ip: IPAddress(literal: cString(buf))!, port: UInt16(bigEndian: p.pointee.sin6_port))
                }
            }
        default:
            return nil
        }
    }
}

/// Deterministic pseudo-random payloads so a corrupted byte is always caught.
public func payload(_ size: Int, seed: UInt64) -> [UInt8] {
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<size).map { _ in
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
}

func cString(_ chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
