import Foundation

/// The one JSON convention of lca's outputs: **snake_case keys** everywhere
/// (`lca train --json`, `lca show --json`, a run folder's `config.json`,
/// `lca attribute --json`, the log's JSON header, the CSV and JSON Lines
/// column names), keys sorted, infinities and NaN as the strings "inf",
/// "-inf" and "nan". Every Swift JSON output is made by `encoder()`, and
/// what lca reads back by `decoder()`.
///
/// The Swift types keep their camelCase property names; the conversion
/// happens here, once. The decoder also accepts the camelCase keys that
/// lca wrote before this convention (a key without an underscore is left
/// as it is, and matches the property's name), so the `config.json` of an
/// older run folder still resumes.
///
/// The outputs written a line at a time, in a fixed key order, without
/// `Codable` (`lca attribute --json`, `lca export --to jsonl`, `lca show
/// --follow --json`), spell the same snake_case keys by hand; the
/// JSONNamingTests check every output against the convention.
public enum JSONFormat {
    /// The encoder of every JSON output: snake_case keys, sorted, pretty
    /// printed (`pretty: false`: one line), slashes unescaped.
    public static func encoder(pretty: Bool = true) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                                          : [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    /// The decoder of what `encoder()` wrote (and of the camelCase keys of
    /// older files).
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}
