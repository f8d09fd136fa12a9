import CSystemd
import Logging
import Synchronization
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// Tells the service manager about state changes with `sd_notify(3)`: READY, STATUS, RELOADING,
/// STOPPING, WATCHDOG. Without `NOTIFY_SOCKET` (not started by systemd, or Type= is not notify)
/// every call is a no-op. Every result is checked: a failure is logged once (until a send
/// succeeds again), never ignored and never fatal.
public final class SystemdNotifier: Sendable {
    private let logger: Logger
    /// An atomic flag rather than Synchronization.Mutex, whose futex ThreadSanitizer does not see.
    private let failing = Atomic(false)

    public init(logger: Logger) {
        self.logger = logger
    }

    /// True when the process was started with a notification socket.
    public var isEnabled: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// Sends `READY=1`, with a status line if given: every listener is bound and serving.
    @discardableResult
    public func ready(status: String? = nil) -> Bool {
        send(["READY=1"] + (status.map { ["STATUS=\(Self.oneLine($0))"] } ?? []))
    }

    /// Sends `RELOADING=1` with `MONOTONIC_USEC=` (the form systemd 253's notify-reload expects;
    /// 252 accepts it too). Follow with `ready(status:)` when the reload is done.
    @discardableResult
    public func reloading() -> Bool {
        let usec = SystemClock.monotonicNanos() / 1000
        return send(["RELOADING=1", "MONOTONIC_USEC=\(usec)"])
    }

    /// Sends `STOPPING=1`: shutdown has begun.
    @discardableResult
    public func stopping() -> Bool { send(["STOPPING=1"]) }

    /// Sends `STATUS=` (one line; newlines are replaced by spaces).
    @discardableResult
    public func status(_ text: String) -> Bool { send(["STATUS=\(Self.oneLine(text))"]) }

    /// Sends `WATCHDOG=1`. Only the watchdog service calls this, after a liveness probe passed.
    @discardableResult
    public func watchdog() -> Bool { send(["WATCHDOG=1"]) }

    /// Sends the assignments as one message. Returns true when systemd received it, false when
    /// there is no notification socket or the send failed (logged).
    @discardableResult
    public func send(_ assignments: [String]) -> Bool {
        let message = assignments.joined(separator: "\n")
        return reportResult(sd_notify(0, message), message: message)
    }

    /// What a notification's return code says: true when systemd received it. A failure is
    /// logged once until a send succeeds again.
    func reportResult(_ rc: Int32, message: String) -> Bool {
        if rc > 0 {
            if failing.exchange(false, ordering: .relaxed) {
                logger.notice("sd_notify works again")
            }
            return true
        }
        if rc < 0, !failing.exchange(true, ordering: .relaxed) {
            logger.warning(
                "sd_notify failed; systemd may not see this state change",
                metadata: [
                    "error": "\(String(cString: strerror(-rc)))", "notify.message": "\(message.split(separator: "\n").first ?? "")",
                ])
        }
        return false
    }

    static func oneLine(_ s: String) -> String {
        String(s.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
