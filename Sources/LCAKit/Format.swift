import Foundation

/// Number and table formatting shared by the summaries.
enum Format {
    /// "%.6e", or "nan"/"inf" spelled plainly.
    static func scientific(_ value: Double) -> String {
        value.isFinite ? String(format: "%.6e", value) : String(value)
    }

    /// "%.6f".
    static func fixed(_ value: Double, digits: Int = 6) -> String {
        value.isFinite ? String(format: "%.\(digits)f", value) : String(value)
    }

    /// A fraction as "52.31%".
    static func percent(_ fraction: Double) -> String {
        fraction.isFinite ? String(format: "%.2f%%", fraction * 100) : "-"
    }

    /// "1.5 MiB", "812 KiB".
    static func bytes(_ count: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : String(format: "%.1f", value) + " " + units[unit]
    }

    /// "1.23 s", "2 min 03 s".
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "-" }
        if seconds < 60 { return String(format: "%.2f s", seconds) }
        let whole = Int(seconds.rounded())
        if whole < 3600 { return String(format: "%d min %02d s", whole / 60, whole % 60) }
        return String(format: "%d h %02d min", whole / 3600, (whole % 3600) / 60)
    }

    /// Rows of cells as aligned columns (two spaces apart); a rule under
    /// the first row and, when given, before row `ruleBefore`.
    static func table(_ rows: [[String]], rightAligned: [Bool], ruleBefore: Int? = nil) -> String {
        guard let columns = rows.map(\.count).max(), columns > 0 else { return "" }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        var lines: [String] = []
        for (r, row) in rows.enumerated() {
            if r == 1 || (ruleBefore != nil && r == ruleBefore && r != 1) { lines.append(rule) }
            var cells: [String] = []
            for i in 0..<columns {
                let cell = i < row.count ? row[i] : ""
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                let right = i < rightAligned.count && rightAligned[i]
                cells.append(right ? pad + cell : cell + pad)
            }
            var line = cells.joined(separator: "  ")
            while line.hasSuffix(" ") { line.removeLast() }
            lines.append(line)
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Hand-written JSON pieces for outputs whose key order and number format
/// are part of the interface.
enum JSONText {
    /// A JSON string literal: quote and backslash escaped, every other
    /// control character as \u00XX (the rule of the core's log header,
    /// json.c), everything else as it is.
    static func string(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// A double with 17 significant digits (round-trippable); null for NaN
    /// and infinities, which JSON cannot hold.
    static func number(_ value: Double) -> String {
        value.isFinite ? String(format: "%.17g", value) : "null"
    }
}
