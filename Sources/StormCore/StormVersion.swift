/// The version every STORM program reports (`--version`, the gateway registry, `/metrics`).
public enum StormVersion {
    public static let current = "0.1.0"
}
