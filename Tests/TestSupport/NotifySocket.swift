import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A fake systemd notification socket (`NOTIFY_SOCKET`): a Unix datagram socket in a temporary
/// directory that collects what `sd_notify` sends.
public final class NotifySocket {
    public let path: String
    public let fd: Int32

    public init() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        path = dir.appendingPathComponent("notify").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in path.utf8.enumerated() where i < buf.count - 1 { buf[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw POSIXError(.init(rawValue: e)!)
        }
    }

    deinit {
        close(fd)
        unlink(path)
        rmdir((path as NSString).deletingLastPathComponent)
    }

    /// Waits up to `timeout` seconds for one message; nil on timeout.
    public func receive(timeout: Double = 5) -> String? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    /// Receives messages until one satisfies `match` (returned) or `timeout` seconds pass (nil).
    /// Every message received on the way is appended to `seen`.
    public func wait(timeout: Double = 10, seen: inout [String], for match: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0, let m = receive(timeout: left) else { return nil }
            seen.append(m)
            if match(m) { return m }
        }
    }

    /// Waits up to `timeout` seconds for one message and the descriptors sent with it
    /// (SCM_RIGHTS, as `sd_pid_notify_with_fds` sends them); nil on timeout. The caller owns
    /// (and closes) the descriptors.
    public func receiveWithDescriptors(timeout: Double = 5) -> (message: String, fds: [Int32])? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let controlSize = 1024
        let control = UnsafeMutableRawPointer.allocate(byteCount: controlSize, alignment: 8)
        defer { control.deallocate() }
        return buffer.withUnsafeMutableBytes { bytes -> (message: String, fds: [Int32])? in
            var iov = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
            return withUnsafeMutablePointer(to: &iov) { iovp -> (message: String, fds: [Int32])? in
                var msg = msghdr()
                msg.msg_iov = iovp
                msg.msg_iovlen = 1
                msg.msg_control = control
                msg.msg_controllen = controlSize
                let n = recvmsg(fd, &msg, Int32(MSG_CMSG_CLOEXEC))
                guard n >= 0 else { return nil }
                var fds: [Int32] = []
                // Walk the control messages by hand (CMSG_* are macros Swift does not import).
                var offset = 0
                let headerSize = MemoryLayout<cmsghdr>.size
                while offset + headerSize <= Int(msg.msg_controllen) {
                    let header = control.load(fromByteOffset: offset, as: cmsghdr.self)
                    let length = Int(header.cmsg_len)
                    guard length >= headerSize else { break }
                    if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                        let count = (length - headerSize) / MemoryLayout<Int32>.size
                        for k in 0..<count {
                            fds.append(control.load(fromByteOffset: offset + headerSize + k * 4, as: Int32.self))
                        }
                    }
                    offset += (length + 7) & ~7
                }
                return (String(decoding: bytes[0..<n], as: UTF8.self), fds)
            }
        }
    }
}
