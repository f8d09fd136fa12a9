/// Renders `GET /metrics` in the Prometheus text exposition format 0.0.4, from the same
/// snapshot as `/status`. Every family is always present with `# HELP` and `# TYPE`, even when
/// it has no samples (no listener keeps sessions, say), so dashboards see a stable set of names.
/// Metric names are documented in docs/STATUS.md.
public enum PrometheusText {
    /// The `Content-Type` of the exposition format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func render(_ s: StatusSnapshot, server: ServerCounters) -> String {
        var out = Writer()
        let ls = s.listeners

        out.family("udprelayd_build_info", .gauge, "Build information; the value is always 1.")
        out.sample("udprelayd_build_info", [("version", s.daemon.version)], UInt64(1))
        out.family("process_start_time_seconds", .gauge, "Start time of the process since the Unix epoch, in seconds.")
        out.sample("process_start_time_seconds", [], s.daemon.startTime)
        out.family("udprelayd_draining", .gauge, "1 while the instance drains (SIGUSR1; /healthz answers 503, traffic is still served), 0 otherwise.")
        out.sample("udprelayd_draining", [], UInt64(s.daemon.draining ? 1 : 0))

        out.family("udprelayd_config_generation", .gauge, "Generation of the running configuration: 1 at start, +1 per successful reload.")
        out.sample("udprelayd_config_generation", [], Double(s.config.generation))
        out.family("udprelayd_config_loaded_timestamp_seconds", .gauge, "When the running configuration was loaded, since the Unix epoch.")
        out.sample("udprelayd_config_loaded_timestamp_seconds", [], s.config.loadedAt)
        out.family("udprelayd_config_last_reload_successful", .gauge, "1 if the last reload succeeded or there was none, 0 if it failed.")
        out.sample("udprelayd_config_last_reload_successful", [], UInt64(s.config.lastReload?.ok == false ? 0 : 1))

        out.family("udprelayd_listener_info", .gauge, "One sample per listener; the value is always 1.")
        for l in ls { out.sample("udprelayd_listener_info", [("listener", l.name), ("mode", l.mode)], UInt64(1)) }
        out.family(
            "udprelayd_listener_proxy_protocol", .gauge,
            "PROXY protocol version whose header starts every datagram the listener sends to its upstreams (proxy_protocol); 0 when off.")
        for l in ls { out.sample("udprelayd_listener_proxy_protocol", [("listener", l.name)], UInt64(l.proxyProtocol == "v2" ? 2 : 0)) }
        out.family(
            "udprelayd_listener_transparent", .gauge,
            "1 when the listener's upstreams see each client's own address and port (transparent = yes), 0 otherwise.")
        for l in ls { out.sample("udprelayd_listener_transparent", [("listener", l.name)], UInt64(l.transparent ? 1 : 0)) }
        out.family(
            "udprelayd_listener_spoof", .gauge,
            "1 when the listener's copies leave with each client's own address and port as their source (spoof = yes), 0 otherwise.")
        for l in ls { out.sample("udprelayd_listener_spoof", [("listener", l.name)], UInt64(l.spoof ? 1 : 0)) }
        out.family(
            "udprelayd_listener_accept_proxy_protocol", .gauge,
            "PROXY protocol version of the header that datagrams from proxy_protocol_from sources start with (accept_proxy_protocol); 0 when off.")
        for l in ls {
            out.sample("udprelayd_listener_accept_proxy_protocol", [("listener", l.name)], UInt64(l.acceptProxyProtocol == "v2" ? 2 : 0))
        }
        out.family("udprelayd_listener_bound", .gauge, "One sample per bound address of a listener; the value is always 1.")
        for l in ls {
            for a in l.addresses { out.sample("udprelayd_listener_bound", [("listener", l.name), ("address", a)], UInt64(1)) }
        }

        let perListener: [(String, String, (ListenerStatus) -> UInt64)] = [
            ("udprelayd_packets_received_total", "Datagrams received.", { $0.received.packets }),
            ("udprelayd_bytes_received_total", "Payload bytes received.", { $0.received.bytes }),
            ("udprelayd_packets_sent_total", "Datagrams sent.", { $0.sent.packets }),
            ("udprelayd_bytes_sent_total", "Payload bytes sent.", { $0.sent.bytes }),
            ("udprelayd_\(ListenerStatus.receiveErrorsName)_total", "Receive calls that failed with an error other than would-block.", { $0.receiveErrors }),
        ]
        for (name, help, value) in perListener {
            out.family(name, .counter, help)
            for l in ls { out.sample(name, [("listener", l.name)], value(l)) }
        }
        out.family("udprelayd_drops_total", .counter, "Datagrams dropped, by reason.")
        for l in ls {
            for d in l.drops { out.sample("udprelayd_drops_total", [("listener", l.name), ("reason", d.reason)], d.count) }
        }

        out.family("udprelayd_events_total", .counter, "Other listener counters by name (relay events such as fail_open, sessions_closed).")
        for l in ls {
            for c in l.counters { out.sample("udprelayd_events_total", [("listener", l.name), ("event", c.name)], c.value) }
        }

        out.family("udprelayd_sessions_active", .gauge, "Sessions open now (listeners that keep sessions).")
        for l in ls { if let x = l.sessions { out.sample("udprelayd_sessions_active", [("listener", l.name)], x.active) } }
        let sessionTotals: [(String, String, (SessionCounters) -> UInt64)] = [
            ("udprelayd_sessions_created_total", "Sessions created.", { $0.created }),
            ("udprelayd_sessions_expired_total", "Sessions closed after their idle timeout.", { $0.expired }),
            ("udprelayd_sessions_evicted_total", "Sessions closed early because the table was full.", { $0.evicted }),
        ]
        for (name, help, value) in sessionTotals {
            out.family(name, .counter, help)
            for l in ls { if let x = l.sessions { out.sample(name, [("listener", l.name)], value(x)) } }
        }

        // One sample per socket of every listener (also with one worker per address), so a
        // dashboard's queries keep working when `workers` changes; `worker` numbers the sockets
        // sharing an address from 1, as the liveness probe does ("worker 2 of 2").
        let perWorker: [(String, String, (WorkerStatus) -> UInt64)] = [
            ("udprelayd_worker_packets_received_total", "Datagrams received by one socket's worker.", { $0.received.packets }),
            ("udprelayd_worker_bytes_received_total", "Payload bytes received by one socket's worker.", { $0.received.bytes }),
            ("udprelayd_worker_packets_sent_total", "Datagrams sent by one socket's worker.", { $0.sent.packets }),
            ("udprelayd_worker_bytes_sent_total", "Payload bytes sent by one socket's worker.", { $0.sent.bytes }),
        ]
        for (name, help, value) in perWorker {
            out.family(name, .counter, help)
            for l in ls {
                for w in l.workers {
                    out.sample(name, [("listener", l.name), ("address", w.address), ("worker", String(w.number))], value(w))
                }
            }
        }

        out.family("udprelayd_upstream_up", .gauge, "1 if the upstream is up, 0 otherwise.")
        for l in ls {
            for u in l.upstreams { out.sample("udprelayd_upstream_up", u.labels(l.name), UInt64(u.isUp ? 1 : 0)) }
        }
        out.family("udprelayd_upstream_draining", .gauge, "1 if the upstream is draining (drain: no new sessions, its sessions continue), 0 otherwise.")
        for l in ls {
            for u in l.upstreams { out.sample("udprelayd_upstream_draining", u.labels(l.name), UInt64(u.draining ? 1 : 0)) }
        }
        out.family("udprelayd_upstream_sessions_active", .gauge, "Sessions on the upstream now.")
        for l in ls {
            for u in l.upstreams { out.sample("udprelayd_upstream_sessions_active", u.labels(l.name), u.sessionsActive) }
        }
        let perUpstream: [(String, String, (UpstreamStatus) -> UInt64)] = [
            ("udprelayd_upstream_packets_sent_total", "Datagrams sent to the upstream.", { $0.sent.packets }),
            ("udprelayd_upstream_bytes_sent_total", "Payload bytes sent to the upstream.", { $0.sent.bytes }),
            ("udprelayd_upstream_packets_received_total", "Datagrams received from the upstream.", { $0.received.packets }),
            ("udprelayd_upstream_bytes_received_total", "Payload bytes received from the upstream.", { $0.received.bytes }),
            ("udprelayd_upstream_failures_total", "Failed sends or unanswered probes towards the upstream.", { $0.failures }),
        ]
        for (name, help, value) in perUpstream {
            out.family(name, .counter, help)
            for l in ls {
                for u in l.upstreams { out.sample(name, u.labels(l.name), value(u)) }
            }
        }

        out.family("udprelayd_upstream_events_total", .counter, "Other upstream counters by name (send_drops, sessions, probes_sent, probes_answered).")
        for l in ls {
            for u in l.upstreams {
                for c in u.counters {
                    out.sample("udprelayd_upstream_events_total", u.labels(l.name) + [("event", c.name)], c.value)
                }
            }
        }

        out.family("udprelayd_status_connections_total", .counter, "TCP connections accepted by the status endpoint, rejected ones included.")
        out.sample("udprelayd_status_connections_total", [], server.accepted)
        out.family("udprelayd_status_connections_open", .gauge, "Status endpoint connections being served now.")
        out.sample("udprelayd_status_connections_open", [], server.open)
        out.family("udprelayd_status_connections_rejected_total", .counter, "Status endpoint connections refused, by reason.")
        out.sample("udprelayd_status_connections_rejected_total", [("reason", "not_allowed")], server.rejectedNotAllowed)
        out.sample("udprelayd_status_connections_rejected_total", [("reason", "limit")], server.rejectedLimit)
        out.family("udprelayd_status_requests_total", .counter, "HTTP requests answered by the status endpoint.")
        out.sample("udprelayd_status_requests_total", [], server.requests)
        out.family(
            "udprelayd_status_accept_errors_total", .counter,
            "Status connections that could not be accepted for lack of file descriptors; each pauses accepting 100 ms to 1 s.")
        out.sample("udprelayd_status_accept_errors_total", [], server.acceptErrors)
        return out.text
    }

    enum Kind: String { case counter, gauge }

    struct Writer {
        var text = ""

        mutating func family(_ name: String, _ kind: Kind, _ help: String) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(kind.rawValue)\n"
        }

        mutating func sample(_ name: String, _ labels: [(String, String)], _ value: UInt64) {
            line(name, labels, String(value))
        }

        mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
            line(name, labels, Format.number(value))
        }

        private mutating func line(_ name: String, _ labels: [(String, String)], _ value: String) {
            text += name
            if !labels.isEmpty {
                text += "{" + labels.map { "\($0.0)=\"\(Format.label($0.1))\"" }.joined(separator: ",") + "}"
            }
            text += " " + value + "\n"
        }
    }
}
