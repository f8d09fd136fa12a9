/// One row of a section's key table (the nginx way): a key name, the listener modes it applies
/// to (as an nginx directive carries its context) and how its value is parsed into the
/// section's draft. Adding a key means adding a row, a draft field and a default.
struct KeySpec<Draft>: Sendable {
    let name: String
    /// The listener modes in which the key may be set; nil: every mode (and every key of the
    /// sections that have no mode).
    let modes: [ListenerMode]?
    /// Said after the modes when the key is set in another mode ("with several upstreams").
    let modeNote: String?
    let apply: @Sendable (inout Draft, String) throws -> Void

    init(
        _ name: String, modes: [ListenerMode]? = nil, note: String? = nil,
        _ apply: @escaping @Sendable (inout Draft, String) throws -> Void
    ) {
        self.name = name
        self.modes = modes
        self.modeNote = note
        self.apply = apply
    }

    /// "mode = forward|balance" (and the note): where the key is valid, for messages.
    var modesText: String {
        let list = "mode = " + (modes ?? ListenerMode.allCases).map(\.rawValue).joined(separator: "|")
        return modeNote.map { "\(list) (\($0))" } ?? list
    }
}

/// Section contents as written, before defaults. `nil` means "not set in the file".
struct DaemonDraft {
    var logLevel: LogLevel?
}

struct StatusDraft {
    var listen: SocketAddress??
    var allow: [CIDR]?
}

struct ListenerDraft {
    var name: String
    /// Where the section is: its file (the main one or an included one) and header line.
    var file: String
    var line: Int
    var listen: [SocketAddress]?
    var mode: ListenerMode?
    var maxDatagram: Int?
    var receiveBuffer: Int?
    var sendBuffer: Int?
    var upstreams: [UpstreamEndpoint]?
    var balance: BalanceAlgorithm?
    var hashKey: HashKey?
    var sampleEvery: Int?
    var resolveInterval: Duration?
    var resolveFamily: ResolveFamily?
    var sessionTimeout: Duration?
    var maxSessions: Int?
    var sessionMaxReplies: Int?
    var sessionLog: Bool?
    var sessionLogRate: Int?
    var maxFails: Int?
    var failTimeout: Duration?
    var healthProbe: [UInt8]?
    var healthExpect: [UInt8]?
    var healthInterval: Duration?
    var healthFails: Int?
    var busyPoll: Duration?
    var workers: WorkerCount?
    var segmentation: Bool?
    var proxyProtocol: ProxyProtocolVersion?
    var transparent: Bool?
    var spoof: Bool?
    /// Line of every key set in the section, for cross-field messages.
    var keyLines: [String: Int] = [:]
    var protection = ProtectionDraft()
}

struct ProtectionDraft {
    var allow: [CIDR]?
    var deny: [CIDR]?
    var denySourcePorts: PortSet?
    var loopGuard: Bool?
    var rateLimit: Rate?
    var rateBurst: Int?
    var rateLimitTotal: Rate?
    var rateLimitSources: Int?
    var acceptProxyProtocol: ProxyProtocolVersion?
    var proxyProtocolFrom: [CIDR]?

    /// Defaults applied, as everywhere, in one place (ProtectionConfiguration.init).
    var configuration: ProtectionConfiguration {
        ProtectionConfiguration(
            allow: allow ?? [], deny: deny ?? [],
            denySourcePorts: denySourcePorts,
            loopGuard: loopGuard ?? true, rateLimit: rateLimit, rateBurst: rateBurst,
            rateLimitTotal: rateLimitTotal,
            rateLimitSources: rateLimitSources ?? Defaults.rateLimitSources,
            acceptProxyProtocol: acceptProxyProtocol ?? .off, proxyProtocolFrom: proxyProtocolFrom ?? [])
    }
}

/// The key tables of each section kind.
enum Schema {
    /// Modes that send to upstreams.
    static let relayModes = ListenerMode.allCases.filter(\.isRelay)
    /// Modes that keep a session per client.
    static let sessionModes = ListenerMode.allCases.filter(\.hasSessions)
    /// Modes whose worker reads its socket in a loop (`busy_poll`): all but mirror.
    static let datagramModes = ListenerMode.allCases.filter { $0 != .mirror }

    static let daemon: [KeySpec<DaemonDraft>] = [
        KeySpec("log_level") { d, v in d.logLevel = try Values.oneOf(v, LogLevel.self) },
        // Read by `Includes` before the sections are applied (it may be given several times);
        // listed here for the reference and for "did you mean".
        KeySpec("include") { _, _ in },
    ]

    static let status: [KeySpec<StatusDraft>] = [
        KeySpec("listen") { d, v in
            if v.lowercased() == "off" {
                d.listen = .some(nil)
                return
            }
            let addresses = try Values.socketAddresses(v)
            guard addresses.count == 1 else { throw ValueError("expected one ADDRESS:PORT or 'off', got \(addresses.count) addresses") }
            d.listen = .some(addresses[0])
        },
        KeySpec("allow") { d, v in d.allow = try Values.cidrs(v) },
    ]

    static let listener: [KeySpec<ListenerDraft>] = [
        KeySpec("listen") { d, v in d.listen = try Values.listenAddresses(v) },
        KeySpec("mode") { d, v in d.mode = try Values.oneOf(v, ListenerMode.self) },
        KeySpec("max_datagram") { d, v in d.maxDatagram = try Values.size(v, in: 1...65535) },
        KeySpec("rcvbuf") { d, v in d.receiveBuffer = try Values.size(v, in: 4096...(1 << 30)) },
        KeySpec("sndbuf") { d, v in d.sendBuffer = try Values.size(v, in: 4096...(1 << 30)) },
        KeySpec("busy_poll", modes: Schema.datagramModes) { d, v in d.busyPoll = try Values.duration(v, max: .milliseconds(10), allowZero: true) },
        KeySpec("workers") { d, v in
            if v.lowercased() == "auto" {
                d.workers = .auto
                return
            }
            let r = WorkerCount.range
            guard let n = Int(v), r.contains(n) else {
                throw ValueError("expected a whole number from \(r.lowerBound) to \(r.upperBound) or 'auto', got '\(v)'")
            }
            d.workers = .count(n)
        },
        KeySpec("udp_gso") { d, v in d.segmentation = try Values.bool(v) },
        KeySpec("upstream", modes: Schema.relayModes) { d, v in d.upstreams = try Values.upstreams(v) },
        KeySpec("balance", modes: [.balance], note: "with several upstreams") { d, v in d.balance = try Values.oneOf(v, BalanceAlgorithm.self) },
        KeySpec("hash_key", modes: [.balance], note: "with balance = hash") { d, v in d.hashKey = try Values.oneOf(v, HashKey.self) },
        KeySpec("sample", modes: [.mirror]) { d, v in d.sampleEvery = try Values.sample(v) },
        KeySpec("resolve_interval", modes: Schema.relayModes) { d, v in d.resolveInterval = try Values.duration(v, min: .seconds(1)) },
        KeySpec("resolve", modes: Schema.relayModes) { d, v in d.resolveFamily = try Values.oneOf(v, ResolveFamily.self) },
        KeySpec("session_timeout", modes: Schema.sessionModes) { d, v in d.sessionTimeout = try Values.duration(v, min: .milliseconds(10)) },
        KeySpec("max_sessions", modes: Schema.sessionModes) { d, v in d.maxSessions = try Values.integer(v, in: 1...(1 << 24)) },
        KeySpec("session_max_replies", modes: Schema.sessionModes) { d, v in d.sessionMaxReplies = try Values.integer(v, in: 1...Int(Int32.max)) },
        KeySpec("session_log", modes: Schema.sessionModes) { d, v in d.sessionLog = try Values.bool(v) },
        KeySpec("session_log_rate", modes: Schema.sessionModes) { d, v in d.sessionLogRate = try Values.integer(v, in: 1...100_000) },
        KeySpec("max_fails", modes: Schema.relayModes) { d, v in d.maxFails = try Values.integer(v, in: 0...1_000_000) },
        KeySpec("fail_timeout", modes: Schema.relayModes) { d, v in d.failTimeout = try Values.duration(v, min: .milliseconds(10)) },
        KeySpec("health_probe", modes: Schema.relayModes) { d, v in d.healthProbe = try Values.payload(v) },
        KeySpec("health_expect", modes: Schema.relayModes) { d, v in d.healthExpect = try Values.payload(v) },
        KeySpec("health_interval", modes: Schema.relayModes) { d, v in d.healthInterval = try Values.duration(v, min: .milliseconds(10)) },
        KeySpec("health_fails", modes: Schema.relayModes) { d, v in d.healthFails = try Values.integer(v, in: 1...1000) },
        KeySpec("proxy_protocol", modes: Schema.relayModes) { d, v in d.proxyProtocol = try Values.oneOf(v, ProxyProtocolVersion.self) },
        KeySpec("transparent", modes: Schema.sessionModes) { d, v in d.transparent = try Values.bool(v) },
        KeySpec("spoof", modes: [.mirror]) { d, v in d.spoof = try Values.bool(v) },
        KeySpec("allow") { d, v in d.protection.allow = try Values.cidrs(v) },
        KeySpec("deny") { d, v in d.protection.deny = try Values.cidrs(v) },
        KeySpec("deny_source_ports") { d, v in d.protection.denySourcePorts = try Values.portSet(v) },
        KeySpec("loop_guard") { d, v in d.protection.loopGuard = try Values.bool(v) },
        KeySpec("rate_limit") { d, v in d.protection.rateLimit = try Values.anyCaseRate(v) },
        KeySpec("rate_burst") { d, v in d.protection.rateBurst = try Values.integer(v, in: 1...10_000_000) },
        KeySpec("rate_limit_total") { d, v in d.protection.rateLimitTotal = try Values.anyCaseRate(v) },
        KeySpec("rate_limit_sources") { d, v in d.protection.rateLimitSources = try Values.integer(v, in: 16...16_777_216) },
        KeySpec("accept_proxy_protocol") { d, v in
            d.protection.acceptProxyProtocol = v.lowercased() == "no" ? .off : try Values.oneOf(v, ProxyProtocolVersion.self)
        },
        KeySpec("proxy_protocol_from") { d, v in d.protection.proxyProtocolFrom = try Values.cidrs(v) },
    ]

    static let sectionKinds = ["daemon", "status", "listener"]
}

/// Turns lexed sections into a `Configuration`, collecting every error.
struct ConfigParser {
    let file: String
    var errors: ErrorCollector
    /// The file the section or listener being checked comes from: errors name it.
    var currentFile: String
    /// The files `include =` added, in the order read.
    var includedFiles: [String] = []

    init(file: String) {
        self.file = file
        currentFile = file
        errors = ErrorCollector(file: file)
    }

    mutating func error(_ line: Int, _ section: String?, _ key: String?, _ message: String) {
        errors.add(file: currentFile, line: line, section: section, key: key, message: message)
    }

    /// `line N` in the file being checked, `FILE:N` in another one.
    func place(file other: String, line: Int) -> String {
        other == currentFile ? "line \(line)" : "\(other):\(line)"
    }

    /// Applies every entry of `section` to `draft` through `table`, reporting unknown and repeated keys.
    mutating func apply<Draft>(_ section: INISection, to draft: inout Draft, table: [KeySpec<Draft>]) -> [String: Int] {
        var seen: [String: Int] = [:]
        for entry in section.entries {
            guard let spec = table.first(where: { $0.name == entry.key }) else {
                var message = "unknown key"
                if let guess = Suggest.closest(to: entry.key, in: table.map(\.name)) {
                    message += " (did you mean '\(guess)'?)"
                } else {
                    message += "; keys of [\(section.kind)] are: \(table.map(\.name).joined(separator: ", "))"
                }
                error(entry.line, section.header, entry.key, message)
                continue
            }
            if let first = seen[entry.key] {
                error(entry.line, section.header, entry.key, "repeated key (first set at line \(first)); give each key once, lists are comma-separated")
                continue
            }
            seen[entry.key] = entry.line
            if entry.value.isEmpty {
                error(entry.line, section.header, entry.key, "missing value")
                continue
            }
            do {
                try spec.apply(&draft, entry.value)
            } catch let e as ValueError {
                error(entry.line, section.header, entry.key, e.message)
            } catch {
                self.error(entry.line, section.header, entry.key, "\(error)")
            }
        }
        return seen
    }

    mutating func build(_ sections: [INISection]) -> Configuration? {
        var daemon = DaemonDraft()
        var status = StatusDraft()
        var listeners: [ListenerDraft] = []
        var singletonLines: [String: Int] = [:]
        var listenerLines: [String: (file: String, line: Int)] = [:]
        // Listen addresses so far, ranges expanded: a short file of wide ranges stays bounded.
        var listenAddresses = 0

        for section in sections where section.isValid {
            currentFile = section.file
            switch section.kind {
            case "daemon" where section.file != file, "status" where section.file != file:
                error(
                    section.line, section.header, nil,
                    "an included file holds only [listener NAME] sections; [\(section.kind)] belongs "
                        + "in the main file (\(file)), so includes do not nest")
            case "daemon", "status":
                if section.name != nil {
                    error(section.line, section.header, nil, "[\(section.kind)] takes no name")
                    continue
                }
                if let first = singletonLines[section.kind] {
                    error(section.line, section.header, nil, "repeated section (first at line \(first))")
                    continue
                }
                singletonLines[section.kind] = section.line
                if section.kind == "daemon" {
                    _ = apply(section, to: &daemon, table: Schema.daemon)
                } else {
                    _ = apply(section, to: &status, table: Schema.status)
                }
            case "listener":
                guard let name = section.name else {
                    error(section.line, section.header, nil, "a listener needs a name: [listener NAME]")
                    continue
                }
                guard Self.isValidName(name) else {
                    error(section.line, section.header, nil, "listener name may contain only letters, digits, '-' and '_' (at most 64), got '\(name)'")
                    continue
                }
                if let first = listenerLines[name] {
                    error(section.line, section.header, nil, "repeated listener name '\(name)' (first at \(place(file: first.file, line: first.line)))")
                    continue
                }
                listenerLines[name] = (section.file, section.line)
                var draft = ListenerDraft(name: name, file: section.file, line: section.line)
                let seen = apply(section, to: &draft, table: Schema.listener)
                draft.keyLines = seen
                if let listen = draft.listen {
                    if listenAddresses + listen.count > ListenLimits.addressesPerConfiguration {
                        error(
                            seen["listen"] ?? section.line, "listener \(name)", "listen",
                            "more than \(ListenLimits.addressesPerConfiguration) listen addresses in the configuration (its files together: "
                                + "\(listenAddresses) before this listener, which adds \(listen.count))")
                        draft.listen = nil
                    } else {
                        listenAddresses += listen.count
                    }
                }
                listeners.append(draft)
            default:
                var message = "unknown section"
                if let guess = Suggest.closest(to: section.kind, in: Schema.sectionKinds) {
                    message += " (did you mean '[\(guess)\(section.name.map { " " + $0 } ?? "")]'?)"
                } else {
                    message += "; sections are [daemon], [status] and [listener NAME]"
                }
                error(section.line, section.header, nil, message)
            }
        }

        // An empty or truncated file must not be taken for "serve nothing": a reload would
        // close every listener and a start would serve nothing while looking healthy.
        currentFile = file
        if !sections.contains(where: { $0.kind == "listener" }) {
            error(
                0, nil, nil,
                "no listener: a configuration needs at least one [listener NAME] section "
                    + "with listen = ADDRESS:PORT (an empty or truncated file is refused)")
        }
        return finalize(daemon: daemon, status: status, listeners: listeners)
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy {
                ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "-" || $0 == "_"
            }
    }

    /// The one place defaults are applied and cross-field checks run.
    mutating func finalize(daemon: DaemonDraft, status: StatusDraft, listeners drafts: [ListenerDraft]) -> Configuration? {
        let daemonConfig = DaemonConfiguration(logLevel: daemon.logLevel ?? Defaults.logLevel)

        let statusListen: SocketAddress? = status.listen ?? Defaults.statusListen
        // `[::ffff:0.0.0.0]` binds every IPv4 address: a wildcard too.
        let statusWildcard = statusListen.map { $0.ip.isWildcard || $0.ip == .v6(high: 0, low: 0xFFFF_0000_0000) } ?? true
        let statusAllow = status.allow ?? (statusWildcard ? Defaults.loopbackNetworks : Defaults.allNetworks)
        let statusConfig = StatusConfiguration(listen: statusListen, allow: statusAllow)

        var listeners: [ListenerConfiguration] = []
        var upstreamLines: [(file: String, line: Int)] = []
        var owners = AddressOwners()
        for d in drafts {
            currentFile = d.file
            guard let listen = d.listen else {
                // An invalid value was already reported; only a missing key is new.
                if d.keyLines["listen"] != nil { continue }
                error(d.line, "listener \(d.name)", "listen", "missing required key (e.g. listen = 0.0.0.0:7007, [::]:7007)")
                continue
            }
            // One error per listener however many addresses of a port range overlap.
            var firstOverlap: String?
            var overlaps = 0
            for address in listen where address.port != 0 {
                if let owner = owners.conflict(with: address) {
                    if firstOverlap == nil { firstOverlap = "\(address) overlaps \(owner)" }
                    overlaps += 1
                } else {
                    owners.add(address, owner: "listener '\(d.name)'")
                }
            }
            if let firstOverlap {
                let more = overlaps > 1 ? " (and \(overlaps - 1) more of its addresses overlap)" : ""
                error(
                    d.keyLines["listen"] ?? d.line, "listener \(d.name)", "listen", "\(firstOverlap)\(more); each address and port may belong to one listener")
            }
            if case .count(let perAddress) = d.workers ?? Defaults.workers, listen.count * perAddress > ListenLimits.socketsPerListener {
                error(
                    d.keyLines["workers"] ?? d.line, "listener \(d.name)", "workers",
                    "\(listen.count) listen addresses × workers = \(perAddress) is \(listen.count * perAddress) sockets; "
                        + "at most \(ListenLimits.socketsPerListener) per listener (lower workers or split the addresses over several listeners)")
            }
            let mode = d.mode ?? Defaults.mode
            checkRelayKeys(d, mode: mode)
            upstreamLines.append((d.file, d.keyLines["upstream"] ?? d.line))
            listeners.append(
                ListenerConfiguration(
                    name: d.name,
                    line: d.line,
                    listen: listen,
                    mode: mode,
                    maxDatagram: d.maxDatagram ?? Defaults.maxDatagram,
                    receiveBuffer: d.receiveBuffer ?? Defaults.socketBuffer,
                    sendBuffer: d.sendBuffer ?? Defaults.socketBuffer,
                    upstreams: d.upstreams ?? [],
                    balance: d.balance ?? Defaults.balance,
                    hashKey: d.hashKey ?? Defaults.hashKey,
                    sampleEvery: d.sampleEvery ?? 1,
                    resolveInterval: d.resolveInterval ?? Defaults.resolveInterval,
                    resolveFamily: d.resolveFamily ?? Defaults.resolveFamily,
                    sessions: SessionSettings(
                        timeout: d.sessionTimeout ?? Defaults.sessionTimeout,
                        maxSessions: d.maxSessions ?? Defaults.maxSessions,
                        maxReplies: d.sessionMaxReplies, log: d.sessionLog ?? false,
                        logRate: d.sessionLogRate ?? Defaults.sessionLogRate),
                    health: HealthSettings(
                        maxFails: d.maxFails ?? Defaults.maxFails,
                        failTimeout: d.failTimeout ?? Defaults.failTimeout,
                        probe: d.healthProbe, expect: d.healthExpect ?? [],
                        interval: d.healthInterval ?? Defaults.healthInterval,
                        probeFails: d.healthFails ?? Defaults.healthFails),
                    protection: d.protection.configuration,
                    busyPoll: d.busyPoll ?? Defaults.busyPoll,
                    workers: d.workers ?? Defaults.workers,
                    segmentation: d.segmentation ?? Defaults.segmentation,
                    proxyProtocol: d.proxyProtocol ?? Defaults.proxyProtocol,
                    transparent: d.transparent ?? Defaults.transparent,
                    spoof: d.spoof ?? Defaults.spoof
                ))
            if d.transparent == true, let missing = TransparentProbe.missing(for: listen) {
                error(d.keyLines["transparent"] ?? d.line, "listener \(d.name)", "transparent", missing)
            }
            if d.spoof == true {
                let line = d.keyLines["spoof"] ?? d.line
                if d.proxyProtocol == .v2 {
                    error(line, "listener \(d.name)", "spoof", "spoof = yes and proxy_protocol = v2 exclude each other (the collectors already see the client)")
                } else if let mismatch = SpoofProbe.familyMismatch(listen: listen, collectors: d.upstreams ?? []) {
                    error(line, "listener \(d.name)", "spoof", mismatch)
                } else if let missing = SpoofProbe.missing(for: d.upstreams ?? []) {
                    error(line, "listener \(d.name)", "spoof", missing)
                }
            }
            // An invalid value of either key was already reported: no second error for it.
            let fromMissing = d.protection.proxyProtocolFrom?.isEmpty ?? (d.keyLines["proxy_protocol_from"] == nil)
            let acceptMissing = d.protection.acceptProxyProtocol.map { $0 != .v2 } ?? (d.keyLines["accept_proxy_protocol"] == nil)
            if d.protection.acceptProxyProtocol == .v2, fromMissing {
                error(
                    d.keyLines["accept_proxy_protocol"] ?? d.line, "listener \(d.name)", "accept_proxy_protocol",
                    "accept_proxy_protocol = v2 needs proxy_protocol_from (the CIDRs of the proxies, e.g. proxy_protocol_from = 127.0.0.0/8)")
            } else if d.protection.proxyProtocolFrom != nil, acceptMissing {
                error(
                    d.keyLines["proxy_protocol_from"] ?? d.line, "listener \(d.name)", "proxy_protocol_from",
                    "proxy_protocol_from needs accept_proxy_protocol = v2")
            }
            if d.protection.rateBurst != nil, d.protection.rateLimit == nil {
                error(d.keyLines["rate_burst"] ?? d.line, "listener \(d.name)", "rate_burst", "rate_burst needs rate_limit (e.g. rate_limit = 1000/s)")
            }
        }
        checkRelayLoops(listeners, upstreamLines: upstreamLines)
        guard errors.isEmpty else { return nil }
        return Configuration(file: file, daemon: daemonConfig, status: statusConfig, listeners: listeners, includedFiles: includedFiles)
    }

    /// Relays that would send datagrams back to themselves, directly or around a cycle of this
    /// file's relay listeners: an upstream that is one of our own listen addresses, in any
    /// spelling a check can see without asking DNS or the interfaces (the runtime loop guard
    /// covers the rest). A relay to one of our `echo` listeners is no loop (the echo answers
    /// the relay's session socket, which is not a listener) and stays allowed.
    mutating func checkRelayLoops(_ listeners: [ListenerConfiguration], upstreamLines: [(file: String, line: Int)]) {
        let graph = RelayGraph(listeners)
        for (from, targets) in graph.edges.enumerated() {
            var reported: Set<UpstreamEndpoint> = []
            for edge in targets where edge.to == from && reported.insert(edge.upstream).inserted {
                let l = listeners[from]
                currentFile = upstreamLines[from].file
                error(
                    upstreamLines[from].line, "listener \(l.name)", "upstream",
                    "\(edge.upstream) is this listener's own address \(edge.address); it would relay to itself")
            }
        }
        for component in graph.loops() {
            let cycle = graph.shortestCycle(from: component.min()!, within: Set(component))
            guard cycle.count > 1 else { continue }
            let first = listeners[cycle[0]], next = listeners[cycle[1]]
            let hop = graph.edges[cycle[0]].first { $0.to == cycle[1] }!
            let path = (cycle + [cycle[0]]).map { "'\(listeners[$0].name)'" }.joined(separator: " -> ")
            currentFile = upstreamLines[cycle[0]].file
            error(
                upstreamLines[cycle[0]].line, "listener \(first.name)", "upstream",
                "relay loop \(path): \(hop.upstream) is listener '\(next.name)''s address \(hop.address), and each relays "
                    + "to the next, so datagrams would circle between them; point one upstream elsewhere")
        }
    }

    /// Upstream options: only `mode = balance` chooses among upstreams, `weight` only matters to
    /// the algorithms that spread, and at least one upstream must take new sessions.
    mutating func checkUpstreamOptions(
        _ upstreams: [UpstreamEndpoint], mode: ListenerMode, balance: BalanceAlgorithm,
        line: Int, section: String
    ) {
        guard let with = upstreams.first(where: { !$0.optionsText.isEmpty }) else { return }
        guard mode == .balance else {
            error(
                line, section, "upstream", "upstream options (\(with) \(with.optionsText)) are only valid with mode = balance, not with mode = \(mode.rawValue)"
            )
            return
        }
        if balance == .first, let w = upstreams.first(where: { $0.weight != 1 }) {
            error(
                line, section, "upstream",
                "weight=\(w.weight) of \(w) has no effect with balance = first (it takes the first upstream that is up); "
                    + "use round-robin, random or hash to spread by weight")
        }
        if upstreams.allSatisfy(\.drain) {
            error(line, section, "upstream", "every upstream is draining, so no new session could be placed; leave at least one without 'drain'")
        }
    }

    /// Cross-field checks of the relay keys: which keys each mode takes and how many upstreams.
    mutating func checkRelayKeys(_ d: ListenerDraft, mode: ListenerMode) {
        let section = "listener \(d.name)"
        let modeText = "mode = \(mode.rawValue)"
        func line(_ key: String) -> Int { d.keyLines[key] ?? d.line }
        if mode.isRelay {
            // An upstream key with an invalid value was already reported.
            if d.upstreams == nil && d.keyLines["upstream"] == nil {
                error(d.line, section, "upstream", "missing required key for \(modeText) (e.g. upstream = 192.0.2.10:53)")
            }
        }
        for spec in Schema.listener {
            guard let modes = spec.modes, !modes.contains(mode), let keyLine = d.keyLines[spec.name] else { continue }
            error(keyLine, section, spec.name, "only valid with \(spec.modesText), not with \(modeText)")
        }
        if let upstreams = d.upstreams {
            if mode == .forward && upstreams.count > 1 {
                error(
                    line("upstream"), section, "upstream",
                    "mode = forward takes one upstream, got \(upstreams.count); use mode = balance to spread over several")
            }
            // One hostname is allowed: each of its addresses is an upstream.
            if mode == .balance && upstreams.count < 2 && upstreams.allSatisfy({ $0.literal != nil }) {
                error(line("upstream"), section, "upstream", "mode = balance needs at least two upstreams, got \(upstreams.count); use mode = forward for one")
            }
            checkUpstreamOptions(upstreams, mode: mode, balance: d.balance ?? Defaults.balance, line: line("upstream"), section: section)
        }
        if mode == .balance, let key = d.hashKey, (d.balance ?? Defaults.balance) != .hash {
            let balance = (d.balance ?? Defaults.balance).rawValue
            error(
                line("hash_key"), section, "hash_key",
                "hash_key = \(key.rawValue) has no effect with balance = \(balance); it sets what balance = hash hashes")
        }
        if d.healthProbe == nil && d.keyLines["health_probe"] == nil {
            for key in ["health_expect", "health_interval", "health_fails"] where d.keyLines[key] != nil && mode.isRelay {
                error(line(key), section, key, "only valid together with health_probe")
            }
        }
    }

}

/// Which listener owns each bound address, answering "does this one overlap?" in constant time
/// however many addresses a file lists.
struct AddressOwners {
    struct PortKey: Hashable {
        var port: UInt16
        var isIPv6: Bool
    }

    private var exact: [SocketAddress: String] = [:]
    /// Per port and family: the wildcard's owner, if any, and any one specific address.
    private var wildcard: [PortKey: String] = [:]
    private var specific: [PortKey: SocketAddress] = [:]

    /// A wildcard and a specific address of the same family and port cannot both be bound.
    func conflict(with address: SocketAddress) -> String? {
        if let owner = exact[address] { return owner }
        let key = PortKey(port: address.port, isIPv6: address.ip.isIPv6)
        if let owner = wildcard[key] {
            return "\(SocketAddress(ip: address.ip.isIPv6 ? .v6(high: 0, low: 0) : .v4(0), port: address.port)) of \(owner)"
        }
        if address.ip.isWildcard, let other = specific[key], let owner = exact[other] {
            return "\(other) of \(owner)"
        }
        return nil
    }

    mutating func add(_ address: SocketAddress, owner: String) {
        exact[address] = owner
        let key = PortKey(port: address.port, isIPv6: address.ip.isIPv6)
        if address.ip.isWildcard { wildcard[key] = owner } else if specific[key] == nil { specific[key] = address }
    }
}

/// Which relay listener sends to which of this file's listeners. An edge means an upstream of
/// the first is a listen address of the second, as far as the configuration alone can tell:
/// the same address; a loopback or unspecified address (`0.0.0.0` and `::` as a destination
/// reach this host) on a wildcard listener of its family; `localhost` (and `*.localhost`,
/// RFC 6761) as any loopback address. Port 0 listeners never match.
struct RelayGraph {
    struct Edge {
        var to: Int
        var upstream: UpstreamEndpoint
        var address: SocketAddress
    }

    var edges: [[Edge]]

    init(_ listeners: [ListenerConfiguration]) {
        var byPort: [UInt16: [(listener: Int, address: SocketAddress)]] = [:]
        for (i, l) in listeners.enumerated() {
            for a in l.listen where a.port != 0 { byPort[a.port, default: []].append((i, a)) }
        }
        edges = listeners.map { l in
            guard l.mode.isRelay else { return [] }
            var out: [Edge] = []
            for u in l.upstreams {
                let targets = Self.localForms(of: u)
                guard !targets.isEmpty else { continue }
                for candidate in byPort[u.port] ?? [] where targets.contains(where: { Self.reaches($0, candidate.address.ip) }) {
                    out.append(Edge(to: candidate.listener, upstream: u, address: candidate.address))
                }
            }
            return out
        }
    }

    /// The addresses a datagram sent to `u` may arrive at on this host, as far as we can know.
    static func localForms(of u: UpstreamEndpoint) -> [IPAddress] {
        switch u.host {
        case .address(let ip):
            let ip = ip.mappedIPv4 ?? ip
            // A datagram sent to the unspecified address is delivered to this host's loopback.
            if ip.isWildcard { return [ip.isIPv6 ? .v6(high: 0, low: 1) : .v4(0x7F00_0001)] }
            return [ip]
        case .name(let name):
            let n = name.hasSuffix(".") ? String(name.dropLast()) : name
            if n == "localhost" || n.hasSuffix(".localhost") { return [.v4(0x7F00_0001), .v6(high: 0, low: 1)] }
            return []
        }
    }

    /// Whether a datagram to `destination` reaches a socket bound to `bound`.
    static func reaches(_ destination: IPAddress, _ bound: IPAddress) -> Bool {
        guard destination.isIPv6 == bound.isIPv6 else { return false }
        if destination == bound { return true }
        return bound.isWildcard && destination.isLoopback
    }

    /// Groups of two or more relay listeners that reach each other (strongly connected
    /// components, Tarjan's algorithm without recursion so no file can exhaust the stack).
    func loops() -> [[Int]] {
        let n = edges.count
        var index = [Int](repeating: -1, count: n), low = [Int](repeating: 0, count: n)
        var onStack = [Bool](repeating: false, count: n)
        var stack: [Int] = [], result: [[Int]] = [], next = 0
        for root in 0..<n where index[root] < 0 {
            index[root] = next
            low[root] = next
            next += 1
            stack.append(root)
            onStack[root] = true
            var work: [(node: Int, edge: Int)] = [(root, 0)]
            while let (v, i) = work.last {
                if i < edges[v].count {
                    work[work.count - 1].edge += 1
                    let w = edges[v][i].to
                    if index[w] < 0 {
                        index[w] = next
                        low[w] = next
                        next += 1
                        stack.append(w)
                        onStack[w] = true
                        work.append((w, 0))
                    } else if onStack[w] {
                        low[v] = min(low[v], index[w])
                    }
                } else {
                    work.removeLast()
                    if let parent = work.last?.node { low[parent] = min(low[parent], low[v]) }
                    if low[v] == index[v] {
                        var component: [Int] = []
                        while let w = stack.popLast() {
                            onStack[w] = false
                            component.append(w)
                            if w == v { break }
                        }
                        if component.count > 1 { result.append(component) }
                    }
                }
            }
        }
        return result.sorted { $0.min()! < $1.min()! }
    }

    /// The shortest way from `start` back to it through `members` (breadth first), `start` first.
    func shortestCycle(from start: Int, within members: Set<Int>) -> [Int] {
        var parent: [Int: Int] = [:]
        var queue = [start], head = 0
        while head < queue.count {
            let v = queue[head]
            head += 1
            for e in edges[v] where members.contains(e.to) && e.to != v {
                if e.to == start {
                    var path = [v]
                    while let p = parent[path[0]] { path.insert(p, at: 0) }
                    return path
                }
                if parent[e.to] == nil && e.to != start {
                    parent[e.to] = v
                    queue.append(e.to)
                }
            }
        }
        return [start]
    }
}
