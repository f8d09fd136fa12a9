/// A JSON value with ordered object keys, so documents come out in the documented order.
enum JSON: Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (a: JSON, b: JSON) -> Bool { a.serialized() == b.serialized() }

    /// Two-space indented, one key per line, trailing newline: pleasant with `curl`.
    func serialized() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        write(to: &out, indent: 0)
        out.append(UInt8(ascii: "\n"))
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes UTF-8 bytes into one growing buffer: documents of a thousand sessions are built
    /// without a string per line or per indentation.
    private func write(to out: inout [UInt8], indent: Int) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .uint(let u): out.append(contentsOf: String(u).utf8)
        case .double(let d): out.append(contentsOf: (d.isFinite ? Format.number(d) : "null").utf8)
        case .string(let s): Format.appendJSON(s, to: &out)
        case .array(let items):
            if items.isEmpty {
                out.append(contentsOf: "[]".utf8)
                return
            }
            if items.allSatisfy({ $0.isScalar }) {
                out.append(UInt8(ascii: "["))
                for (i, item) in items.enumerated() {
                    if i > 0 { out.append(contentsOf: ", ".utf8) }
                    item.write(to: &out, indent: indent)
                }
                out.append(UInt8(ascii: "]"))
                return
            }
            out.append(contentsOf: "[\n".utf8)
            for (i, item) in items.enumerated() {
                Self.indent(&out, indent + 1)
                item.write(to: &out, indent: indent + 1)
                out.append(contentsOf: (i == items.count - 1 ? "\n" : ",\n").utf8)
            }
            Self.indent(&out, indent)
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            if members.isEmpty {
                out.append(contentsOf: "{}".utf8)
                return
            }
            out.append(contentsOf: "{\n".utf8)
            for (i, (key, value)) in members.enumerated() {
                Self.indent(&out, indent + 1)
                Format.appendJSON(key, to: &out)
                out.append(contentsOf: ": ".utf8)
                value.write(to: &out, indent: indent + 1)
                out.append(contentsOf: (i == members.count - 1 ? "\n" : ",\n").utf8)
            }
            Self.indent(&out, indent)
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func indent(_ out: inout [UInt8], _ level: Int) {
        for _ in 0..<(2 * level) { out.append(UInt8(ascii: " ")) }
    }

    private var isScalar: Bool {
        switch self {
        case .array, .object: false
        default: true
        }
    }
}

/// Renders `GET /status`. The document's shape is documented in docs/STATUS.md and
/// docs/status.schema.json; `schema_version` changes only when a field is removed or changes
/// meaning (new fields may appear without a bump).
public enum StatusJSON {
    /// The current `schema_version`.
    public static let schemaVersion = 1

    /// The whole document; `listeners` narrowed to the given ones (all when nil).
    public static func render(_ s: StatusSnapshot, server: ServerCounters, only listenerName: String? = nil) -> String {
        document(s, server: server, only: listenerName).serialized()
    }

    static func document(_ s: StatusSnapshot, server: ServerCounters, only listenerName: String?) -> JSON {
        let listeners = s.listeners.filter { listenerName == nil || $0.name == listenerName }
        return .object([
            ("schema_version", .int(Int64(schemaVersion))),
            ("time", .string(Format.rfc3339(s.time))),
            (
                "daemon",
                .object([
                    ("version", .string(s.daemon.version)),
                    ("pid", .int(Int64(s.daemon.pid))),
                    ("start_time", .string(Format.rfc3339(s.daemon.startTime))),
                    ("start_time_unix", .double(s.daemon.startTime)),
                    ("uptime_seconds", .double(max(0, s.time - s.daemon.startTime))),
                    ("draining", .bool(s.daemon.draining)),
                ])
            ),
            (
                "config",
                .object([
                    ("path", .string(s.config.path)),
                    ("generation", .int(Int64(s.config.generation))),
                    ("loaded_at", .string(Format.rfc3339(s.config.loadedAt))),
                    (
                        "last_reload",
                        s.config.lastReload.map { r in
                            .object([
                                ("ok", .bool(r.ok)),
                                ("at", .string(Format.rfc3339(r.at))),
                                ("errors", .array(r.errors.map { .string($0) })),
                            ])
                        } ?? .null
                    ),
                ])
            ),
            (
                "status_server",
                .object([
                    ("connections_accepted", .uint(server.accepted)),
                    ("connections_open", .uint(server.open)),
                    (
                        "connections_rejected",
                        .object([
                            ("not_allowed", .uint(server.rejectedNotAllowed)),
                            ("limit", .uint(server.rejectedLimit)),
                        ])
                    ),
                    ("requests", .uint(server.requests)),
                    ("accept_errors", .uint(server.acceptErrors)),
                ])
            ),
            ("listeners", .array(listeners.map(listener))),
        ])
    }

    static func traffic(_ t: Traffic) -> JSON {
        .object([("packets", .uint(t.packets)), ("bytes", .uint(t.bytes))])
    }

    static func listener(_ l: ListenerStatus) -> JSON {
        .object([
            ("name", .string(l.name)),
            ("mode", .string(l.mode)),
            ("proxy_protocol", .string(l.proxyProtocol)),
            ("transparent", .bool(l.transparent)),
            ("spoof", .bool(l.spoof)),
            ("accept_proxy_protocol", .string(l.acceptProxyProtocol)),
            ("addresses", .array(l.addresses.map { .string($0) })),
            ("received", traffic(l.received)),
            ("sent", traffic(l.sent)),
            (ListenerStatus.receiveErrorsName, .uint(l.receiveErrors)),
            ("drops", .object(l.drops.map { ($0.reason, .uint($0.count)) })),
            (
                "sessions",
                l.sessions.map { s in
                    .object([
                        ("active", .uint(s.active)),
                        ("created", .uint(s.created)),
                        ("expired", .uint(s.expired)),
                        ("evicted", .uint(s.evicted)),
                    ])
                } ?? .null
            ),
            (
                "upstreams",
                .array(
                    l.upstreams.map { u in
                        .object([
                            ("address", .string(u.address)),
                            ("resolved", u.resolved.map { .string($0) } ?? .null),
                            ("state", .string(u.state)),
                            ("draining", .bool(u.draining)),
                            ("removed", .bool(u.removed)),
                            ("backup", .bool(u.backup)),
                            ("weight", .uint(UInt64(u.weight))),
                            ("sessions_active", .uint(u.sessionsActive)),
                            ("sent", traffic(u.sent)),
                            ("received", traffic(u.received)),
                            ("failures", .uint(u.failures)),
                            ("last_error", u.lastError.map { .string($0) } ?? .null),
                            ("counters", .object(u.counters.map { ($0.name, .uint($0.value)) })),
                        ])
                    })
            ),
            ("counters", .object(l.counters.map { ($0.name, .uint($0.value)) })),
            (
                "workers",
                .array(
                    l.workers.map { w in
                        .object([("address", .string(w.address)), ("received", traffic(w.received)), ("sent", traffic(w.sent))])
                    })
            ),
        ])
    }
}
