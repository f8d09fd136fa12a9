#if canImport(Glibc)
import Glibc
#endif

/// The start-up self-test of `transparent = yes`: whether this process may bind sockets to
/// addresses that are not its own (IP_TRANSPARENT / IPV6_TRANSPARENT), tried on a scratch
/// socket of each family the listener serves. Run wherever a configuration is loaded
/// (`--check-config`, start, reload), so a daemon without the capability refuses the file
/// instead of relaying with its own address and hiding the clients.
public enum TransparentProbe {
    /// Socket options (linux/in.h, linux/in6.h): level, name.
    public static let ipv4Transparent: (level: Int32, name: Int32) = (0, 19)  // SOL_IP, IP_TRANSPARENT
    public static let ipv6Transparent: (level: Int32, name: Int32) = (41, 75)  // SOL_IPV6, IPV6_TRANSPARENT
    public static let ipv4FreeBind: (level: Int32, name: Int32) = (0, 15)  // SOL_IP, IP_FREEBIND
    /// The message when the capability is missing, after the failed option's name.
    public static let needsCapability =
        "transparent = yes needs CAP_NET_ADMIN (the kernel also accepts CAP_NET_RAW); grant it (systemd: the drop-in systemd/transparent.conf) or set transparent = no"

    /// The transparent option of `family`.
    public static func option(family: Int32) -> (level: Int32, name: Int32) {
        family == AF_INET6 ? ipv6Transparent : ipv4Transparent
    }

    /// `missing(families:)` for the families of `addresses`.
    public static func missing(for addresses: [SocketAddress]) -> String? {
        missing(families: Set(addresses.map { $0.ip.isIPv6 ? AF_INET6 : AF_INET }))
    }

    /// nil when every family of `families` accepts the transparent option; otherwise what is
    /// missing, for the configuration error. A family this host lacks (no IPv6) is not a
    /// capability problem and is left to the listener's bind.
    public static func missing(families: Set<Int32>) -> String? {
        for family in families.sorted() {
            // A family the host lacks (the socket does not open) is left to the listener's bind.
            guard case .option(let err) = ScratchSocket.tryOption(family: family, type: Int32(SOCK_DGRAM.rawValue), proto: 0, option: option(family: family))
            else { continue }
            let option = family == AF_INET6 ? "IPV6_TRANSPARENT" : "IP_TRANSPARENT"
            if err == EPERM {
                return "\(needsCapability) (setting \(option) on a test socket: \(String(cString: strerror(err))))"
            }
            return "setting \(option) on a test socket failed: \(String(cString: strerror(err))); transparent = yes cannot work here"
        }
        return nil
    }
}
