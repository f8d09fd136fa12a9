import Foundation
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Sends an IPv4 UDP datagram with a chosen source address and port through a raw socket.
public enum RawUDP {
    public static func sendSpoofed(from: SocketAddress, to: SocketAddress, payload: [UInt8]) throws {
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(IPPROTO_UDP))
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        defer { close(fd) }
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IP), IP_HDRINCL, &on, 4)
        let total = 20 + 8 + payload.count
        var packet = [UInt8](repeating: 0, count: total)
        let src = from.ip.bytes, dst = to.ip.bytes
        packet[0] = 0x45
        packet[2] = UInt8(total >> 8)
        packet[3] = UInt8(total & 0xff)
        packet[8] = 64
        packet[9] = UInt8(IPPROTO_UDP)
        packet.replaceSubrange(12..<16, with: src)
        packet.replaceSubrange(16..<20, with: dst)
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(packet[i]) << 8 | UInt32(packet[i + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        let check = ~UInt16(sum)
        packet[10] = UInt8(check >> 8)
        packet[11] = UInt8(check & 0xff)
        packet[20] = UInt8(from.port >> 8)
        packet[21] = UInt8(from.port & 0xff)
        packet[22] = UInt8(to.port >> 8)
        packet[23] = UInt8(to.port & 0xff)
        let udpLength = 8 + payload.count
        packet[24] = UInt8(udpLength >> 8)
        packet[25] = UInt8(udpLength & 0xff)
        // UDP checksum 0: "no checksum", valid over IPv4.
        packet.replaceSubrange(28..<total, with: payload)
        var (storage, len) = TestAddress.storage(to)
        let n = packet.withUnsafeBytes { buf in
            withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buf.baseAddress, buf.count, 0, $0, len) }
            }
        }
        guard n == total else { throw POSIXError(.init(rawValue: errno)!) }
    }
}
