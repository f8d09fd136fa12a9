// libFuzzer entry point for the PROXY protocol v2 header parser that `accept_proxy_protocol`
// runs on every datagram from a trusted proxy. Built by `make fuzz` with
// Sources/UDPRelayDatapath/ProxyHeaderParser.swift alone (it depends on Glibc only).

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyProtocol(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // libFuzzer's buffer is exactly `size` bytes under AddressSanitizer: a read past the
    // datagram is reported.
    var source = sockaddr_in6()
    source.sin6_family = 0xFFFF
    let length = withUnsafeMutableBytes(of: &source) { ProxyHeaderParser.parse(UnsafeRawPointer(data), count: size, source: $0.baseAddress!) }
    if length == ProxyHeaderParser.malformed { return 0 }
    precondition(length >= 16 && length <= size, "header length \(length) outside 16...\(size)")
    let command = data[12] & 0x0F
    switch Int32(source.sin6_family) {
    case 0:
        precondition(command == 0, "no client from a PROXY command")
    case AF_INET:
        precondition(command == 1 && data[13] == 0x12 && length >= 28, "INET client from a header that cannot carry one")
    case AF_INET6:
        precondition(command == 1 && data[13] == 0x22 && length >= 52, "INET6 client from a header that cannot carry one")
    default:
        preconditionFailure("source family \(source.sin6_family) for a header the parser accepted")
    }
    return 0
}
