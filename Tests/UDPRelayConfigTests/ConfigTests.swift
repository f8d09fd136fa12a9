import TestSupport
import XCTest

@testable import UDPRelayConfig

final class ConfigTests: XCTestCase, ConfigFileTests {
    /// Path of the annotated example shipped in the repo.
    static let examplePath = repositoryRoot.appendingPathComponent("config/udprelayd.ini").path

    func testExampleFileParses() throws {
        let c = try ConfigLoader.load(path: Self.examplePath)
        XCTAssertEqual(c.listeners.map(\.name), ["echo", "echo-small", "relay"])
        XCTAssertEqual(c.listeners[2].mode, .forward)
        XCTAssertEqual(c.listeners[2].upstreams.map(\.description), ["127.0.0.1:7008"])
        XCTAssertEqual(c.listeners[0].listen.map(\.description), ["127.0.0.1:7007", "[::1]:7007"])
        XCTAssertEqual(c.listeners[1].maxDatagram, 1500)
        XCTAssertEqual(c.daemon.logLevel, .info)
        XCTAssertEqual(c.status.listen?.description, "127.0.0.1:9180")
    }

    /// The example is installed as /etc/udprelayd/udprelayd.ini and started by `apt install`:
    /// on a host with a public address it must not be an open reflector.
    /// Every listener binds loopback addresses only, or limits both who and how fast.
    func testExampleFileServesOnlyThisHostOrIsLimited() throws {
        let c = try ConfigLoader.load(path: Self.examplePath)
        XCTAssertFalse(c.listeners.isEmpty)
        for l in c.listeners {
            let loopbackOnly = l.listen.allSatisfy { $0.ip.isLoopback }
            let limited = !l.protection.allow.isEmpty && l.protection.rateLimit != nil
            XCTAssertTrue(loopbackOnly || limited, "[listener \(l.name)] listens on \(l.listen) without allow and rate_limit")
        }
        XCTAssertEqual(c.status.listen?.ip.isLoopback, true, "the status endpoint of the example stays on loopback")
        // The wider example is there, commented, for whoever needs it.
        let text = try String(contentsOfFile: Self.examplePath, encoding: .utf8)
        XCTAssertTrue(text.contains("\n; listen = 0.0.0.0:7007, [::]:7007\n"), "the commented wildcard example")
    }

    func testDefaults() throws {
        let c = try parse("[listener a]\nlisten = 127.0.0.1:9\n")
        XCTAssertEqual(c.daemon.logLevel, .info)
        XCTAssertEqual(c.status.listen, Defaults.statusListen)
        XCTAssertEqual(c.status.allow, Defaults.allNetworks)
        XCTAssertEqual(c.listeners[0].mode, .echo)
        XCTAssertEqual(c.listeners[0].maxDatagram, 65535)
    }

    func testStatusOffAndWildcardAllowDefault() throws {
        let listener = "[listener a]\nlisten = 127.0.0.1:9\n"
        XCTAssertNil(try parse("[status]\nlisten = off\n" + listener).status.listen)
        let c = try parse("[status]\nlisten = [::]:9180\n" + listener)
        XCTAssertEqual(c.status.allow, Defaults.loopbackNetworks)
        let d = try parse("[status]\nlisten = 0.0.0.0:9180\nallow = 10.0.0.0/8, 2001:db8::/32\n" + listener)
        XCTAssertEqual(d.status.allow.map(\.description), ["10.0.0.0/8", "2001:db8::/32"])
    }

    func testCommentsQuotesAndWhitespace() throws {
        let c = try parse(
            """
            # hash comment
            ; semicolon comment
              [daemon]   ; trailing comment
            log_level=debug#not-a-comment-without-space
            [listener a]
            listen = 127.0.0.1:9
            """.replacingOccurrences(of: "#not-a-comment-without-space", with: "  # comment"))
        XCTAssertEqual(c.daemon.logLevel, .debug)
        XCTAssertEqual(try INILexer.parseValue("\"a;b # c\" ; comment"), "a;b # c")
        XCTAssertEqual(try INILexer.parseValue("\"\\x41\\n\""), "A\n")
    }

    func testUnits() throws {
        XCTAssertEqual(try Values.size("64KiB", in: 1...1 << 20), 65536)
        XCTAssertEqual(try Values.size("1400", in: 1...65535), 1400)
        XCTAssertEqual(try Values.size("2K", in: 1...65535), 2048)
        XCTAssertThrowsError(try Values.size("1MiB", in: 1...65535))
        XCTAssertThrowsError(try Values.size("12kb", in: 1...65535))
        XCTAssertEqual(try Values.size("64k", in: 1...1 << 20), 65536)
        XCTAssertEqual(try Values.size("63kib", in: 1...65535), 64512)
        XCTAssertEqual(try Values.duration("30S"), .seconds(30))
        XCTAssertEqual(try Values.duration("250ms"), .milliseconds(250))
        XCTAssertEqual(try Values.duration("30s"), .seconds(30))
        XCTAssertEqual(try Values.duration("5m"), .seconds(300))
        XCTAssertEqual(try Values.duration("1h"), .seconds(3600))
        XCTAssertEqual(try Values.duration("7"), .seconds(7))
        XCTAssertThrowsError(try Values.duration("0s"))
        XCTAssertThrowsError(try Values.duration("-1s"))
        XCTAssertThrowsError(try Values.duration("soon"))
        XCTAssertEqual(try Values.bool("Yes"), true)
        XCTAssertEqual(try Values.bool("off"), false)
        XCTAssertThrowsError(try Values.bool("maybe"))
    }

    func testAddresses() throws {
        XCTAssertEqual(try SocketAddress(parsing: "192.0.2.1:53").description, "192.0.2.1:53")
        XCTAssertEqual(try SocketAddress(parsing: "[2001:db8::1]:53").description, "[2001:db8::1]:53")
        XCTAssertEqual(try SocketAddress(parsing: "[::]:0").port, 0)
        XCTAssertThrowsError(try SocketAddress(parsing: "2001:db8::1:53"))
        XCTAssertThrowsError(try SocketAddress(parsing: "192.0.2.1"))
        XCTAssertThrowsError(try SocketAddress(parsing: "192.0.2.1:65536"))
        XCTAssertThrowsError(try SocketAddress(parsing: "example.com:53"))
        let net = try CIDR(parsing: "10.1.2.3/8")
        XCTAssertEqual(net.description, "10.0.0.0/8")
        XCTAssertTrue(net.contains(IPAddress(literal: "10.200.0.1")!))
        XCTAssertFalse(net.contains(IPAddress(literal: "11.0.0.1")!))
        XCTAssertFalse(net.contains(IPAddress(literal: "::ffff:10.0.0.1")!))
        let v6 = try CIDR(parsing: "2001:db8::/33")
        XCTAssertTrue(v6.contains(IPAddress(literal: "2001:db8:7fff::1")!))
        XCTAssertFalse(v6.contains(IPAddress(literal: "2001:db8:8000::1")!))
    }

    // MARK: errors, each with its line, section and key

    func testUnknownKeySuggestsClosest() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmax_datagarm = 10\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(e[0].line, 3)
        XCTAssertEqual(e[0].key, "max_datagarm")
        XCTAssertEqual(e[0].description, "t.ini:3: [listener a] max_datagarm: unknown key (did you mean 'max_datagram'?)")
    }

    func testRepeatedKey() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nlisten = 127.0.0.1:10\n")
        XCTAssertEqual(e.map(\.line), [3])
        XCTAssertTrue(e[0].message.contains("repeated key (first set at line 2)"), e[0].message)
    }

    func testRepeatedListenerName() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\n\n[listener a]\nlisten = 127.0.0.1:10\n")
        XCTAssertEqual(e.map(\.line), [4])
        XCTAssertTrue(e[0].description.hasPrefix("t.ini:4: [listener a]: repeated listener name 'a' (first at line 1)"), e[0].description)
    }

    func testTwoListenersOnSameAddress() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\n[listener b]\nmode = echo\nlisten = 127.0.0.1:9\n")
        XCTAssertEqual(e.map(\.line), [5])
        XCTAssertEqual(e[0].key, "listen")
        XCTAssertTrue(e[0].message.contains("127.0.0.1:9 overlaps listener 'a'"), e[0].message)
    }

    func testWildcardOverlapsSpecificAddress() {
        let e = errors("[listener a]\nlisten = 0.0.0.0:9\n[listener b]\nlisten = 127.0.0.1:9, [::1]:9\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(e[0].line, 4)
        // Different families do not overlap (IPv6 sockets are IPv6-only).
        XCTAssertNoThrow(try parse("[listener a]\nlisten = 0.0.0.0:9\n[listener b]\nlisten = [::]:9\n"))
        // Port 0 is ephemeral and never conflicts.
        XCTAssertNoThrow(try parse("[listener a]\nlisten = 127.0.0.1:0\n[listener b]\nlisten = 127.0.0.1:0\n"))
    }

    func testMissingListen() {
        let e = errors("[daemon]\nlog_level = info\n[listener a]\nmode = echo\n")
        XCTAssertEqual(e.map(\.line), [3])
        XCTAssertEqual(e[0].key, "listen")
        XCTAssertTrue(e[0].message.contains("missing required key"))
    }

    func testOutOfRangeValues() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:70000\nmax_datagram = 65536\n")
        XCTAssertEqual(e.map(\.line), [2, 3])
        XCTAssertTrue(e[0].message.contains("port must be a number from 0 to 65535"), e[0].message)
        XCTAssertTrue(e[1].message.contains("expected a size from 1 to 65535"), e[1].message)
    }

    func testUnknownModeAndLevel() {
        let e = errors("[daemon]\nlog_level = verbose\n[listener a]\nlisten = 127.0.0.1:9\nmode = ecko\n")
        XCTAssertEqual(e.map(\.line), [2, 5])
        XCTAssertTrue(e[0].message.contains("expected one of trace|debug|info|notice|warning|error|critical"))
        XCTAssertTrue(e[1].message.contains("did you mean 'echo'?"), e[1].message)
    }

    func testSyntaxErrors() {
        let e = errors("listen = 1.2.3.4:5\n[daemon\n[daemon]\njust words\n[listener]\n[listener bad!name]\n[lisener x]\n[listener ok]\nlisten =\n")
        XCTAssertEqual(e.map(\.line), [1, 2, 4, 5, 6, 7, 9])
        XCTAssertTrue(e[0].message.contains("outside of any section"))
        XCTAssertTrue(e[1].message.contains("must end with ']'"))
        XCTAssertTrue(e[2].message.contains("expected 'key = value'"))
        XCTAssertTrue(e[3].message.contains("needs a name"))
        XCTAssertTrue(e[4].message.contains("letters, digits"))
        XCTAssertTrue(e[5].message.contains("did you mean '[listener x]'?"), e[5].message)
        XCTAssertTrue(e[6].message.contains("missing value"))
    }

    func testRepeatedSection() {
        let e = errors("[daemon]\n[daemon]\n[listener a]\nlisten = 127.0.0.1:9\n")
        XCTAssertEqual(e.map(\.line), [2])
    }

    // MARK: a configuration without listeners

    func testEmptyOrListenerlessConfigurationIsAnError() {
        for text in ["", "\n\n; only comments\n", "[daemon]\nlog_level = info\n", "[status]\nlisten = 127.0.0.1:9180\n"] {
            let e = errors(text)
            XCTAssertEqual(e.count, 1, text)
            XCTAssertEqual(e.first?.line, 0, text)
            XCTAssertEqual(
                e.first?.description,
                "t.ini: no listener: a configuration needs at least one [listener NAME] section with listen = ADDRESS:PORT (an empty or truncated file is refused)"
            )
        }
        // A listener section that is itself wrong is reported as such, not as "no listener".
        let e = errors("[listener a]\nmode = echo\n")
        XCTAssertEqual(e.map(\.line), [1])
        XCTAssertTrue(e[0].message.contains("missing required key"), e[0].message)
    }

    func testUnreadableFile() {
        XCTAssertThrowsError(try ConfigLoader.load(path: "/nonexistent/udprelayd.ini")) { error in
            let e = (error as! ConfigErrors).errors
            XCTAssertEqual(e.count, 1)
            XCTAssertEqual(e[0].description, "/nonexistent/udprelayd.ini: cannot read configuration file: No such file or directory")
        }
    }

    func testEveryErrorReportedInOnePass() {
        let e = errors("[daemon]\nlog_level = x\nfoo = 1\n[listener a]\nmax_datagram = 0\n")
        XCTAssertEqual(e.map(\.line), [2, 3, 4, 5])
    }

    // MARK: bytes of the file

    func testCRLFLineEndingsReadAsLines() throws {
        let c = try parse(
            "[daemon]\r\nlog_level = debug\r\n\r\n[listener a]\r\nlisten = 127.0.0.1:9 ; comment\r\nmode = echo\r\nhealth_probe_ignored = 1\r\n"
                .replacingOccurrences(of: "health_probe_ignored = 1\r\n", with: "max_datagram = \"1500\"\r\n"))
        XCTAssertEqual(c.daemon.logLevel, .debug)
        XCTAssertEqual(c.listeners.map(\.name), ["a"])
        XCTAssertEqual(c.listeners[0].listen.map(\.description), ["127.0.0.1:9"])
        XCTAssertEqual(c.listeners[0].maxDatagram, 1500)
        // Line numbers count CRLF lines.
        let e = errors("[listener a]\r\nlisten = 127.0.0.1:9\r\nmode = ecko\r\n")
        XCTAssertEqual(e.map(\.line), [3])
        XCTAssertTrue(e[0].message.hasPrefix("expected one of echo|forward|balance|mirror, got 'ecko'"), e[0].message)
    }

    func testALeadingByteOrderMarkIsSkipped() throws {
        let c = try parse("\u{FEFF}[status]\nlisten = off\n[listener a]\nlisten = 127.0.0.1:9\n")
        XCTAssertNil(c.status.listen)
        // Anywhere else it is an error like any stray character.
        XCTAssertEqual(errors("[listener a]\nlisten = 127.0.0.1:9\n\u{FEFF}[status]\n").map(\.line), [3])
    }

    func testControlCharactersAreRefusedByName() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmode = echo\u{0}\n[listener b]\nlisten = 127.0.0.1:10\nmode = ec\rho\r\n")
        XCTAssertEqual(e.map(\.line), [3, 6])
        XCTAssertEqual(
            e[0].description,
            "t.ini:3: [listener a]: control character NUL (byte 0x00) at column 12; a configuration line is text, "
                + "and tab is the only control character it may hold (write bytes in a quoted value as \\xHH)")
        XCTAssertTrue(e[1].message.hasPrefix("control character CR (byte 0x0D) at column 10"), e[1].message)
        XCTAssertTrue(errors("[listener a]\nlisten = 127.0.0.1:9\nmode = \u{1B}[0m\n")[0].message.hasPrefix("control character ESC (byte 0x1B) at column 8"))
        XCTAssertTrue(errors("[listener a]\nlisten = 127.0.0.1:9\nmode = \u{7F}\n")[0].message.hasPrefix("control character DEL (byte 0x7F)"))
        XCTAssertTrue(errors("[listener a]\nlisten = 127.0.0.1:9\nmode = e\u{85}\n")[0].message.hasPrefix("control character U+0085 at character 9"))
        // Tabs are whitespace; bytes can still be written as escapes in quoted values.
        XCTAssertNoThrow(try parse("[listener a]\n\tlisten\t=\t127.0.0.1:9\nmode = forward\nupstream = 127.0.0.1:10\nhealth_probe = \"\\x00\\x01\"\n"))
    }

    /// Quoted values may hold any byte; a message quoting one stays one printable line.
    func testControlCharactersFromQuotedEscapesAreShownEscapedInMessages() {
        let e = errors("[listener a]\nlisten = 127.0.0.1:9\nmode = \"ec\\x00ho\"\n[listener b]\nlisten = 127.0.0.1:10\nmode = \"x\\nWARNING forged\\ty\"\n")
        XCTAssertEqual(e.map(\.line), [3, 6])
        XCTAssertTrue(e[0].message.hasPrefix("expected one of echo|forward|balance|mirror, got 'ec\\x00ho'"), e[0].message)
        XCTAssertTrue(e[1].message.hasPrefix("expected one of echo|forward|balance|mirror, got 'x\\x0aWARNING forged\\x09y'"), e[1].message)
        XCTAssertFalse(e.contains { $0.description.unicodeScalars.contains { $0.value < 0x20 } })
    }

    func testInvalidUTF8NamesTheByteAndColumn() {
        var bytes = Array("[listener a]\nlisten = 127.0.0.1:9\nmode = é".utf8)
        bytes += [0xFF, 0x0A]
        do {
            _ = try ConfigLoader.parse(bytes: bytes, file: "t.ini")
            XCTFail("invalid UTF-8 accepted")
        } catch {
            XCTAssertEqual(error.errors.map(\.description), ["t.ini:3: [listener a]: not valid UTF-8 (byte 0xFF at column 10); save the file as UTF-8"])
        }
    }

    func testIPv4MappedAddressesAreRefusedWithTheIPv4Form() {
        let e = errors(
            """
            [status]
            listen = [::ffff:127.0.0.1]:9180
            [listener a]
            listen = [::1]:7, [::ffff:127.0.0.1]:7007
            [listener b]
            listen = 127.0.0.1:0
            mode = forward
            upstream = [::ffff:192.0.2.1]:53
            """)
        XCTAssertEqual(e.map(\.line), [2, 4, 8])
        XCTAssertEqual(e[0].message, "[::ffff:127.0.0.1]:9180 is an IPv4-mapped IPv6 address; write the IPv4 form, 127.0.0.1:9180")
        XCTAssertEqual(e[1].message, "[::ffff:127.0.0.1]:7007 is an IPv4-mapped IPv6 address; write the IPv4 form, 127.0.0.1:7007")
        XCTAssertEqual(e[2].message, "[::ffff:192.0.2.1]:53 is an IPv4-mapped IPv6 address; write the IPv4 form, 192.0.2.1:53")
        XCTAssertNoThrow(try parse("[listener a]\nlisten = [::1]:7, [2001:db8::ffff:1]:7\n"))
    }

    // MARK: after a bad section header

    func testKeysAfterABadHeaderAreNotTakenForThePreviousSection() {
        let e = errors(
            """
            [listener e]
            listen = 127.0.0.1:9
            [listener f g]
            listen = 127.0.0.1:10
            mode = nonsense
            stray words
            [listener h]
            listen = 127.0.0.1:11
            [daemon
            log_level = info
            listen = 1
            """)
        XCTAssertEqual(
            e.map(\.description),
            [
                "t.ini:3: expected '[section]' or '[section name]', got '[listener f g]'; the lines up to the next section header are ignored",
                "t.ini:6: expected 'key = value', got 'stray words'",
                "t.ini:9: section header must end with ']': '[daemon'; the lines up to the next section header are ignored",
            ])
        // A bad listener header alone is not reported as "no listener".
        XCTAssertEqual(errors("[listener f g]\nlisten = 127.0.0.1:10\n").map(\.line), [1])
    }

    // MARK: a forgotten comma

    func testAMissingCommaIsReportedAsOne() {
        let e = errors(
            """
            [listener a]
            listen = 127.0.0.1:24000 [::1]:24000
            allow = 10.0.0.0/8  192.168.0.0/16
            [listener b]
            listen = 127.0.0.1:0
            mode = balance
            upstream = 127.0.0.1:24053 127.0.0.1:24054
            [status]
            listen = 127.0.0.1:9180 127.0.0.1:9181
            """)
        XCTAssertEqual(
            e.map(\.description),
            [
                "t.ini:2: [listener a] listen: missing comma between '127.0.0.1:24000' and '[::1]:24000'; separate list items with commas",
                "t.ini:3: [listener a] allow: missing comma between '10.0.0.0/8' and '192.168.0.0/16'; separate list items with commas",
                "t.ini:7: [listener b] upstream: missing comma between '127.0.0.1:24053' and '127.0.0.1:24054'; separate list items with commas",
                "t.ini:9: [status] listen: missing comma between '127.0.0.1:9180' and '127.0.0.1:9181'; separate list items with commas",
            ])
        // Spaces around commas are fine.
        XCTAssertEqual(try parse("[listener a]\nlisten = 127.0.0.1:9 ,\t[::1]:9\n").listeners[0].listen.count, 2)
    }
}
