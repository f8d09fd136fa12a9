import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// The relay's session table on its own: made-up descriptors, a closer that records what it
/// closes, and time as a plain number (nanoseconds) the test advances. No sockets, no sleeps.
final class SessionTableTests: XCTestCase {
    static let ms: UInt64 = 1_000_000
    static let hold: UInt64 = 2_000 * ms

    /// Made-up descriptors: each open gets the next number; closes are recorded in order.
    /// `limit` (descriptors open at once) makes opening fail with EMFILE, as a process at its
    /// file limit does.
    final class Descriptors {
        var next: Int32 = 100
        var closed: [Int32] = []
        var open = 0
        var limit = Int.max

        func opener() throws(SyscallError) -> Int32 {
            guard open < limit else { throw SyscallError(call: "socket", errno: EMFILE) }
            open += 1
            next += 1
            return next - 1
        }

        func close(_ fd: Int32) {
            closed.append(fd)
            open -= 1
        }
    }

    var fds = Descriptors()
    /// Epoll tags of the sessions opened, in order.
    var tags: [UInt64] = []

    override func setUp() {
        fds = Descriptors()
        tags = []
    }

    func table(
        maxSessions: Int, timeout: Duration = .seconds(60), maxReplies: Int? = nil,
        hold: UInt64 = SessionTableTests.hold
    ) -> SessionTable {
        let fds = self.fds
        return SessionTable(
            settings: SessionSettings(timeout: timeout, maxSessions: maxSessions, maxReplies: maxReplies),
            holdNanos: hold, closer: { fds.close($0) })
    }

    func key(_ i: Int) -> ClientKey { ClientKey(high: UInt64(0x0A00_0000 + i), low: 0, rest: UInt64(AF_INET) | 5353 << 16) }

    /// A new client `i` at `now`, the way the relay worker admits one: room in the budget, a
    /// socket, the least recently used session evicted at `max_sessions`, then the session.
    /// Returns its slot, or nil when it is refused.
    @discardableResult
    func admit(_ i: Int, to t: inout SessionTable, now: UInt64) -> Int32? {
        guard t.makeRoom(now: now) else { return nil }
        let fds = self.fds
        guard let fd = try? t.opening(now: now, { () throws(SyscallError) in try fds.opener() }) else { return nil }
        if t.isFull { _ = t.evictLeastRecentlyUsed(now: now) }
        return try? t.open(Session(fd: fd, key: key(i), upstream: 0), now: now) { tags.append($0) }
    }

    /// `admit`, which must succeed.
    @discardableResult
    func mustAdmit(_ i: Int, to t: inout SessionTable, now: UInt64, file: StaticString = #filePath, line: UInt = #line) throws -> Int32 {
        try XCTUnwrap(admit(i, to: &t, now: now), "client \(i) is admitted", file: file, line: line)
    }

    func isLive(_ i: Int, in t: SessionTable) -> Bool { t.slot(of: key(i)) != nil }

    // MARK: eviction

    func testAFullTableEvictsTheLeastRecentlyUsedSession() throws {
        var t = table(maxSessions: 3)
        for i in 0..<3 { try mustAdmit(i, to: &t, now: UInt64(i) * Self.ms) }
        XCTAssertNotNil(t.lookup(key(0), now: 10 * Self.ms), "client 0 is active again")

        try mustAdmit(3, to: &t, now: 11 * Self.ms)
        XCTAssertFalse(isLive(1, in: t), "client 1 was used longest ago")
        XCTAssertTrue(isLive(0, in: t) && isLive(2, in: t) && isLive(3, in: t))
        try mustAdmit(4, to: &t, now: 12 * Self.ms)
        XCTAssertFalse(isLive(2, in: t))
        try mustAdmit(5, to: &t, now: 13 * Self.ms)
        XCTAssertFalse(isLive(0, in: t), "then client 0, touched before 3, 4 and 5 came")
        XCTAssertEqual(t.liveCount, 3)
        XCTAssertEqual(fds.closed, [], "evicted sessions keep their sockets for the hold")
        XCTAssertEqual(t.heldCount, 3)
    }

    // MARK: hold and release

    func testHeldSocketsAreReleasedAfterTheHoldOldestFirst() throws {
        var t = table(maxSessions: 1)
        let a = try mustAdmit(0, to: &t, now: 0)
        let fdA = t[a].fd
        let b = try mustAdmit(1, to: &t, now: 10 * Self.ms)  // evicts a at 10 ms
        let fdB = t[b].fd
        try mustAdmit(2, to: &t, now: 20 * Self.ms)  // evicts b at 20 ms
        XCTAssertTrue(t.isHeld(a) && t.isHeld(b))
        XCTAssertNil(t.lookup(key(0), now: 20 * Self.ms), "a held session takes no more datagrams")

        t.releaseHeld(now: 10 * Self.ms + Self.hold - 1)
        XCTAssertEqual(fds.closed, [], "not one nanosecond early")
        t.releaseHeld(now: 10 * Self.ms + Self.hold)
        XCTAssertEqual(fds.closed, [fdA])
        t.releaseHeld(now: 5 * Self.ms)
        XCTAssertEqual(fds.closed, [fdA], "a clock read before the close releases nothing")
        t.releaseHeld(now: 20 * Self.ms + Self.hold)
        XCTAssertEqual(fds.closed, [fdA, fdB])
        XCTAssertEqual(t.heldCount, 0)
        XCTAssertEqual(t.liveCount, 1)
    }

    /// `transparent = yes`: a client whose session was evicted comes back while its old socket
    /// (bound to the client's own address and port) is held: only that client's held sockets
    /// are released, at once; other clients' holds stay.
    func testAReturningClientsOwnHeldSocketIsReleasedEarlyAndNoOneElses() throws {
        var t = table(maxSessions: 1)
        let a = try mustAdmit(0, to: &t, now: 0)
        let fdA = t[a].fd
        let b = try mustAdmit(1, to: &t, now: Self.ms)  // evicts client 0
        let fdB = t[b].fd
        try mustAdmit(2, to: &t, now: 2 * Self.ms)  // evicts client 1
        XCTAssertEqual(t.heldCount, 2)

        XCTAssertEqual(t.releaseHeld(of: key(0)), 1)
        XCTAssertEqual(fds.closed, [fdA], "client 0's own held socket, long before its hold is over")
        XCTAssertEqual(t.heldCount, 1)
        XCTAssertTrue(t.isHeld(b), "client 1's socket stays held: its late replies must reach no one else")
        XCTAssertEqual(t.releaseHeld(of: key(0)), 0, "nothing more to release")
        XCTAssertEqual(t.releaseHeld(of: key(2)), 0, "a live session is not held")
        XCTAssertEqual(t.liveCount, 1)

        t.releaseHeld(now: 2 * Self.ms + Self.hold - 1)
        XCTAssertEqual(fds.closed, [fdA], "client 1's hold is not cut short")
        t.releaseHeld(now: 2 * Self.ms + Self.hold)
        XCTAssertEqual(fds.closed, [fdA, fdB], "the rest of the holds run their course")
        XCTAssertEqual(t.heldCount, 0)
    }

    func testRefusedAndStoppedSessionsCloseAtOnceOtherFailuresAreHeld() throws {
        var t = table(maxSessions: 8)
        let refused = try mustAdmit(0, to: &t, now: 0)
        let failed = try mustAdmit(1, to: &t, now: 0)
        let stopped = try mustAdmit(2, to: &t, now: 0)
        let (fdRefused, fdFailed, fdStopped) = (t[refused].fd, t[failed].fd, t[stopped].fd)
        XCTAssertTrue(t.close(refused, reason: .refused, now: Self.ms))
        XCTAssertEqual(fds.closed, [fdRefused], "nothing listens there: no reply can follow")
        XCTAssertTrue(t.close(failed, reason: .failed, now: Self.ms))
        XCTAssertEqual(fds.closed, [fdRefused], "replies to earlier datagrams may still come")
        XCTAssertTrue(t.isHeld(failed))
        XCTAssertFalse(t.close(failed, reason: .failed, now: Self.ms), "closing twice does nothing")
        XCTAssertEqual(t.liveSlots, [stopped])
        t.close(stopped, reason: .shutdown, now: Self.ms)
        t.releaseAllHeld()
        XCTAssertEqual(fds.closed, [fdRefused, fdStopped, fdFailed], "stopping closes held sockets too")
        XCTAssertEqual(t.liveCount + t.heldCount, 0)
    }

    func testWithoutAHoldClosedSocketsAreClosedAtOnce() throws {
        var t = table(maxSessions: 1, hold: 0)
        let a = try mustAdmit(0, to: &t, now: 0)
        let fdA = t[a].fd
        try mustAdmit(1, to: &t, now: Self.ms)
        XCTAssertEqual(fds.closed, [fdA])
        XCTAssertEqual(t.heldCount, 0)
    }

    // MARK: expiry

    func testIdleSessionsExpireOldestFirstAndKeepTheirSocketsHeld() throws {
        let timeout: UInt64 = 100 * Self.ms
        var t = table(maxSessions: 8, timeout: .milliseconds(100))
        let a = try mustAdmit(0, to: &t, now: 0)
        let fdA = t[a].fd
        let b = try mustAdmit(1, to: &t, now: 50 * Self.ms)
        let c = try mustAdmit(2, to: &t, now: 60 * Self.ms)
        XCTAssertNotNil(t.lookup(key(1), now: 90 * Self.ms), "traffic keeps b alive")

        XCTAssertNil(t.expire(now: timeout - 1))
        XCTAssertEqual(t.expire(now: timeout), a)
        XCTAssertNil(t.expire(now: timeout))
        XCTAssertEqual(t.expire(now: 160 * Self.ms), c)
        XCTAssertNil(t.expire(now: 160 * Self.ms), "b was used at 90 ms")
        XCTAssertEqual(t.expire(now: 190 * Self.ms), b)
        XCTAssertEqual(t.liveCount, 0)
        XCTAssertEqual(fds.closed, [], "expired sessions' sockets are held")
        XCTAssertTrue(t.isHeld(a) && t.isHeld(b) && t.isHeld(c))
        t.releaseHeld(now: timeout + Self.hold)
        XCTAssertEqual(fds.closed, [fdA], "only a's hold is over")
    }

    // MARK: session_max_replies

    func testSessionClosesAfterItsRepliesForEveryRequest() throws {
        var t = table(maxSessions: 8, maxReplies: 2)
        let s = try mustAdmit(0, to: &t, now: 0)
        XCTAssertEqual(t.repliesAllowed(s, 5), 0, "no request yet, no reply expected")
        t.recordRequests(s, 2)
        XCTAssertEqual(t.repliesAllowed(s, 5), 4, "two replies for each of two requests")
        XCTAssertFalse(t.recordReplies(s, 3, now: Self.ms))
        XCTAssertTrue(isLive(0, in: t))
        XCTAssertEqual(t.repliesAllowed(s, 5), 1)
        t.recordRequests(s, 1)
        XCTAssertEqual(t.repliesAllowed(s, 5), 3, "a pipelined request gets its replies too")
        XCTAssertFalse(t.recordReplies(s, 2, now: 2 * Self.ms))
        XCTAssertTrue(t.recordReplies(s, 1, now: 3 * Self.ms), "the last expected reply closes it")
        XCTAssertFalse(isLive(0, in: t))
        XCTAssertTrue(t.isHeld(s), "its socket is held like any closed session's")
    }

    func testWithoutMaxRepliesEveryReplyIsAllowed() throws {
        var t = table(maxSessions: 8)
        let s = try mustAdmit(0, to: &t, now: 0)
        XCTAssertEqual(t.repliesAllowed(s, 7), 7)
        XCTAssertFalse(t.recordReplies(s, 1_000, now: Self.ms))
        XCTAssertTrue(isLive(0, in: t))
    }

    // MARK: exhaustion

    func testLiveAndHeldSocketsTogetherStayWithinTheBudget() throws {
        // max_sessions = 1 leaves room for 256 held sockets (max_sessions, within 256...4096).
        var t = table(maxSessions: 1)
        let room = 1 + 256
        var fdsByClient: [Int32] = []
        for i in 0..<room {
            // Each new client evicts the last one, at i ns.
            let slot = try mustAdmit(i, to: &t, now: UInt64(i))
            fdsByClient.append(t[slot].fd)
        }
        XCTAssertEqual(t.liveCount + t.heldCount, room)
        XCTAssertNil(admit(room, to: &t, now: 1_000), "refused: every held socket is still in its hold")
        XCTAssertEqual(fds.closed, [])
        XCTAssertFalse(isLive(room, in: t))
        XCTAssertTrue(isLive(room - 1, in: t), "the refusal costs no other client its session")

        // Client 0 was evicted first, at 1 ns: its hold is over at `hold` + 1 ns, and it makes
        // room, but no other held socket is closed.
        XCTAssertNil(admit(room, to: &t, now: Self.hold))
        XCTAssertNotNil(admit(room, to: &t, now: Self.hold + 1))
        XCTAssertEqual(fds.closed, [fdsByClient[0]])
        XCTAssertEqual(t.liveCount + t.heldCount, room)
    }

    func testRunningOutOfDescriptorsReleasesOnlyHoldsThatAreOver() throws {
        var t = table(maxSessions: 1)
        let a = try mustAdmit(0, to: &t, now: 0)
        let fdA = t[a].fd
        try mustAdmit(1, to: &t, now: 0)  // a is held
        fds.limit = 2  // a's and b's sockets: the process is at its file limit

        XCTAssertNil(admit(2, to: &t, now: Self.hold - 1), "no descriptor, and no hold is over")
        XCTAssertEqual(fds.closed, [], "a held socket is never closed early to make room")
        XCTAssertTrue(isLive(1, in: t))

        XCTAssertNotNil(admit(2, to: &t, now: Self.hold), "a's hold is over: its descriptor is reused")
        XCTAssertEqual(fds.closed, [fdA])
    }

    func testOtherOpeningErrorsReleaseNothing() throws {
        var t = table(maxSessions: 1)
        try mustAdmit(0, to: &t, now: 0)
        try mustAdmit(1, to: &t, now: 0)
        var calls = 0
        XCTAssertThrowsError(
            try t.opening(now: 10 * Self.hold) { () throws(SyscallError) -> Int32 in
                calls += 1
                throw SyscallError(call: "connect", errno: ENETUNREACH)
            })
        XCTAssertEqual(calls, 1, "the upstream's fault: not retried")
        XCTAssertEqual(fds.closed, [])
        XCTAssertEqual(t.heldCount, 1)
    }

    func testAFailedRegistrationClosesTheSocketAndAddsNothing() throws {
        var t = table(maxSessions: 8)
        let fd = try fds.opener()
        XCTAssertThrowsError(
            try t.open(Session(fd: fd, key: key(0), upstream: 0), now: 0) { (_) throws(SyscallError) in
                throw SyscallError(call: "epoll_ctl", errno: ENOMEM)
            })
        XCTAssertEqual(fds.closed, [fd])
        XCTAssertFalse(isLive(0, in: t))
        XCTAssertEqual(t.liveCount, 0)
        XCTAssertNotNil(admit(0, to: &t, now: 0), "the client can try again")
    }

    // MARK: slots

    func testAReusedSlotGetsANewGenerationSoOldEventsAreIgnored() throws {
        var t = table(maxSessions: 8)
        let a = try mustAdmit(0, to: &t, now: 0)
        let tagA = try XCTUnwrap(tags.last)
        XCTAssertEqual(t.slot(forTag: tagA), a)
        t.recordRequests(a, 3)
        t.close(a, reason: .failed, now: 0)
        XCTAssertEqual(t.slot(forTag: tagA), a, "a held socket's late replies are still read")
        t.releaseHeld(now: Self.hold)
        XCTAssertNil(t.slot(forTag: tagA), "released")

        let b = try mustAdmit(1, to: &t, now: Self.hold)
        let tagB = try XCTUnwrap(tags.last)
        XCTAssertEqual(b, a, "the free slot is reused")
        XCTAssertNotEqual(tagB, tagA)
        XCTAssertNil(t.slot(forTag: tagA), "an event for the old session does not reach the new one")
        XCTAssertEqual(t.slot(forTag: tagB), b)
        XCTAssertEqual(t[b].key, key(1))
        XCTAssertEqual(t[b].requests, 0, "nothing carried over from the old session")
    }

    func testKernelDropsAreCountedOncePerSession() throws {
        var t = table(maxSessions: 8)
        let s = try mustAdmit(0, to: &t, now: 0)
        XCTAssertEqual(t.recordKernelDrops(s, total: 3), 3)
        XCTAssertEqual(t.recordKernelDrops(s, total: 3), 0)
        XCTAssertEqual(t.recordKernelDrops(s, total: 5), 2)
    }

    // MARK: handing over

    /// A session of client `i` on a made-up socket, as another worker hands it over.
    func handed(_ i: Int, requests: UInt32 = 0, replies: UInt32 = 0) throws -> Session {
        var s = Session(fd: try fds.opener(), key: key(i), upstream: 0)
        s.requests = requests
        s.replies = replies
        return s
    }

    func testTakingLiveSessionsKeepsTheirSocketsOpenAndLeavesHeldOnes() throws {
        var t = table(maxSessions: 8)
        let a = try mustAdmit(0, to: &t, now: 0)
        let tagA = try XCTUnwrap(tags.last)
        let b = try mustAdmit(1, to: &t, now: 10 * Self.ms)
        let c = try mustAdmit(2, to: &t, now: 20 * Self.ms)
        let (fdA, fdB, fdC) = (t[a].fd, t[b].fd, t[c].fd)
        t.recordRequests(a, 4)
        XCTAssertNotNil(t.lookup(key(0), now: 30 * Self.ms), "a is used again")
        t.close(b, reason: .failed, now: 25 * Self.ms)  // held

        let taken = t.takeLive()
        XCTAssertEqual(taken.map(\.session.fd), [fdC, fdA], "live sessions, least recently used first")
        XCTAssertEqual(taken.map(\.lastUsed), [20 * Self.ms, 30 * Self.ms])
        XCTAssertEqual(taken.map(\.session.key), [key(2), key(0)])
        XCTAssertEqual(taken[1].session.requests, 4, "with their counts")
        XCTAssertEqual(fds.closed, [], "no socket is closed: they live on elsewhere")
        XCTAssertEqual(t.liveCount, 0)
        XCTAssertNil(t.lookup(key(0), now: 40 * Self.ms), "the table no longer serves them")
        XCTAssertNil(t.slot(forTag: tagA), "their epoll events no longer resolve")
        XCTAssertNil(t.expire(now: 10 * Self.hold), "nor do they expire here")
        XCTAssertTrue(t.isHeld(b), "the held session stays for its hold")

        let d = try mustAdmit(3, to: &t, now: 50 * Self.ms)
        XCTAssertTrue([a, c].contains(d), "their slots are free again")
        let fdD = t[d].fd
        t.close(d, reason: .shutdown, now: 60 * Self.ms)
        t.releaseAllHeld()
        XCTAssertEqual(Set(fds.closed), [fdB, fdD], "stopping closes the held and new sockets, not the taken ones")
        XCTAssertFalse(fds.closed.contains(fdA) || fds.closed.contains(fdC))
    }

    func testAnAdoptedSessionExpiresAfterTheRestOfItsTimeoutAndKeepsItsCounts() throws {
        var t = table(maxSessions: 8, timeout: .milliseconds(100), maxReplies: 1)
        let now: UInt64 = 1_000 * Self.ms
        // Oldest first, as `takeLive` hands them out: idle 80 ms and 30 ms.
        let old = try t.adopt(try handed(0, requests: 2, replies: 1), lastUsed: now - 80 * Self.ms, now: now) { tags.append($0) }
        let young = try t.adopt(try handed(1), lastUsed: now - 30 * Self.ms, now: now) { tags.append($0) }
        XCTAssertEqual(t.liveCount, 2)
        XCTAssertEqual(t.slot(of: key(0)), old, "its client's datagrams find it")
        XCTAssertEqual(t.slot(forTag: tags[0]), old, "its replies are read")
        XCTAssertEqual(t.repliesAllowed(old, 5), 1, "one reply per request, one of two already sent")
        XCTAssertEqual(t.repliesAllowed(young, 5), 0)

        XCTAssertNil(t.expire(now: now + 20 * Self.ms - 1), "not a nanosecond before its 100 ms are up")
        XCTAssertEqual(t.expire(now: now + 20 * Self.ms), old)
        XCTAssertNil(t.expire(now: now + 70 * Self.ms - 1))
        XCTAssertEqual(t.expire(now: now + 70 * Self.ms), young)
        XCTAssertTrue(t.isHeld(old), "an adopted session's socket is held on expiry like any other")
        XCTAssertEqual(fds.closed, [])
    }

    func testAdoptedSessionsAreEvictedInTheirTurn() throws {
        var t = table(maxSessions: 2)
        let now: UInt64 = 1_000 * Self.ms
        let fd0 = try handed(0)
        try t.adopt(fd0, lastUsed: now - 50 * Self.ms, now: now) { tags.append($0) }
        try t.adopt(try handed(1), lastUsed: now - 10 * Self.ms, now: now) { tags.append($0) }
        try mustAdmit(2, to: &t, now: now + Self.ms)
        XCTAssertFalse(isLive(0, in: t), "the least recently used (adopted) session is evicted first")
        XCTAssertTrue(isLive(1, in: t) && isLive(2, in: t))
    }

    func testAdoptionIsRefusedWhenFullOrTheClientHasASessionAndTheSocketIsClosed() throws {
        var t = table(maxSessions: 2)
        try mustAdmit(0, to: &t, now: 0)
        let duplicate = try handed(0)
        XCTAssertThrowsError(try t.adopt(duplicate, lastUsed: 0, now: Self.ms) { tags.append($0) }) {
            XCTAssertEqual($0 as? SessionTable.AdoptionRefusal, .clientHasSession)
        }
        XCTAssertEqual(fds.closed, [duplicate.fd], "refused: its socket is closed")
        XCTAssertEqual(t.liveCount, 1, "the session already here stays")

        try t.adopt(try handed(1), lastUsed: 0, now: Self.ms) { tags.append($0) }
        let beyond = try handed(2)
        XCTAssertThrowsError(try t.adopt(beyond, lastUsed: 0, now: Self.ms) { tags.append($0) }) {
            XCTAssertEqual($0 as? SessionTable.AdoptionRefusal, .full)
        }
        XCTAssertEqual(fds.closed, [duplicate.fd, beyond.fd])
        XCTAssertTrue(isLive(0, in: t) && isLive(1, in: t), "an adopted session never evicts one here")

        var u = table(maxSessions: 8)
        let unregistered = try handed(3)
        XCTAssertThrowsError(
            try u.adopt(unregistered, lastUsed: 0, now: 0) { (_) throws(SyscallError) in
                throw SyscallError(call: "epoll_ctl", errno: ENOMEM)
            }
        ) {
            XCTAssertEqual($0 as? SessionTable.AdoptionRefusal, .register(SyscallError(call: "epoll_ctl", errno: ENOMEM)))
        }
        XCTAssertEqual(fds.closed.last, unregistered.fd)
        XCTAssertEqual(u.liveCount, 0)
    }

    func testASessionAdoptedIntoABusyTableNeverExpiresBeforeTheSessionsAlreadyThere() throws {
        var t = table(maxSessions: 8, timeout: .milliseconds(100))
        try mustAdmit(0, to: &t, now: 500 * Self.ms)
        // Idle since 100 ms, adopted at 600 ms: taken as used at 500 ms, the most recent here,
        // so the idle order (and expiry from the oldest) holds.
        let late = try t.adopt(try handed(1), lastUsed: 100 * Self.ms, now: 600 * Self.ms) { tags.append($0) }
        XCTAssertNil(t.expire(now: 600 * Self.ms - 1))
        XCTAssertNotNil(t.expire(now: 600 * Self.ms))
        XCTAssertEqual(t.expire(now: 600 * Self.ms), late)
        // A last use after `now` (another clock) counts as now.
        let future = try t.adopt(try handed(2), lastUsed: 5_000 * Self.ms, now: 700 * Self.ms) { tags.append($0) }
        XCTAssertNil(t.expire(now: 800 * Self.ms - 1))
        XCTAssertEqual(t.expire(now: 800 * Self.ms), future)
    }
}
