import Logging
import NIOConcurrencyHelpers
import UDPRelayConfig
import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// What survives a restart, through systemd's file descriptor store (`FileDescriptorStoreMax=`
/// in the unit; see `FileDescriptorStore`):
/// - listener sockets: stored once the daemon is ready and after every reload (the store always
///   holds exactly the current ones), taken back at the next start by the address they are
///   bound to, so datagrams that arrive meanwhile wait in their buffers;
/// - relay sessions: at a stop, each live session's upstream socket and a sealed memfd with the
///   table that describes them (`SessionArchive`); the next process takes them over, so replies
///   keep reaching their clients and upstreams keep seeing the same source port.
/// `systemctl stop` empties the store (systemd closes everything in it); a restart keeps it.
/// Without a notification socket (not under systemd) nothing is stored.
public final class Continuity: Sendable {
    private let notifier: SystemdNotifier
    private let logger: Logger
    /// Names in the store now (or left there by the previous process until the first sync).
    private let storedNames: NIOLockedValueBox<Set<String>>

    /// What the previous process left in the store, sorted out at start.
    public struct CarriedOver: Sendable {
        /// Listener sockets by the address they are bound to (a worker group each, in the order
        /// systemd passed them).
        public var listenerSockets: [SocketAddress: [Int32]] = [:]
        /// Relay sessions with their sockets (the datapath takes them over or closes them).
        public var sessions: [HandedOverSession] = []

        public init() {}
    }

    public init(notifier: SystemdNotifier, logger: Logger) {
        self.notifier = notifier
        self.logger = logger
        self.storedNames = NIOLockedValueBox([])
    }

    /// Sorts out what the previous process stored (`SocketActivation.storedListenerSockets` and
    /// `storedSessionDescriptors`): listener sockets by address; sessions from the archive, each
    /// with its socket. A damaged or foreign archive is logged and its sockets closed: the
    /// daemon starts with an empty table. Anything unusable is closed here.
    public func sortOut(listeners: [SocketActivation.InheritedSocket], sessions stored: [SocketActivation.InheritedSocket]) -> CarriedOver {
        var carried = CarriedOver()
        var names = Set<String>()
        for s in listeners {
            names.insert(s.name)
            guard let address = try? UDPSocket.localAddress(s.fd) else {
                logger.warning("stored listener socket is unusable: closed", metadata: ["fd.name": "\(s.name)"])
                close(s.fd)
                continue
            }
            carried.listenerSockets[address, default: []].append(s.fd)
        }
        var archive: SessionArchive?
        var sockets: [Int: Int32] = [:]
        for s in stored {
            names.insert(s.name)
            if s.name == FileDescriptorStore.sessionArchiveName {
                do {
                    archive = try SessionArchive(sealedMemoryFile: s.fd)
                } catch {
                    logger.error("session table from the previous process refused; starting with no sessions", metadata: ["error": "\(error)"])
                }
                close(s.fd)
            } else if let index = FileDescriptorStore.sessionIndex(s.name), sockets[index] == nil {
                sockets[index] = s.fd
            } else {
                close(s.fd)
            }
        }
        if let archive {
            for (index, entry) in archive.entries.enumerated() {
                guard let fd = sockets.removeValue(forKey: index) else { continue }
                carried.sessions.append(HandedOverSession(entry: entry, fd: fd))
            }
            let missing = archive.entries.count - carried.sessions.count
            if missing > 0 {
                logger.warning(
                    "sessions of the previous process without their socket (systemd closed them): not continued",
                    metadata: ["sessions": "\(missing)"])
            }
        }
        // Sockets without an entry (no archive, or a damaged one) cannot be continued.
        for fd in sockets.values { close(fd) }
        storedNames.withLockedValue { $0 = names }
        if !carried.listenerSockets.isEmpty || !carried.sessions.isEmpty {
            logger.info(
                "taking over from the previous process",
                metadata: [
                    "listener.sockets": "\(carried.listenerSockets.values.map(\.count).reduce(0, +))",
                    "sessions": "\(carried.sessions.count)",
                ])
        }
        return carried
    }

    /// Makes the store hold exactly the datapath's listener sockets: removes every name stored
    /// before (stale groups, the previous process's sessions) and stores the current groups.
    /// After start and after every reload.
    public func storeListeners(of datapath: Datapath) {
        guard notifier.isEnabled else { return }
        let groups = datapath.ownSocketGroups().map { (name: FileDescriptorStore.listenerName(address: "\($0.address)"), fds: $0.fds) }
        let previous = storedNames.withLockedValue { $0 }
        // Removed first, even names stored again: a group's sockets may have changed (a reload
        // with other `workers`), and systemd must not keep one the datapath closed.
        for name in previous.sorted() { notifier.removeStored(name: name) }
        var stored = Set<String>()
        for g in groups where notifier.store(g.fds, name: g.name) { stored.insert(g.name) }
        storedNames.withLockedValue { $0 = stored }
        if stored.count < groups.count {
            logger.warning(
                "some listener sockets could not go to systemd's file descriptor store; a restart will rebind them",
                metadata: ["stored": "\(stored.count)", "listener.groups": "\(groups.count)"])
        }
    }

    /// Stores the sessions handed over at stop for the next process, at most
    /// `SessionArchive.maxEntries` (the most recently used; the rest close, counted in the log),
    /// then closes this process's copies. Without a notification socket, closes them.
    public func storeSessions(_ sessions: [HandedOverSession]) {
        defer { for s in sessions { close(s.fd) } }
        guard notifier.isEnabled, !sessions.isEmpty else { return }
        let kept = sessions.sorted { $0.entry.idleMilliseconds < $1.entry.idleMilliseconds }.prefix(SessionArchive.maxEntries)
        var entries: [SessionArchive.Entry] = []
        entries.reserveCapacity(kept.count)
        for s in kept {
            // Each socket under its own name: systemd gives the store back in no promised order.
            guard notifier.store([s.fd], name: FileDescriptorStore.sessionSocketName(entries.count)) else { continue }
            var entry = s.entry
            entry.kernelDrops = s.kernelDrops
            entries.append(entry)
        }
        do {
            let memfd = try SessionArchive(entries: entries).sealedMemoryFile()
            defer { close(memfd) }
            if notifier.store([memfd], name: FileDescriptorStore.sessionArchiveName) {
                logger.info(
                    "sessions handed to systemd for the next process",
                    metadata: [
                        "sessions": "\(entries.count)", "sessions.closed": "\(sessions.count - entries.count)",
                    ])
                return
            }
        } catch {
            logger.error("cannot write the session table; sessions end here", metadata: ["error": "\(error)"])
        }
        // Without the table the stored sockets are of no use: take them out again.
        for i in entries.indices { notifier.removeStored(name: FileDescriptorStore.sessionSocketName(i)) }
    }
}
