/// How many sockets one `[listener NAME]` may open, so a typo in a port range cannot ask for
/// tens of thousands of sockets. Each socket is one file descriptor, one worker (a queue and a
/// read source) and one receive batch of 64 × `max_datagram` bytes.
public enum ListenLimits {
    /// Ports in one `listen` range (`0.0.0.0:5000-6023` is the largest from 5000).
    public static let portsPerRange = 1024
    /// Addresses of one listener once its ranges are expanded.
    public static let addressesPerListener = 4096
    /// Sockets of one listener: addresses × `workers` (checked when `workers` is a number;
    /// `auto` is counted when the listener opens). 4096 is the usual hard open-file limit
    /// outside systemd, so one listener alone never needs more than that.
    public static let socketsPerListener = 4096
    /// Addresses of all listeners of a configuration (main file and includes), so that wide
    /// ranges in a file of at most 16 MiB cannot expand into hundreds of millions; with two
    /// descriptors per socket (the socket, its worker's epoll) this stays far below the shipped
    /// unit's `LimitNOFILE=`.
    public static let addressesPerConfiguration = 65536
}

extension Values {
    /// `listen`: addresses (`127.0.0.1:7007`, `[::1]:7007`) and port ranges
    /// (`0.0.0.0:5000-5099`, `[::]:5000-5099`), expanded in order into one address per port.
    static func listenAddresses(_ s: String) throws(ValueError) -> [SocketAddress] {
        var out: [SocketAddress] = []
        // Which item of the list brought each address, for "overlaps" messages.
        var origin: [SocketAddress: Substring] = [:]
        for item in try words(s) {
            let expanded = try listenItem(item)
            guard out.count + expanded.count <= ListenLimits.addressesPerListener else {
                throw ValueError(
                    "more than \(ListenLimits.addressesPerListener) addresses in one listener (\(out.count) before '\(item)', "
                        + "which adds \(expanded.count)); split the ports over several listeners")
            }
            for a in expanded {
                if let first = origin[a] {
                    // A range is the only item with a '-' (addresses never hold one).
                    guard item.contains("-") || first.contains("-") else { throw ValueError("address \(a) is listed twice") }
                    throw ValueError("'\(item)' overlaps '\(first)' at \(a); each address and port may be listed once")
                }
                origin[a] = item
                out.append(a)
            }
        }
        return out
    }

    /// One item of `listen`: an address, or a range `ADDRESS:LOW-HIGH` of at most
    /// `ListenLimits.portsPerRange` ports, none of them 0.
    static func listenItem(_ item: Substring) throws(ValueError) -> [SocketAddress] {
        let close = item.lastIndex(of: "]")
        let portStart = item.lastIndex(of: ":").map { item.index(after: $0) }
        guard let portStart, close.map({ $0 < portStart }) ?? true,
            let dash = item[portStart...].firstIndex(of: "-")
        else {
            return [try socketAddress(item)]
        }
        let lowText = item[portStart..<dash], highText = item[item.index(after: dash)...]
        let first: SocketAddress
        do {
            first = try SocketAddress(parsing: item[..<dash])
        } catch {
            throw ValueError("in port range '\(item)': \(error.message)")
        }
        try refuseMapped(first.ip, port: first.port)
        guard let high = UInt16(highText) else {
            throw ValueError("in port range '\(item)': the last port must be a number from 1 to 65535, got '\(highText)'")
        }
        let low = first.port
        if low == 0 || high == 0 {
            throw ValueError("port range '\(item)' includes port 0; a range names fixed ports (use a single ADDRESS:0 for an ephemeral port)")
        }
        guard low <= high else {
            throw ValueError("port range '\(item)' is reversed; write the lower port first (\(lowText)-\(highText) → \(highText)-\(lowText))")
        }
        let count = Int(high) - Int(low) + 1
        guard count <= ListenLimits.portsPerRange else {
            throw ValueError(
                "port range '\(item)' has \(count) ports; at most \(ListenLimits.portsPerRange) per range "
                    + "(list several ranges, up to \(ListenLimits.addressesPerListener) addresses per listener)")
        }
        return (low...high).map { SocketAddress(ip: first.ip, port: $0) }
    }
}
