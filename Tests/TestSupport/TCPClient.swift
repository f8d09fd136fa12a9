import Foundation
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client for HTTP tests: raw bytes in, raw bytes out, with deadlines.
public final class TCPClient {
    public let fd: Int32

    /// What reading until the peer closed produced.
    public struct Received {
        public var text: String
        /// The connection ended with a reset (ECONNRESET) rather than an orderly close.
        public var reset: Bool
        /// The deadline passed before the peer closed.
        public var timedOut: Bool
    }

    /// Connects to `address`, optionally from a chosen local address (e.g. 127.0.0.2).
    public init(to address: SocketAddress, from local: IPAddress? = nil) throws {
        fd = socket(address.ip.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        if let local {
            var (storage, len) = TestAddress.storage(SocketAddress(ip: local, port: 0))
            let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
            guard rc == 0 else {
                let e = errno
                close(fd)
                throw POSIXError(.init(rawValue: e)!)
            }
        }
        var (storage, len) = TestAddress.storage(address)
        let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw POSIXError(.init(rawValue: e)!)
        }
    }

    deinit { close(fd) }

    /// Sends all of `text`; returns false if the peer closed or reset meanwhile.
    @discardableResult
    public func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// Reads until the peer closes, or `timeout` seconds pass.
    public func readToEnd(timeout: Double = 10) -> Received {
        var data = [UInt8]()
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return Received(text: String(decoding: data, as: UTF8.self), reset: false, timedOut: true) }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000) + 1) <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                data += buffer[0..<n]
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return Received(text: String(decoding: data, as: UTF8.self), reset: n < 0 && errno == ECONNRESET, timedOut: false)
        }
    }

    /// Reads one response (head and Content-Length body) without waiting for the connection to
    /// close; nil on timeout or close before a full response.
    public func readResponse(timeout: Double = 10, head: Bool = false) -> String? {
        var data = [UInt8]()
        let deadline = Date().addingTimeInterval(timeout)
        var byte: UInt8 = 0
        while true {
            let text = String(decoding: data, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let headText = text[..<end.lowerBound].lowercased()
                let length =
                    head
                    ? 0
                    : headText.components(separatedBy: "\r\n")
                        .first { $0.hasPrefix("content-length:") }
                        .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                if text.utf8.distance(from: end.upperBound, to: text.endIndex) >= length { return text }
            }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000) + 1) <= 0 { continue }
            let n = recv(fd, &byte, 1, 0)
            if n == 1 {
                data.append(byte)
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }
}
