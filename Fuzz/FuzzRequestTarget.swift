// libFuzzer entry point for the status endpoint's hand-written request-target parsing
// (path, query pairs, percent-decoding). NIO parses the rest of the request.
// Built by `make fuzz` with Sources/UDPRelayStatus/{RequestTarget,Formatting}.swift.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequestTarget(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let (path, query) = RequestTarget.split(text) {
        // Bytes, not Characters: a decoded combining mark after "/" joins the slash's grapheme.
        precondition(path.utf8.first == UInt8(ascii: "/") || text.hasPrefix("http"), "path must start with '/'")
        for (key, value) in query { _ = key.utf8.count + value.utf8.count }
    }
    // The JSON string escaper must always produce a quoted string with no raw control bytes.
    let escaped = Format.json(text)
    // Compare scalars, not Characters: a combining mark after the opening quote joins its grapheme.
    precondition(escaped.unicodeScalars.first == "\"" && escaped.unicodeScalars.last == "\"", "JSON string not quoted")
    precondition(!escaped.utf8.contains { $0 < 0x20 }, "raw control byte in JSON string")
    return 0
}
