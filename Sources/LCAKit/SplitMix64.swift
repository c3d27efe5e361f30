// SplitMix64.swift: the one seeded pseudo-random generator of LCAKit and its tests.

/// SplitMix64 (Steele, Lea, Flood 2014): a small seeded generator whose stream is fixed
/// here (not the standard library's), so the draws are the same on every platform: figure
/// 8's random shifts, and the tests' seeded data and moments.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0 ..< n, by rejection (no modulo bias).
    mutating func below(_ n: Int) -> Int {
        let n = UInt64(n)
        let limit = UInt64.max - UInt64.max % n
        while true {
            let v = next()
            if v < limit { return Int(v % n) }
        }
    }
}
