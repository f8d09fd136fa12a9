import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The checkout's root folder (this file is Tests/TestSupport/Repository.swift).
public let repositoryRoot: URL = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url
}()

/// Runs `/usr/bin/env arguments...` in `directory`; returns the exit status and its output:
/// stdout and stderr together, or stdout alone (stderr discarded) when `withStderr` is false.
/// Bounded: the command (only it, by PID) is killed after `timeout` seconds.
public func runCommand(
    _ arguments: [String], in directory: URL? = nil, withStderr: Bool = true,
    timeout: Double = 240
) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    if let directory { p.currentDirectoryURL = directory }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = withStderr ? out : FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let watchdog = DispatchWorkItem { [pid = p.processIdentifier] in kill(pid, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    watchdog.cancel()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
