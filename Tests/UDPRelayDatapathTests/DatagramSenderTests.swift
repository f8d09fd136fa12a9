import CUDPRelay
import TestSupport
import UDPRelayConfig
import XCTest

@testable import UDPRelayDatapath

#if canImport(Glibc)
import Glibc
#endif

/// `DatagramSender` on real loopback sockets: runs of equal-sized datagrams go out as one UDP
/// GSO send and arrive as the same datagrams, in order; everything else goes out as before.
final class DatagramSenderTests: XCTestCase {
    /// Messages to send: one buffer per datagram, addressed to `to[i]` (nil: connected socket).
    final class Vector {
        let messages: UnsafeMutablePointer<cur_mmsghdr>
        let iovecs: UnsafeMutablePointer<iovec>
        let names: UnsafeMutablePointer<sockaddr_storage>
        var buffers: [UnsafeMutableRawPointer] = []
        let count: Int

        init(_ payloads: [[UInt8]], to: [SocketAddress?]) {
            count = payloads.count
            messages = .allocate(capacity: count)
            iovecs = .allocate(capacity: count)
            names = .allocate(capacity: count)
            for (i, p) in payloads.enumerated() {
                let b = UnsafeMutableRawPointer.allocate(byteCount: max(p.count, 1), alignment: 8)
                p.withUnsafeBytes { b.copyMemory(from: $0.baseAddress!, byteCount: p.count) }
                buffers.append(b)
                iovecs[i] = iovec(iov_base: b, iov_len: p.count)
                messages[i] = cur_mmsghdr()
                messages[i].msg_hdr.msg_iov = iovecs + i
                messages[i].msg_hdr.msg_iovlen = 1
                names[i] = sockaddr_storage()
                if let a = to[i] {
                    let (storage, len) = TestAddress.storage(a)
                    names[i] = storage
                    messages[i].msg_hdr.msg_name = UnsafeMutableRawPointer(names + i)
                    messages[i].msg_hdr.msg_namelen = len
                }
            }
        }

        deinit {
            for b in buffers { b.deallocate() }
            messages.deallocate()
            iovecs.deallocate()
            names.deallocate()
        }
    }

    func payloads(_ sizes: [Int]) -> [[UInt8]] {
        sizes.enumerated().map { payload($0.element, seed: UInt64($0.offset + 1)) }
    }

    func connectedSender(to receiver: UDPClient) throws -> Int32 {
        let fd = try UDPSocket.open(family: AF_INET)
        try UDPSocket.connect(fd, to: receiver.localAddress)
        addTeardownBlock { close(fd) }
        return fd
    }

    func send(_ sizes: [Int], segmentation: Bool = true) throws -> (DatagramSender.Outcome, [[UInt8]]) {
        let receiver = try UDPClient()
        let fd = try connectedSender(to: receiver)
        let sent = payloads(sizes)
        let v = Vector(sent, to: Array(repeating: nil, count: sent.count))
        var sender = DatagramSender(segmentation: segmentation)
        defer { sender.deallocate() }
        var drops = 0
        let outcome = sender.send(fd: fd, v.messages, count: v.count, oneDestination: true) { _, n in drops += n }
        XCTAssertEqual(drops, 0)
        let got = receiver.receiveMany(sent.count, idle: 2)
        XCTAssertEqual(got.count, sent.count)
        XCTAssertTrue(got == sent, "every datagram arrives whole, in order, with its own boundaries")
        return (outcome, got)
    }

    func testEqualSizedRunIsOneSegmentedSendAndArrivesAsTheSameDatagrams() throws {
        let (outcome, _) = try send(Array(repeating: 1000, count: 20) + [321])
        XCTAssertEqual(outcome.sent, 21)
        XCTAssertEqual(outcome.segmented, 21)
        XCTAssertEqual(outcome.bytes, 20 * 1000 + 321)
    }

    func testMixedSizesAreCutIntoRunsAndTheRestGoesOutPlainInOrder() throws {
        // 5 x 100 then a shorter 60 (one run of 6); 3 x 200 ended by a longer 900 (too short a
        // run), the 900 with the shorter 50 after it (too short); 7 x 50 (a run) ended by a
        // longer 70; 70 and 10 (too short).
        let sizes =
            Array(repeating: 100, count: 5) + [60] + Array(repeating: 200, count: 3) + [900]
            + Array(repeating: 50, count: 7) + [70, 10]
        let (outcome, _) = try send(sizes)
        XCTAssertEqual(outcome.sent, sizes.count)
        XCTAssertEqual(outcome.segmented, 6 + 7)
        XCTAssertEqual(outcome.bytes, UInt64(sizes.reduce(0, +)))
    }

    func testLongRunsAreSplitAtTheSegmentLimit() throws {
        let (outcome, _) = try send(Array(repeating: 64, count: 150))
        XCTAssertEqual(outcome.sent, 150)
        XCTAssertEqual(outcome.segmented, 150)  // 64 + 64 + 22
    }

    func testSegmentationOffSendsEverythingPlain() throws {
        let (outcome, _) = try send(Array(repeating: 500, count: 16), segmentation: false)
        XCTAssertEqual(outcome.sent, 16)
        XCTAssertEqual(outcome.segmented, 0)
    }

    func testRunsAreCutWhereTheDestinationChanges() throws {
        let a = try UDPClient(), b = try UDPClient()
        let fd = try UDPSocket.open(family: AF_INET)
        addTeardownBlock { close(fd) }
        let to: [SocketAddress] =
            Array(repeating: a.localAddress, count: 5) + Array(repeating: b.localAddress, count: 5)
            + Array(repeating: a.localAddress, count: 2)
        let sent = payloads(Array(repeating: 300, count: to.count))
        let v = Vector(sent, to: to)
        var sender = DatagramSender(segmentation: true)
        defer { sender.deallocate() }
        let outcome = sender.send(fd: fd, v.messages, count: v.count, oneDestination: false) { err, n in
            XCTFail("\(n) dropped: errno \(err)")
        }
        XCTAssertEqual(outcome.sent, 12)
        XCTAssertEqual(outcome.segmented, 10)
        XCTAssertTrue(a.receiveMany(7, idle: 2) == Array(sent[0..<5]) + Array(sent[10..<12]))
        XCTAssertTrue(b.receiveMany(5, idle: 2) == Array(sent[5..<10]))
    }

    func testARefusedRunIsReportedOnceWithItsSize() throws {
        let closed = try closedLoopbackPort()
        let fd = try UDPSocket.open(family: AF_INET)
        addTeardownBlock { close(fd) }
        try UDPSocket.connect(fd, to: closed)
        let v = Vector(payloads(Array(repeating: 100, count: 8)), to: Array(repeating: nil, count: 8))
        var sender = DatagramSender(segmentation: true)
        defer { sender.deallocate() }
        // The first send provokes the ICMP port unreachable; the next one reports it.
        _ = sender.send(fd: fd, v.messages, count: 8, oneDestination: true) { _, _ in }
        var refused = 0
        let deadline = Date().addingTimeInterval(5)
        while refused == 0 && Date() < deadline {
            _ = sender.send(fd: fd, v.messages, count: 8, oneDestination: true) { err, n in
                if err == ECONNREFUSED { refused += n }
            }
        }
        XCTAssertEqual(refused, 8, "a segmented send that fails drops its whole run, counted per datagram")
    }

    /// A socket that cannot segment (here: UDP checksums off, which GSO refuses with EINVAL)
    /// gets every run sent plainly; the refused size becomes the limit, and after
    /// `maxRefusals` refusals segmentation is off for good.
    func testRefusedSegmentationFallsBackToPlainSendsAndEventuallyStops() throws {
        let receiver = try UDPClient()
        let fd = try connectedSender(to: receiver)
        var one: Int32 = 1
        let soNoCheck: Int32 = 11  // SO_NO_CHECK
        XCTAssertEqual(setsockopt(fd, SOL_SOCKET, soNoCheck, &one, 4), 0)
        var sender = DatagramSender(segmentation: true)
        defer { sender.deallocate() }
        var expected: [[UInt8]] = []
        for round in 0..<DatagramSender.maxRefusals {
            let size = 900 - round * 10
            let sent = payloads(Array(repeating: size, count: 6))
            expected += sent
            let v = Vector(sent, to: Array(repeating: nil, count: sent.count))
            let outcome = sender.send(fd: fd, v.messages, count: v.count, oneDestination: true) { err, n in
                XCTFail("\(n) dropped: errno \(err)")
            }
            XCTAssertEqual(outcome.sent, 6)
            XCTAssertEqual(outcome.segmented, 0)
            XCTAssertEqual(sender.maxSegment, round == DatagramSender.maxRefusals - 1 ? 0 : size - 1)
        }
        XCTAssertEqual(sender.refusals, DatagramSender.maxRefusals)
        let got = receiver.receiveMany(expected.count, idle: 2)
        XCTAssertTrue(got == expected, "every datagram still arrives, in order")
    }
}
