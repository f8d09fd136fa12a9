// libFuzzer entry point for the configuration parser (lexer, value parsers, schema, cross checks).
// Built by `make fuzz` together with Sources/UDPRelayConfig/*.swift as one module:
//   swiftc -parse-as-library -sanitize=fuzzer,address ...
// Any input must give either a Configuration or ConfigErrors whose every error names the file;
// a crash, a trap or a sanitizer report is a bug.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let c = try ConfigLoader.parse(text, file: "fuzz.ini")
        // A parsed configuration must satisfy the invariants the daemon relies on.
        precondition(!c.listeners.contains { $0.listen.isEmpty }, "listener without addresses")
        precondition(Set(c.listeners.map(\.name)).count == c.listeners.count, "duplicate listener names")
        for l in c.listeners { precondition((1...65535).contains(l.maxDatagram)) }
    } catch {
        precondition(!error.errors.isEmpty, "empty error list")
        for e in error.errors { precondition(e.description.hasPrefix("fuzz.ini:"), "error without file: \(e)") }
    }
    return 0
}
