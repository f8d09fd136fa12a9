// libFuzzer entry point for the configuration parser (lexer, value parsers, schema, cross checks).
// Built by `make fuzz` together with Sources/UDPRelayConfig/*.swift as one module:
//   swiftc -parse-as-library -sanitize=fuzzer,address ...
// Any input must give either a Configuration or ConfigErrors whose every error names the file;
// a crash, a trap or a sanitizer report is a bug.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // The raw bytes, as a file is read: CR, NUL, a BOM and invalid UTF-8 reach the lexer.
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    do {
        let c = try ConfigLoader.parse(bytes: bytes, file: "fuzz.ini")
        // A parsed configuration must satisfy the invariants the daemon relies on.
        precondition(!c.listeners.isEmpty, "a configuration without listeners")
        precondition(!c.listeners.contains { $0.listen.isEmpty }, "listener without addresses")
        precondition(Set(c.listeners.map(\.name)).count == c.listeners.count, "duplicate listener names")
        for l in c.listeners {
            precondition((1...65535).contains(l.maxDatagram))
            for a in l.listen { precondition(a.ip.mappedIPv4 == nil, "IPv4-mapped listen address") }
            // No relay reaches one of its own listen addresses.
            if l.mode.isRelay {
                for u in l.upstreams { if let u = u.literal { precondition(!l.listen.contains(u), "self relay \(u)") } }
            }
        }
        // The same text parses the same way again (no hidden state).
        precondition((try? ConfigLoader.parse(bytes: bytes, file: "fuzz.ini")) == c, "parse is not deterministic")
    } catch {
        precondition(!error.errors.isEmpty, "empty error list")
        precondition(error.errors.count <= ConfigLimits.maxReportedErrors + 1, "more errors kept than the limit")
        precondition(error.total >= error.errors.count, "total below the errors kept")
        for e in error.errors {
            precondition(e.description.hasPrefix("fuzz.ini:"), "error without file: \(e)")
            precondition(e.message.unicodeScalars.count <= 1100, "message not shortened")
        }
    }
    return 0
}
