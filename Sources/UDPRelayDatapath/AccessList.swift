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

    public init(allow: [CIDR], deny: [CIDR]) {
        let all = deny.map { Rule(network: $0, allow: false) } + allow.map { Rule(network: $0, allow: true) }
        // Stable order: longer prefixes first; deny before allow at the same length.
        rules = all.enumerated().sorted { a, b in
            if a.element.network.prefixLength != b.element.network.prefixLength {
                return a.element.network.prefixLength > b.element.network.prefixLength
            }
            return a.offset < b.offset
        }.map(\.element)
        allowByDefault = allow.isEmpty
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
