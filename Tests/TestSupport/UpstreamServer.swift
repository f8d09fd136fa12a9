import Foundation
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// A loopback UDP server for relay tests, standing in for an upstream: it records every
/// datagram (payload and source) and, unless `reply` is nil, answers each with
/// `reply(payload)`. Runs on its own thread until `stop()` (or deinit); binds port 0.
public final class UpstreamServer: @unchecked Sendable {
    // @unchecked: `received` and `stopped` are guarded by `condition`; the rest is immutable.
    public let address: SocketAddress
    private let fd: Int32
    private let condition = NSCondition()
    private var received: [(bytes: [UInt8], from: SocketAddress)] = []
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)

    /// - Parameter reply: what to send back for each datagram (nil: no answer to this one);
    ///   nil for a silent receiver.
    public convenience init(ipv6: Bool = false, reply: (@Sendable ([UInt8]) -> [UInt8]?)? = { $0 }) throws {
        try self.init(bind: ipv6 ? SocketAddress(ip: .v6(high: 0, low: 1), port: 0) : SocketAddress(ip: .v4(0x7F00_0001), port: 0), reply: reply)
    }

    /// A server bound to `bind` (port 0: a free one), e.g. an address of a network namespace
    /// the socket is made in.
    public init(bind: SocketAddress, reply: (@Sendable ([UInt8]) -> [UInt8]?)? = { $0 }) throws {
        let client = try UDPClient(bind: bind)
        // Take over the client's socket: dup so UDPClient's deinit does not close ours.
        fd = dup(client.fd)
        address = client.localAddress
        let fd = self.fd
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 70000)
            while true {
                condition.lock()
                let stop = stopped
                condition.unlock()
                if stop { break }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 50) > 0 else { continue }
                var storage = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = buffer.withUnsafeMutableBytes { buf in
                    withUnsafeMutablePointer(to: &storage) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            recvfrom(fd, buf.baseAddress, buf.count, Int32(MSG_DONTWAIT), $0, &len)
                        }
                    }
                }
                guard n >= 0, let from = TestAddress.from(storage) else { continue }
                let bytes = Array(buffer[0..<n])
                condition.lock()
                received.append((bytes, from))
                condition.broadcast()
                condition.unlock()
                if let reply, let answer = reply(bytes) {
                    _ = answer.withUnsafeBytes { buf in
                        withUnsafePointer(to: &storage) {
                            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                                sendto(fd, buf.baseAddress, buf.count, 0, $0, len)
                            }
                        }
                    }
                }
            }
            close(fd)
            finished.signal()
        }
    }

    deinit { stop() }

    /// Stops the thread and closes the socket (the port then refuses datagrams).
    public func stop() {
        condition.lock()
        let was = stopped
        stopped = true
        condition.unlock()
        if !was { finished.wait() }
    }

    /// Everything received so far.
    public var datagrams: [(bytes: [UInt8], from: SocketAddress)] {
        condition.lock()
        defer { condition.unlock() }
        return received
    }

    /// Waits until at least `count` datagrams arrived (or `timeout` seconds); returns the count.
    @discardableResult
    public func waitForCount(_ count: Int, timeout: Double = 10) -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while received.count < count {
            if !condition.wait(until: deadline) { break }
        }
        return received.count
    }

    /// Distinct source addresses seen (one per relay session).
    public var sources: Set<SocketAddress> { Set(datagrams.map(\.from)) }
}

/// A port on loopback that nobody listens on (bound, read, then closed): datagrams to it are
/// refused with ICMP port unreachable.
public func closedLoopbackPort() throws -> SocketAddress {
    let c = try UDPClient()
    return c.localAddress
}
