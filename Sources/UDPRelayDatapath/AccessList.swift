import UDPRelayConfig

/// `allow`/`deny` CIDR rules of a listener. The longest matching prefix decides; on equal
/// length deny wins; with no match, a source is allowed only when there are no allow rules.
/// Evaluation walks a small pre-sorted array and allocates nothing.
public struct AccessList: Sendable {
    struct Rule: Sendable {
        let network: CIDR
        let allow: Bool
    }

    let rules: [Rule]
    let allowByDefault: Bool

    /// Rules written for IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) are turned into
    /// their IPv4 form, as sources are (`IngressFilter`); an IPv6 rule that covers all of
    /// `::ffff:0:0/96` (`::/0`) also covers every IPv4 source.
    public init(allow: [CIDR], deny: [CIDR]) {
        let all =
            deny.flatMap { AccessList.unmapped($0).map { Rule(network: $0, allow: false) } }
            + allow.flatMap { AccessList.unmapped($0).map { Rule(network: $0, allow: true) } }
        // Stable order: longer prefixes first; deny before allow at the same length.
        rules = all.enumerated().sorted { a, b in
            if a.element.network.prefixLength != b.element.network.prefixLength {
                return a.element.network.prefixLength > b.element.network.prefixLength
            }
            return a.offset < b.offset
        }.map(\.element)
        allowByDefault = allow.isEmpty
    }

    /// A rule as it applies to unmapped sources: itself, plus its IPv4 form when it covers
    /// IPv4-mapped addresses.
    static func unmapped(_ c: CIDR) -> [CIDR] {
        guard c.network.isIPv6 else { return [c] }
        let mappedBase = IPAddress.v6(high: 0, low: 0xFFFF_0000_0000)
        if c.prefixLength >= 96, c.network.unmapped != c.network {
            return [CIDR(network: c.network.unmapped, prefixLength: c.prefixLength - 96)]
        }
        if c.contains(mappedBase) { return [c, CIDR(network: .v4(0), prefixLength: 0)] }
        return [c]
    }

    /// True when neither list has rules: everyone is allowed and checking can be skipped.
    public var isOpen: Bool { rules.isEmpty }

    @inline(__always)
    public func permits(_ ip: IPAddress) -> Bool {
        for rule in rules where rule.network.contains(ip) {
            return rule.allow
        }
        return allowByDefault
    }
}
