import Foundation
import UDPRelayConfig

#if canImport(Glibc)
import Glibc
#endif

/// The real `udprelayd` binary run as a child process, its stderr captured line by line.
/// Tests wait for log lines (never fixed sleeps) and stop it with SIGTERM, then SIGKILL.
public final class DaemonProcess: @unchecked Sendable {
    // @unchecked: `lines` and `exitStatus` are guarded by `condition`.
    public let process = Process()
    public let configPath: String
    private let condition = NSCondition()
    private var lines: [String] = []
    private var stdoutText = ""
    private var exited = false
    private let terminated = DispatchSemaphore(value: 0)
    private var reaped = false
    /// Left when the stderr and stdout readers have seen end of file.
    private let readers = DispatchGroup()

    /// The built binary, next to the test bundle.
    /// How much slower than a plain build the daemon runs: 1, or 10 under ThreadSanitizer or
    /// AddressSanitizer (`make sanitize` sets TSAN_OPTIONS/ASAN_OPTIONS for the run). For the
    /// few tests that assert how long a user-visible operation takes.
    public static var slowdown: Double {
        let env = ProcessInfo.processInfo.environment
        return env["TSAN_OPTIONS"] != nil || env["ASAN_OPTIONS"] != nil ? 10 : 1
    }

    public static var binary: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("udprelayd")
    }

    /// Writes `config` to a temporary file and starts the daemon with it.
    ///
    /// `inheritedSocket` passes a socket the way systemd's socket activation does (fd 3,
    /// `LISTEN_FDS=1`, `LISTEN_PID` = the daemon, `LISTEN_FDNAMES=name`). `journalStream` sets
    /// `JOURNAL_STREAM` to the stderr pipe, as systemd does when stderr is the journal.
    public init(
        config: String, arguments: [String] = [], environment: [String: String] = [:],
        inheritedSocket: (fd: Int32, name: String)? = nil, journalStream: Bool = false,
        fileLimit: Int? = nil
    ) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("udprelayd-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        configPath = dir.appendingPathComponent("udprelayd.ini").path
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        process.executableURL = Self.binary
        process.arguments = ["--config", configPath] + arguments
        if let inheritedSocket {
            // Foundation closes descriptors above 2 in the child, so the socket travels as stdin
            // and a shell moves it to fd 3 and execs the daemon (keeping its PID for LISTEN_PID).
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments =
                [
                    "-c", "exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=\"$1\"; shift; exec \"$0\" \"$@\"",
                    Self.binary.path, inheritedSocket.name, "--config", configPath,
                ] + arguments
        }
        if let fileLimit {
            // prlimit sets soft and hard RLIMIT_NOFILE and execs the daemon (same PID).
            process.arguments = ["--nofile=\(fileLimit):\(fileLimit)", "--", process.executableURL!.path] + (process.arguments ?? [])
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        }
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "NOTIFY_SOCKET")
        env.removeValue(forKey: "LISTEN_FDS")
        env.removeValue(forKey: "LISTEN_PID")
        env.removeValue(forKey: "LISTEN_FDNAMES")
        env.removeValue(forKey: "JOURNAL_STREAM")
        env.removeValue(forKey: "WATCHDOG_USEC")
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let err = Pipe()
        let out = Pipe()
        process.standardError = err
        process.standardOutput = out
        if let inheritedSocket {
            process.standardInput = FileHandle(fileDescriptor: inheritedSocket.fd, closeOnDealloc: false)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        if journalStream {
            var st = stat()
            fstat(err.fileHandleForWriting.fileDescriptor, &st)
            env["JOURNAL_STREAM"] = "\(st.st_dev):\(st.st_ino)"
            process.environment = env
        }
        let terminated = self.terminated
        process.terminationHandler = { _ in terminated.signal() }
        try process.run()
        let errHandle = err.fileHandleForReading
        let outHandle = out.fileHandleForReading
        readers.enter()
        readers.enter()
        Thread.detachNewThread { [self] in
            var pending = Data()
            while true {
                let chunk = errHandle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...nl)
                    condition.lock()
                    lines.append(line)
                    condition.broadcast()
                    condition.unlock()
                }
            }
            condition.lock()
            exited = true
            condition.broadcast()
            condition.unlock()
            readers.leave()
        }
        Thread.detachNewThread { [self] in
            let data = outHandle.readDataToEndOfFile()
            condition.lock()
            stdoutText = String(decoding: data, as: UTF8.self)
            condition.unlock()
            readers.leave()
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    public var pid: Int32 { process.processIdentifier }

    /// All stderr lines so far.
    public var log: [String] {
        condition.lock()
        defer { condition.unlock() }
        return lines
    }

    public var standardOutput: String {
        condition.lock()
        defer { condition.unlock() }
        return stdoutText
    }

    /// Waits until a stderr line (at index >= `after`) contains `text`; returns it, or nil at
    /// the deadline or when stderr closes.
    @discardableResult
    public func waitForLine(containing text: String, after: Int = 0, timeout: Double = 20) -> String? {
        waitForLine(after: after, timeout: timeout) { $0.contains(text) }
    }

    /// Waits until a stderr line (at index >= `after`) satisfies `match`; returns it, or nil at
    /// the deadline or when stderr closes.
    @discardableResult
    public func waitForLine(after: Int = 0, timeout: Double = 20, where match: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        var checked = after
        while true {
            while checked < lines.count {
                if match(lines[checked]) { return lines[checked] }
                checked += 1
            }
            if exited { return nil }
            if !condition.wait(until: deadline) { return nil }
        }
    }

    /// Waits for the "ready" line and returns the bound addresses per listener name.
    public func waitUntilReady(timeout: Double = 20) throws -> [String: [SocketAddress]] {
        guard waitForLine(containing: " ready", timeout: timeout) != nil else {
            throw DaemonError.notReady(log.joined(separator: "\n"))
        }
        var out: [String: [SocketAddress]] = [:]
        for line in log where line.contains(" listening ") {
            guard let name = Self.field("listener.name", in: line),
                let address = Self.field("listener.address", in: line),
                let parsed = try? SocketAddress(parsing: address)
            else { continue }
            out[name, default: []].append(parsed)
        }
        return out
    }

    /// Value of `key=value` in a log line.
    public static func field(_ key: String, in line: String) -> String? {
        for part in line.split(separator: " ") where part.hasPrefix(key + "=") {
            return String(part.dropFirst(key.count + 1))
        }
        return nil
    }

    /// Sends a signal to the child (only to this child, by PID).
    public func signal(_ sig: Int32) {
        if process.isRunning { kill(process.processIdentifier, sig) }
    }

    /// Waits for exit up to `timeout` seconds, then SIGKILLs; returns the exit status, or nil if
    /// it had to be killed.
    @discardableResult
    public func waitForExit(timeout: Double = 10) -> Int32? {
        if !reaped {
            if terminated.wait(timeout: .now() + timeout) == .timedOut {
                kill(process.processIdentifier, SIGKILL)
                terminated.wait()
                reaped = true
                return nil
            }
            reaped = true
        }
        process.waitUntilExit()
        // The child is gone; let the readers take in the last of its output.
        _ = readers.wait(timeout: .now() + 5)
        return process.terminationStatus
    }

    /// SIGTERM, then wait; returns the exit status (nil if it had to be killed).
    @discardableResult
    public func stop(timeout: Double = 10) -> Int32? {
        signal(SIGTERM)
        return waitForExit(timeout: timeout)
    }
}

public enum DaemonError: Error, CustomStringConvertible {
    case notReady(String)
    public var description: String {
        switch self {
        case .notReady(let log): "daemon did not become ready; its log:\n\(log)"
        }
    }
}
