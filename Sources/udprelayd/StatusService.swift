import Logging
import ServiceLifecycle
import UDPRelayConfig
import UDPRelayDatapath
import UDPRelayStatus

/// What the status endpoint shows, read from the daemon's own state: the daemon record, the
/// configuration it runs and the datapath's counters (summed now, without locks).
struct DaemonStatusSource: StatusSource {
    let datapath: Datapath
    let state: DaemonState

    func snapshot() -> StatusSnapshot {
        let d = state.snapshot
        return StatusSnapshot(
            daemon: DaemonInfo(version: BuildInfo.version, pid: state.pid, startTime: state.startTime, draining: d.draining),
            config: ConfigInfo(
                path: d.configPath, generation: d.generation, loadedAt: d.loadedAt,
                lastReload: d.lastReload.map { ReloadInfo(ok: $0.ok, at: $0.at, errors: $0.errors) }),
            listeners: datapath.snapshot().map(Self.listenerStatus),
            time: DaemonState.now()
        )
    }

    /// One datapath listener as the status module sees it.
    static func listenerStatus(_ l: ListenerSnapshot) -> ListenerStatus {
        let c = l.counters
        let mode = ListenerMode(rawValue: l.mode)
        let hasSessions = mode?.hasSessions ?? false
        return ListenerStatus(
            name: l.name, mode: l.mode, addresses: l.addresses.map { "\($0)" },
            received: Traffic(packets: c[.receivedPackets], bytes: c[.receivedBytes]),
            sent: Traffic(packets: c[.sentPackets], bytes: c[.sentBytes]),
            receiveErrors: c[.receiveErrors],
            drops: Counter.dropCounters.map { DropCount(reason: $0.name, count: c[$0]) },
            sessions: hasSessions
                ? SessionCounters(
                    active: c[.sessionsActive], created: c[.sessionsCreated],
                    expired: c[.sessionsExpired], evicted: c[.sessionsEvicted])
                : nil,
            upstreams: l.upstreams.map { u in
                UpstreamStatus(
                    address: u.endpoint, state: u.state,
                    sent: Traffic(packets: u.counters[.sentPackets], bytes: u.counters[.sentBytes]),
                    received: Traffic(packets: u.counters[.receivedPackets], bytes: u.counters[.receivedBytes]),
                    failures: u.counters[.failures],
                    counters: UpstreamCounter.events.map { NamedCounter($0.name, u.counters[$0]) },
                    lastError: u.lastError, draining: u.draining, backup: u.backup, weight: u.weight,
                    sessionsActive: u.counters[.sessionsActive], resolved: u.hostname ? u.address.map { "\($0)" } : nil, removed: u.removed)
            },
            counters: (mode.map(Counter.events(for:)) ?? []).map { NamedCounter($0.name, c[$0]) },
            workers: l.workers.map { w in
                WorkerStatus(
                    address: "\(w.address)", number: w.place.number, of: w.place.of,
                    received: Traffic(packets: w.counters[.receivedPackets], bytes: w.counters[.receivedBytes]),
                    sent: Traffic(packets: w.counters[.sentPackets], bytes: w.counters[.sentBytes]))
            },
            proxyProtocol: l.proxyProtocol,
            transparent: l.transparent,
            spoof: l.spoof,
            acceptProxyProtocol: l.acceptProxyProtocol
        )
    }

    /// Live relay sessions, each worker's taken on its own queue (at most 200 ms each, all at
    /// once); a worker that did not answer is reported, not waited for.
    func sessions(listener: String?, limit: Int) async -> SessionsAnswer {
        let found = await datapath.liveSessions(listener: listener, limit: limit, timeout: .milliseconds(200))
        return SessionsAnswer(sessions: found.sessions.map(Self.sessionStatus), unanswered: found.unanswered)
    }

    /// One datapath session as the status module sees it.
    static func sessionStatus(_ s: LiveSession) -> SessionStatus {
        SessionStatus(
            listener: s.listener, client: s.client.map { "\($0)" } ?? "?", upstream: s.upstream,
            upstreamAddress: s.upstreamAddress.map { "\($0)" },
            ageSeconds: Double(s.ageNanos) / 1e9, idleSeconds: Double(s.idleNanos) / 1e9,
            toUpstream: Traffic(packets: s.requests, bytes: s.requestBytes),
            toClient: Traffic(packets: s.replies, bytes: s.replyBytes))
    }

    func problems() async -> [String] {
        var problems: [String] = []
        for l in datapath.listeners where l.boundAddresses.count < l.configuration.listen.count {
            problems.append("listener '\(l.name)': \(l.boundAddresses.count) of \(l.configuration.listen.count) addresses bound")
        }
        return problems + (await datapath.probe(timeout: .seconds(1)))
    }
}

/// Runs the HTTP status endpoint (already bound) until graceful shutdown.
struct StatusService: Service {
    let server: StatusServer

    /// Binds the endpoint of `configuration`, or returns nil when it is `off`.
    static func start(_ configuration: StatusConfiguration, source: some StatusSource, logger: Logger) async throws -> StatusService? {
        guard let listen = configuration.listen else { return nil }
        return StatusService(
            server: try await StatusServer.start(
                listen: listen, allow: configuration.allow,
                source: source, logger: logger))
    }

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
    }
}
