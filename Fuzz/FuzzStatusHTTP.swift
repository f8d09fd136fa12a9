// libFuzzer entry point for the status endpoint's whole HTTP request path, as a connection
// sees it: ConnectionGuard (head limits, pipelining cap, HTTP/2 refusal, half-close, timers),
// NIO's HTTP/1.1 decoder and pipelining handler, StatusHTTPHandler and the routes rendering
// /status, /metrics, / and /healthz. Built by `make fuzz` from Sources/UDPRelayStatus/*.swift
// and this file as one module, against NIO built with the same sanitizers.
//
// Input layout: byte 0 = flags (bit 0: the client half-closes after sending; bit 1: output is
// blocked until the end; bits 2-3: how many pieces the rest is cut into, 1 to 4), then the bytes
// the client sends. Invariants checked for every input:
// - what the server sends is a sequence of complete HTTP/1.1 responses (status line,
//   Content-Length matching the body, unless HEAD), or HTTP/2 frames after a preface;
// - every connection ends: after the documented timeouts (5 s head, 30 s idle or no progress,
//   2 s linger) the channel is closed, whatever the client sent.

import Dispatch
import NIOCore
import NIOEmbedded
import NIOHTTP1

struct FuzzSource: StatusSource {
    func snapshot() -> StatusSnapshot {
        StatusSnapshot(
            daemon: DaemonInfo(version: "0.0.0-fuzz", pid: 1, startTime: 1_795_600_000),
            config: ConfigInfo(path: "/fuzz.ini", generation: 1, loadedAt: 1_795_600_000,
                               lastReload: ReloadInfo(ok: false, at: 1_795_600_001, errors: ["fuzz.ini:1: <b>x</b>"])),
            listeners: [
                ListenerStatus(name: "dns", mode: "echo", addresses: ["127.0.0.1:53"],
                               received: Traffic(packets: 5, bytes: 500), sent: Traffic(packets: 5, bytes: 500),
                               workers: [WorkerStatus(address: "127.0.0.1:53"), WorkerStatus(address: "127.0.0.1:53")]),
                ListenerStatus(name: "relay", mode: "forward", addresses: ["0.0.0.0:5353"],
                               sessions: SessionCounters(active: 1),
                               upstreams: [UpstreamStatus(address: "127.0.0.1:53", state: "down", failures: 2)]),
            ],
            time: 1_795_600_010
        )
    }

    func problems() async -> [String] { [] }
}

enum FuzzHarness {
    static let routes = StatusRoutes(source: FuzzSource(), history: RateHistory(), counters: { ServerCounters() },
                                     monotonicNow: { 0 })

    static func run(_ input: [UInt8]) async throws {
        let loop = NIOAsyncTestingEventLoop()
        let watched = WeakBox()
        try await exercise(input, loop: loop, watched: watched)
        // The answer to a health probe completes on a Swift task the harness cannot join: wait
        // (bounded) until the connection's objects are freed, so LeakSanitizer sees no leak
        // unless there is one.
        var waits = 0
        while (watched.value != nil || watched.pipeline != nil) && waits < 2000 {
            await loop.run()
            try await Task.sleep(for: .microseconds(500))
            waits += 1
        }
        await loop.shutdownGracefully()
    }

    /// The connection's channel and pipeline (which the probe's pending callback keeps alive
    /// through the handler context), held weakly.
    final class WeakBox {
        weak var value: NIOAsyncTestingChannel?
        weak var pipeline: ChannelPipeline?
    }

    static func exercise(_ input: [UInt8], loop: NIOAsyncTestingEventLoop, watched: WeakBox) async throws {
        guard let flags = input.first else { return }
        let halfClose = flags & 1 != 0
        let blocked = flags & 2 != 0
        let pieces = Int((flags >> 2) & 3) + 1
        let body = Array(input.dropFirst())

        let channel = NIOAsyncTestingChannel(loop: loop)
        watched.value = channel
        watched.pipeline = channel.pipeline
        try await loop.executeInContext {
            try ServerState.addHTTPHandlers(channel.pipeline.syncOperations, limits: StatusLimits(), routes: routes,
                                            requestAnswered: {})
        }
        try await channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 40000)).get()
        if blocked {
            channel.isWritable = false
            channel.pipeline.fireChannelWritabilityChanged()
        }
        let size = (body.count + pieces - 1) / max(pieces, 1)
        var start = 0
        while start < body.count, channel.isActive {
            let end = min(body.count, start + max(size, 1))
            // Errors (a parse error closing the channel) are part of the behaviour under test.
            _ = try? await channel.writeInbound(ByteBuffer(bytes: body[start..<end]))
            start = end
        }
        if halfClose && channel.isActive { channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        if blocked {
            channel.isWritable = true
            channel.pipeline.fireChannelWritabilityChanged()
        }
        // Let the health probe (an async task) complete, then run every timer out (twice: an
        // answer that completed late arms new timers). 80 s covers every documented timeout
        // chained (head 5 s or idle/stall 30 s, then the linger of 2 s).
        for _ in 0..<2 {
            for _ in 0..<3 {
                await Task.yield()
                await loop.run()
            }
            await loop.advanceTime(by: .seconds(40))
        }
        precondition(!channel.isActive, "connection still open 80 s after the client's last byte")

        var out: [UInt8] = []
        while let data = try await channel.readOutbound(as: IOData.self) {
            if case .byteBuffer(var b) = data { out += b.readBytes(length: b.readableBytes) ?? [] }
        }
        check(out, input: body)
    }

    /// The server's bytes are complete HTTP/1.1 responses one after another (or HTTP/2 frames).
    static func check(_ out: [UInt8], input: [UInt8]) {
        if out.isEmpty { return }
        if input.starts(with: HTTP2Preface.preface) && !out.starts(with: Array("HTTP/1.1 ".utf8)) {
            precondition(out.count >= 9 && out[3] == 0x4, "HTTP/2 refusal must start with SETTINGS")
            return
        }
        let anyHEAD = find(Array("HEAD".utf8), in: input[...]) != nil
        var rest = out[...]
        var index = 0
        while !rest.isEmpty {
            precondition(rest.starts(with: Array("HTTP/1.1 ".utf8)), "response \(index) does not start with a status line")
            guard let end = find(Array("\r\n\r\n".utf8), in: rest) else { preconditionFailure("response \(index): head not terminated") }
            let head = String(decoding: rest[rest.startIndex..<end], as: UTF8.self).lowercased()
            let code = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            precondition((200...599).contains(code), "response \(index): status \(code)")
            let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int(String($0.dropFirst("content-length:".count)).trimmingCharacters(in: " ")) }
            precondition(length != nil, "response \(index) without Content-Length")
            let bodyStart = end + 4
            var bodyLength = length!
            if anyHEAD {
                // A HEAD answer announces the length and sends no body: accept either reading.
                let afterHead = rest[bodyStart...]
                if afterHead.isEmpty || afterHead.starts(with: Array("HTTP/1.1 ".utf8)) { bodyLength = 0 }
            }
            precondition(rest.endIndex - bodyStart >= bodyLength, "response \(index): body shorter than Content-Length")
            rest = rest[(bodyStart + bodyLength)...]
            index += 1
        }
    }

    static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Int? {
        guard hay.count >= needle.count else { return nil }
        var i = hay.startIndex
        while i <= hay.endIndex - needle.count {
            if hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        String(drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStatusHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let done = DispatchSemaphore(value: 0)
    Task {
        do { try await FuzzHarness.run(input) } catch { preconditionFailure("harness error: \(error)") }
        done.signal()
    }
    done.wait()
    return 0
}
