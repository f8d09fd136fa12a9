import UDPRelayConfig
import XCTest

/// Tests of configuration text: `parse` a file that must load, `errors` of one that must not.
/// A test class adopts it to get both (file name "t.ini" in messages).
public protocol ConfigFileTests {}

extension ConfigFileTests {
    public func parse(_ text: String) throws -> Configuration {
        try ConfigLoader.parse(text, file: "t.ini")
    }

    /// `text` after a `[status] listen = off` section, parsed: a datapath's configuration.
    public func configuration(_ text: String) throws -> Configuration {
        try parse("[status]\nlisten = off\n" + text)
    }

    /// What loading `text` threw; fails the test when it loaded.
    public func thrownErrors(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigErrors {
        do {
            _ = try ConfigLoader.parse(text, file: "t.ini")
            XCTFail("expected errors for:\n\(text)", file: file, line: line)
            return ConfigErrors([])
        } catch {
            return error
        }
    }

    public func errors(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [ConfigError] {
        thrownErrors(text, file: file, line: line).errors
    }
}
