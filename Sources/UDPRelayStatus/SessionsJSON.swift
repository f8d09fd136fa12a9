/// One live relay session, as the daemon copies it from the datapath.
public struct SessionStatus: Sendable, Equatable {
    public var listener: String
    /// The client's address (`ip:port`, `[ip6]:port`).
    public var client: String
    /// The upstream as configured, as `/status` names it in `upstreams[].address`.
    public var upstream: String
    /// The address the session sends to (for a hostname, the one of its answer the session
    /// uses); nil when unknown.
    public var upstreamAddress: String?
    /// Since the session opened, and since its last datagram either way.
    public var ageSeconds: Double
    public var idleSeconds: Double
    /// Datagrams and bytes sent to the upstream, and replies forwarded to the client.
    public var toUpstream: Traffic
    public var toClient: Traffic

    public init(
        listener: String, client: String, upstream: String, upstreamAddress: String? = nil, ageSeconds: Double, idleSeconds: Double,
        toUpstream: Traffic, toClient: Traffic
    ) {
        self.listener = listener
        self.client = client
        self.upstream = upstream
        self.upstreamAddress = upstreamAddress
        self.ageSeconds = ageSeconds
        self.idleSeconds = idleSeconds
        self.toUpstream = toUpstream
        self.toClient = toClient
    }
}

/// What a `StatusSource` found for `/sessions`: the live sessions, most recently active first,
/// and the datapath queues that did not answer in time (one line each; their sessions are
/// missing).
public struct SessionsAnswer: Sendable, Equatable {
    public var sessions: [SessionStatus]
    public var unanswered: [String]

    public init(sessions: [SessionStatus], unanswered: [String] = []) {
        self.sessions = sessions
        self.unanswered = unanswered
    }
}

/// Renders `GET /sessions`. Shape documented in docs/STATUS.md and docs/sessions.schema.json.
public enum SessionsJSON {
    public static let schemaVersion = 1
    /// `?limit=` when not given, and the most it may be.
    public static let defaultLimit = 100
    public static let maxLimit = 1000

    /// The query of `/sessions`: `listener` (nil: all) and `limit`, or why it is refused.
    public static func query(_ pairs: [(String, String)]) -> Result<(listener: String?, limit: Int), QueryError> {
        var listener: String?
        var limit = defaultLimit
        for (key, value) in pairs {
            switch key {
            case "listener":
                guard !value.isEmpty else { return .failure(QueryError("listener must name a listener")) }
                listener = value
            case "limit":
                guard value.utf8.count <= 9, value.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(value), n >= 1, n <= maxLimit else {
                    return .failure(QueryError("limit must be a whole number from 1 to \(maxLimit), not '\(value)'"))
                }
                limit = n
            default:
                break  // unknown keys are ignored, as /status does
            }
        }
        return .success((listener, limit))
    }

    /// A refused query, with the reason shown to the client.
    public struct QueryError: Error, Equatable {
        public let message: String
        init(_ message: String) { self.message = message }
    }

    public static func render(_ answer: SessionsAnswer, time: Double, listener: String?, limit: Int) -> String {
        document(answer, time: time, listener: listener, limit: limit).serialized()
    }

    static func document(_ answer: SessionsAnswer, time: Double, listener: String?, limit: Int) -> JSON {
        .object([
            ("schema_version", .int(Int64(schemaVersion))),
            ("time", .string(Format.rfc3339(time))),
            ("listener", listener.map { .string($0) } ?? .null),
            ("limit", .int(Int64(limit))),
            ("sessions", .array(answer.sessions.prefix(limit).map(session))),
        ])
    }

    static func session(_ s: SessionStatus) -> JSON {
        .object([
            ("listener", .string(s.listener)),
            ("client", .string(s.client)),
            ("upstream", .string(s.upstream)),
            ("upstream_address", s.upstreamAddress.map { .string($0) } ?? .null),
            ("age_seconds", .double(max(0, s.ageSeconds))),
            ("idle_seconds", .double(max(0, s.idleSeconds))),
            ("to_upstream", StatusJSON.traffic(s.toUpstream)),
            ("to_client", StatusJSON.traffic(s.toClient)),
        ])
    }

    /// `{"error": message}` and a newline.
    static func error(_ message: String) -> String {
        "{\"error\": \(Format.json(message))}\n"
    }
}

extension StatusSource {
    /// No sessions (a source without a datapath).
    public func sessions(listener: String?, limit: Int) async -> SessionsAnswer { SessionsAnswer(sessions: []) }
}
