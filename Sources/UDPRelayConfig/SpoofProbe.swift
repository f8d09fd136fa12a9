#if canImport(Glibc)
import Glibc
#endif

/// The start-up self-test of `spoof = yes`: whether this process may open the raw sockets
/// (`SOCK_RAW`, `IPPROTO_RAW`) that send each copy with its client's address and port, tried
/// once for each family the collectors may have. Run wherever a configuration is loaded
/// (`--check-config`, start, reload), so a daemon without CAP_NET_RAW refuses the file instead
/// of sending copies that hide the clients behind the relay's own address.
public enum SpoofProbe {
    /// IPPROTO_RAW (netinet/in.h): the socket sends whole IP packets, header included.
    public static let rawProtocol: Int32 = 255
    /// IP_HDRINCL (SOL_IP) and IPV6_HDRINCL (SOL_IPV6, Linux 4.5 and later): the header is the
    /// caller's. IPPROTO_RAW implies both; the datapath sets them anyway.
    public static let ipv4HeaderIncluded: (level: Int32, name: Int32) = (0, 3)
    public static let ipv6HeaderIncluded: (level: Int32, name: Int32) = (41, 36)
    /// The message when the capability is missing, before what failed.
    public static let needsCapability =
        "spoof = yes needs CAP_NET_RAW; grant it (systemd: the drop-in systemd/spoof.conf) or set spoof = no"

    /// `missing(families:)` for the families of `collectors`: a literal address's own, both for
    /// a hostname (it may resolve to either).
    public static func missing(for collectors: [UpstreamEndpoint]) -> String? {
        var families: Set<Int32> = []
        for c in collectors {
            switch c.host {
            case .address(let ip): families.insert(ip.isIPv6 ? AF_INET6 : AF_INET)
            case .name: families.formUnion([AF_INET, AF_INET6])
            }
        }
        return missing(families: families.isEmpty ? [AF_INET] : families)
    }

    /// Why no copy of a `spoof = yes` listener could ever be sent, or nil: a copy is spoofed
    /// only to a collector of its client's family, and the listen addresses decide the clients'
    /// families (an IPv4 address: IPv4; `[::]`: both, IPv4 clients arriving mapped; another
    /// IPv6 address: IPv6). A hostname collector may have either family.
    public static func familyMismatch(listen: [SocketAddress], collectors: [UpstreamEndpoint]) -> String? {
        var clients: Set<Int32> = []
        for a in listen {
            switch a.ip {
            case .v4: clients.insert(AF_INET)
            case .v6(0, 0): clients.formUnion([AF_INET, AF_INET6])
            case let ip: clients.insert(ip.mappedIPv4 != nil ? AF_INET : AF_INET6)
            }
        }
        var reachable: Set<Int32> = []
        for c in collectors {
            switch c.host {
            case .address(let ip): reachable.insert(ip.isIPv6 && ip.mappedIPv4 == nil ? AF_INET6 : AF_INET)
            case .name: reachable.formUnion([AF_INET, AF_INET6])
            }
        }
        guard !clients.isEmpty, !collectors.isEmpty, clients.isDisjoint(with: reachable) else { return nil }
        let name = { (f: Int32) in f == AF_INET6 ? "IPv6" : "IPv4" }
        return "no collector has the family of this listener's clients (clients \(clients.sorted().map(name).joined(separator: ", ")), "
            + "collectors \(reachable.sorted().map(name).joined(separator: ", "))): every copy would be dropped; add a collector of the clients' family"
    }

    /// The header-included option of `family`.
    public static func headerIncluded(family: Int32) -> (level: Int32, name: Int32) {
        family == AF_INET6 ? ipv6HeaderIncluded : ipv4HeaderIncluded
    }

    /// nil when a raw socket of every family of `families` opens and takes its header-included
    /// option; otherwise what is missing, for the configuration error. A family this host lacks
    /// (no IPv6: EAFNOSUPPORT) is not a capability problem and is left to the datapath.
    public static func missing(families: Set<Int32>) -> String? {
        for family in families.sorted() {
            switch ScratchSocket.tryOption(family: family, type: Int32(SOCK_RAW.rawValue), proto: rawProtocol, option: headerIncluded(family: family)) {
            case nil, .open(EAFNOSUPPORT):
                continue
            case .open(let err):
                let what = "opening a raw \(family == AF_INET6 ? "IPv6" : "IPv4") socket: \(String(cString: strerror(err)))"
                if err == EPERM || err == EACCES { return "\(needsCapability) (\(what))" }
                return "\(what); spoof = yes cannot work here"
            case .option(let err):
                let option = family == AF_INET6 ? "IPV6_HDRINCL" : "IP_HDRINCL"
                return
                    "setting \(option) on a test socket failed: \(String(cString: strerror(err))) (IPv6 needs Linux 4.5 or later); spoof = yes cannot work here"
            }
        }
        return nil
    }
}
