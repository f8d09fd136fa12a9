import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// systemd's file descriptor store (`FileDescriptorStoreMax=` in the unit): descriptors handed to
/// the service manager with `FDSTORE=1` survive a restart of the service and come back at the
/// next start through `sd_listen_fds_with_names`, after any socket-activation descriptors.
/// systemd keeps them while the unit is restarted and closes them when it is stopped for good.
///
/// udprelayd stores its listener sockets there, one name per bound address, so datagrams that
/// arrive while the process restarts wait in the socket's buffer for the next process; and, at
/// a stop, each relay session's upstream socket (`session/N`) with the table that describes
/// them (`sessions`, a sealed memfd), so the next process continues the sessions.
public enum FileDescriptorStore {
    /// Names of listener sockets in the store start with this; socket-activation names (listener
    /// names) never do, because a listener name cannot contain `/`.
    public static let listenerPrefix = "listen/"

    /// The store's name for the listener sockets bound to `address` (as `SocketAddress`
    /// prints it, `127.0.0.1:53` or `[::1]:53`). `FDNAME=` may not contain `:` (it separates
    /// `LISTEN_FDNAMES`) nor control characters, and is at most 255 bytes.
    public static func listenerName(address: String) -> String {
        listenerPrefix + String(address.map { $0 == ":" ? "." : $0 })
    }

    /// Whether `name` is a listener socket this daemon stored (rather than a socket from a
    /// `.socket` unit).
    public static func isListenerName(_ name: String) -> Bool { name.hasPrefix(listenerPrefix) }

    /// The sealed memfd with the relay sessions handed over at the last stop.
    public static let sessionArchiveName = "sessions"

    /// The socket of the relay session at `index` of that archive.
    public static func sessionSocketName(_ index: Int) -> String { "session/\(index)" }

    /// The archive index in a `session/N` name, nil for other names.
    public static func sessionIndex(_ name: String) -> Int? {
        guard name.hasPrefix("session/"), let n = Int(name.dropFirst(8)), n >= 0 else { return nil }
        return n
    }

    /// Whether `name` is one this daemon stores (a listener socket, a session socket or the
    /// session archive), rather than a socket from a `.socket` unit.
    public static func isStoreName(_ name: String) -> Bool {
        isListenerName(name) || name == sessionArchiveName || sessionIndex(name) != nil
    }

    /// What systemd accepts as `FDNAME=`: printable ASCII without `:`, 1...255 bytes.
    public static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return !bytes.isEmpty && bytes.count <= 255 && bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") }
    }
}

extension SystemdNotifier {
    /// Hands duplicates of `fds` to the store under `name` (`FDSTORE=1`). systemd ignores a
    /// descriptor it already holds, so storing the same sockets again is harmless. False without
    /// a notification socket, or when the send failed (logged once, as every notification).
    @discardableResult
    public func store(_ fds: [Int32], name: String) -> Bool {
        precondition(FileDescriptorStore.isValidName(name), "invalid FDNAME \(name)")
        guard !fds.isEmpty else { return true }
        return send(["FDSTORE=1", "FDNAME=\(name)"], fds: fds)
    }

    /// Removes every descriptor stored under `name` (`FDSTOREREMOVE=1`): systemd closes them.
    @discardableResult
    public func removeStored(name: String) -> Bool {
        precondition(FileDescriptorStore.isValidName(name), "invalid FDNAME \(name)")
        return send(["FDSTOREREMOVE=1", "FDNAME=\(name)"])
    }

    /// `send(_:)` with descriptors attached (`sd_pid_notify_with_fds`).
    func send(_ assignments: [String], fds: [Int32]) -> Bool {
        let message = assignments.joined(separator: "\n")
        let rc = fds.withUnsafeBufferPointer { sd_pid_notify_with_fds(0, 0, message, $0.baseAddress, UInt32($0.count)) }
        return reportResult(rc, message: message)
    }
}
