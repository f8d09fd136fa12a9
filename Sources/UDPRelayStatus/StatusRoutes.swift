import NIOHTTP1

/// An HTTP answer, before it is encoded.
public struct StatusResponse: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: String
    /// Extra headers (`Allow` on 405).
    public var headers: [(String, String)]
    /// Close the connection after this response.
    public var close: Bool

    public init(
        _ status: HTTPResponseStatus, _ contentType: String, _ body: String,
        headers: [(String, String)] = [], close: Bool = false
    ) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
        self.close = close
    }

    static func text(_ status: HTTPResponseStatus, _ body: String, headers: [(String, String)] = [], close: Bool = false) -> StatusResponse {
        StatusResponse(status, "text/plain; charset=utf-8", body, headers: headers, close: close)
    }
}

/// What answering a request takes: a response now, or one built after the health probe.
public enum PlannedResponse: Sendable {
    case now(StatusResponse)
    case afterProbe(@Sendable ([String]) -> StatusResponse)
    /// Built by an async step that suspends (`/sessions` waits for the datapath's queues).
    case later(@Sendable () async -> StatusResponse)
}

/// The endpoints and how each one answers; no sockets involved, so tests call it directly.
public struct StatusRoutes: Sendable {
    public static let paths = ["/", "/healthz", "/status", "/sessions", "/metrics"]
    public static let allow = "GET, HEAD"

    let source: any StatusSource
    let history: RateHistory
    let counters: @Sendable () -> ServerCounters
    let now: @Sendable () -> Double

    public init(
        source: any StatusSource, history: RateHistory, counters: @escaping @Sendable () -> ServerCounters,
        monotonicNow: @escaping @Sendable () -> Double
    ) {
        self.source = source
        self.history = history
        self.counters = counters
        self.now = monotonicNow
    }

    /// Plans the answer to `method uri`. Unknown path: 404; known path, other method: 405 with
    /// `Allow`; a target that is not a path: 400.
    public func plan(method: HTTPMethod, uri: String) -> PlannedResponse {
        guard let (path, query) = RequestTarget.split(uri) else {
            return .now(.text(.badRequest, "bad request target\n", close: true))
        }
        guard Self.paths.contains(path) else {
            return .now(
                .text(
                    .notFound, "not found: \(path)\nendpoints: \(Self.paths.joined(separator: " "))\n",
                    close: !(method == .GET || method == .HEAD)))
        }
        guard method == .GET || method == .HEAD else {
            return .now(
                .text(
                    .methodNotAllowed, "method not allowed: \(method.rawValue); use GET or HEAD\n",
                    headers: [("Allow", Self.allow)], close: true))
        }
        switch path {
        case "/healthz":
            var name: String?
            for (key, value) in query where key == "listener" { name = value }
            if let name {
                let snapshot = source.snapshot()
                guard snapshot.listener(named: name) != nil else {
                    let known = snapshot.listeners.map(\.name).joined(separator: ", ")
                    return .now(.text(.notFound, "no listener named '\(name)'; listeners: \(known)\n"))
                }
            }
            return .afterProbe { [source, name] problems in
                Self.health(problems, source.snapshot(), listener: name)
            }
        case "/status":
            var name: String?
            for (key, value) in query where key == "listener" { name = value }
            let snapshot = source.snapshot()
            if let name, snapshot.listener(named: name) == nil {
                let known = snapshot.listeners.map(\.name).joined(separator: ", ")
                return .now(
                    StatusResponse(
                        .notFound, "application/json",
                        "{\"error\": \(Format.json("no listener named '\(name)'; listeners: \(known)"))}\n"))
            }
            return .now(StatusResponse(.ok, "application/json", StatusJSON.render(snapshot, server: counters(), only: name)))
        case "/sessions":
            return sessions(query)
        case "/metrics":
            return .now(StatusResponse(.ok, PrometheusText.contentType, PrometheusText.render(source.snapshot(), server: counters())))
        default:  // "/"
            return .later { [source, history, counters, now] in
                let health = await source.problems()
                let busiest = StatusPage.busiest(await source.sessions(listener: nil, limit: SessionsJSON.maxLimit).sessions)
                let snapshot = source.snapshot()
                let problems = Self.unhealthy(health, snapshot, listener: nil)
                let t = now()
                var rates: [String: ListenerRates] = [:]
                for l in snapshot.listeners { rates[l.name] = history.rates(of: l, now: t) }
                return StatusResponse(
                    .ok, "text/html; charset=utf-8",
                    StatusPage.render(snapshot, server: counters(), rates: rates, problems: problems, busiest: busiest))
            }
        }
    }

    /// `/healthz`: 200 `ok` only while the instance is not draining and every listener (or the
    /// one named) has all its addresses bound and its queues answering; else 503, one line per
    /// reason. Problems about a listener start with `listener 'NAME'`, which is how the
    /// per-listener form keeps only its own.
    static func health(_ problems: [String], _ snapshot: StatusSnapshot, listener name: String?) -> StatusResponse {
        let reasons = unhealthy(problems, snapshot, listener: name)
        return reasons.isEmpty ? .text(.ok, "ok\n") : .text(.serviceUnavailable, reasons.map { $0 + "\n" }.joined())
    }

    /// Why `/healthz` fails, one line each (the `/` page's badge shows the same).
    static func unhealthy(_ problems: [String], _ snapshot: StatusSnapshot, listener name: String?) -> [String] {
        var reasons: [String]
        if let name {
            reasons = problems.filter { $0.hasPrefix("listener '\(name)':") || $0.hasPrefix("listener '\(name)' ") }
        } else {
            reasons = withListenerCheck(problems, snapshot)
        }
        if snapshot.daemon.draining {
            reasons.insert("draining: this instance takes no new flows from its load balancer (SIGUSR2 ends it); it still serves all traffic", at: 0)
        }
        return reasons
    }

    /// A daemon with no listener serves nothing: that is a problem, whatever the probe says.
    static func withListenerCheck(_ problems: [String], _ snapshot: StatusSnapshot) -> [String] {
        snapshot.listeners.isEmpty ? ["no listener is serving (the configuration has none)"] + problems : problems
    }

    /// Answers directly (runs the probe when needed); for tests and simple callers.
    public func respond(method: HTTPMethod, uri: String) async -> StatusResponse {
        switch plan(method: method, uri: uri) {
        case .now(let r): return r
        case .afterProbe(let build): return build(await source.problems())
        case .later(let build): return await build()
        }
    }

    /// `/sessions?listener=NAME&limit=N`: 400 for a bad query, 404 for an unknown listener,
    /// 503 when a datapath queue did not answer in time.
    func sessions(_ query: [(String, String)]) -> PlannedResponse {
        let parsed: (listener: String?, limit: Int)
        switch SessionsJSON.query(query) {
        case .success(let q): parsed = q
        case .failure(let e): return .now(StatusResponse(.badRequest, "application/json", SessionsJSON.error(e.message)))
        }
        if let name = parsed.listener {
            let snapshot = source.snapshot()
            if snapshot.listener(named: name) == nil {
                let known = snapshot.listeners.map(\.name).joined(separator: ", ")
                return .now(StatusResponse(.notFound, "application/json", SessionsJSON.error("no listener named '\(name)'; listeners: \(known)")))
            }
        }
        return .later { [source] in
            let answer = await source.sessions(listener: parsed.listener, limit: parsed.limit)
            guard answer.unanswered.isEmpty else {
                return StatusResponse(.serviceUnavailable, "application/json", SessionsJSON.error(answer.unanswered.joined(separator: "; ")))
            }
            return StatusResponse(
                .ok, "application/json",
                SessionsJSON.render(answer, time: source.snapshot().time, listener: parsed.listener, limit: parsed.limit))
        }
    }
}
