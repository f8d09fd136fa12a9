/// The one place the version is set; the package, `--version`, `/status` and `/metrics` use it.
enum BuildInfo {
    static let version = "0.1.0"
}
