import Foundation
import Logging
import TestSupport
import XCTest

@testable import UDPRelaySystemd

#if canImport(Glibc)
import Glibc
#endif

final class SocketActivationTests: XCTestCase {
    func testSocketsAreGroupedByListenerName() throws {
        let sockets = [SocketActivation.InheritedSocket(fd: 3, name: "echo"), .init(fd: 4, name: "echo"), .init(fd: 5, name: "small")]
        let byName = try SocketActivation.assign(sockets, toListeners: ["echo", "small", "plain"], configFile: "/etc/u.ini")
        XCTAssertEqual(byName, ["echo": [3, 4], "small": [5]])
    }

    func testAnUnknownNameIsAClearError() {
        let sockets = [SocketActivation.InheritedSocket(fd: 3, name: "udprelayd.socket")]
        XCTAssertThrowsError(try SocketActivation.assign(sockets, toListeners: ["echo", "small"], configFile: "/etc/u.ini")) { error in
            XCTAssertEqual(
                "\(error)",
                "socket 'udprelayd.socket' passed by systemd (fd 3) matches no [listener udprelayd.socket] in /etc/u.ini (listeners: echo, small); set FileDescriptorName= in the .socket unit to a listener name"
            )
        }
    }

    func testStoredListenerSocketsAreSetAsideNotMatchedByName() throws {
        let sockets = [
            SocketActivation.InheritedSocket(fd: 3, name: "echo"), .init(fd: 4, name: "listen/127.0.0.1.5353"),
            .init(fd: 5, name: "listen/[..1].5353"),
        ]
        XCTAssertEqual(
            try SocketActivation.assign(sockets, toListeners: ["echo"], configFile: "/etc/u.ini"), ["echo": [3]],
            "sockets from the file descriptor store are no error although no listener has their name")
        XCTAssertEqual(SocketActivation.storedListenerSockets(sockets).map(\.fd), [4, 5])
    }

    func testNoSocketsWithoutListenFds() throws {
        unsetenv("LISTEN_FDS")
        XCTAssertEqual(try SocketActivation.takeInheritedSockets(), [])
    }
}
