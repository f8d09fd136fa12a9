import CUDPRelay
import Foundation
import Logging
import TestSupport
import UDPRelayConfig
import UDPRelayDatapath
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

/// `Continuity` against a fake notification socket standing in for systemd's store: what goes
/// in at a stop comes back at the next start, and a damaged table starts the daemon clean.
final class ContinuitySystemdTests: XCTestCase, ConfigFileTests {
    override func tearDown() {
        unsetenv("NOTIFY_SOCKET")
    }

    private func address(_ s: String) -> SocketAddress { try! SocketAddress(parsing: s) }

    private func udpSocket() -> Int32 {
        socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    private func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    /// Everything the fake store received, as the next start gets it back.
    private func drain(_ sock: NotifySocket) -> [SocketActivation.InheritedSocket] {
        var out: [SocketActivation.InheritedSocket] = []
        while let m = sock.receiveWithDescriptors(timeout: 0.2) {
            guard m.message.hasPrefix("FDSTORE=1\nFDNAME=") else { continue }
            let name = String(m.message.dropFirst("FDSTORE=1\nFDNAME=".count))
            for fd in m.fds { out.append(.init(fd: fd, name: name)) }
        }
        return out
    }

    func testSessionsStoredAtStopComeBackAtTheNextStart() throws {
        let sock = try NotifySocket()
        setenv("NOTIFY_SOCKET", sock.path, 1)
        let continuity = Continuity(notifier: SystemdNotifier(logger: Logger(label: "test")), logger: Logger(label: "test"))
        let entries = (0..<3).map { i in
            SessionArchive.Entry(
                listener: "fwd", socket: UInt16(i % 2), client: address("127.0.0.1:\(40000 + i)"), local: nil, interface: 0,
                upstream: address("127.0.0.2:53"), idleMilliseconds: UInt32(100 * i), requests: 2, replies: 1)
        }
        let handed = entries.map { HandedOverSession(entry: $0, fd: udpSocket(), kernelDrops: 7) }
        continuity.storeSessions(handed)
        for h in handed { XCTAssertFalse(isOpen(h.fd), "this process's copies are closed once stored") }

        let stored = drain(sock)
        XCTAssertEqual(Set(stored.map(\.name)), ["session/0", "session/1", "session/2", "sessions"])
        let carried = continuity.sortOut(listeners: [], sessions: stored)
        XCTAssertEqual(carried.sessions.count, 3)
        // Most recently used first; each entry with its own socket and the drop count seen.
        XCTAssertEqual(carried.sessions.map(\.entry.client), entries.map(\.client))
        XCTAssertEqual(carried.sessions.map(\.kernelDrops), [7, 7, 7])
        for s in carried.sessions {
            XCTAssertTrue(isOpen(s.fd))
            close(s.fd)
        }
    }

    func testADamagedOrUnsealedTableStartsCleanAndClosesTheSessionSockets() throws {
        let continuity = Continuity(notifier: SystemdNotifier(logger: Logger(label: "test")), logger: Logger(label: "test"))
        let garbage = Array("UDPRSESS but not really a table at all".utf8)
        let damaged = garbage.withUnsafeBytes { cur_sealed_memfd("t", $0.baseAddress, $0.count) }
        XCTAssertGreaterThanOrEqual(damaged, 0)
        let socketFd = udpSocket()
        let carried = continuity.sortOut(listeners: [], sessions: [.init(fd: damaged, name: "sessions"), .init(fd: socketFd, name: "session/0")])
        XCTAssertTrue(carried.sessions.isEmpty)
        XCTAssertFalse(isOpen(socketFd), "a session socket without a usable table is closed")
        XCTAssertFalse(isOpen(damaged))

        // A table in a file nothing sealed (not what this daemon stores) is refused the same way.
        let good = SessionArchive(entries: [
            .init(
                listener: "fwd", socket: 0, client: address("127.0.0.1:1"), local: nil, interface: 0,
                upstream: address("127.0.0.2:53"), idleMilliseconds: 0, requests: 1, replies: 0)
        ]).encoded()
        var path = Array("/tmp/udprelayd-continuity-XXXXXX".utf8CString)
        let plain = mkstemp(&path)
        unlink(path)
        XCTAssertEqual(good.withUnsafeBytes { write(plain, $0.baseAddress, $0.count) }, good.count)
        let second = udpSocket()
        XCTAssertTrue(continuity.sortOut(listeners: [], sessions: [.init(fd: plain, name: "sessions"), .init(fd: second, name: "session/0")]).sessions.isEmpty)
        XCTAssertFalse(isOpen(second))
    }

    func testTheStoreHoldsExactlyTheCurrentListenerSockets() async throws {
        let sock = try NotifySocket()
        setenv("NOTIFY_SOCKET", sock.path, 1)
        let continuity = Continuity(notifier: SystemdNotifier(logger: Logger(label: "test")), logger: Logger(label: "test"))
        // What a previous process left: one listener group, no longer configured.
        let stale = udpSocket()
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        let carried = continuity.sortOut(listeners: [.init(fd: stale, name: "listen/127.0.0.1.1")], sessions: [])
        XCTAssertEqual(carried.listenerSockets.values.flatMap { $0 }, [stale])
        close(stale)

        let config = try configuration("[listener echo]\nlisten = 127.0.0.1:0\nworkers = 2\n")
        let datapath = try Datapath(configuration: config, logger: Logger(label: "test"))
        continuity.storeListeners(of: datapath)
        let bound = try XCTUnwrap(datapath.listener(named: "echo")).boundAddresses[0]
        let first = try XCTUnwrap(sock.receiveWithDescriptors())
        XCTAssertEqual(first.message, "FDSTOREREMOVE=1\nFDNAME=listen/127.0.0.1.1", "what the previous process stored goes first")
        let stored = try XCTUnwrap(sock.receiveWithDescriptors())
        XCTAssertEqual(stored.message, "FDSTORE=1\nFDNAME=\(FileDescriptorStore.listenerName(address: "\(bound)"))")
        XCTAssertEqual(stored.fds.count, 2, "the whole worker group")
        for fd in stored.fds { close(fd) }
        await datapath.stop()
    }
}
