import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The synchronisation of learning peaks across weight tensors (the paper's
/// third finding; figure 8 of `lca report`).
///
/// Definitions (also stated on the page):
/// - A tensor's series is its per-iteration LCA x_0 … x_{T−1} (one value per
///   record, in record order).
/// - A **peak** is an iteration t with 1 ≤ t ≤ T − 2, x_t < x_{t−1},
///   x_t < x_{t+1} (a strict local minimum: the most helping moment of its
///   neighbourhood) and x_t < median(x) (the median of all T values; for
///   even T the mean of the two middle ones). The first and last iteration
///   are never peaks.
/// - Positions are taken circularly (mod T); d(a, b) = min(|a − b|, T − |a − b|).
/// - The **coincidences** c(A, B) are the peaks a of A with a peak b of B at
///   d(a, b) ≤ w (w = `window`, 0 by default: the same iteration). For
///   w = 0, c(A, B) = |P_A ∩ P_B| = c(B, A).
/// - The **whole-set statistic** S = Σ over ordered pairs A ≠ B of c(A, B).
///
/// Three p-values, each P(statistic ≥ observed) under its own null:
/// - `pShift` (per pair, exact): A's peaks circularly shifted by each of the
///   T shifts s = 0 … T − 1 (s = 0 is the observed one), B kept; p is the
///   share of shifts with c ≥ the observed c, so it is never below 1/T.
/// - `pWholeSet` (all the weight tensors together, three or more): every
///   tensor's peaks shifted by its own independent uniform random shift,
///   `shifts` draws from SplitMix64 seeded by `seed`; p = (1 + draws with
///   S ≥ observed S) / (draws + 1), never below 1/(draws + 1).
/// - `pHypergeometric` (per pair, analytic): A's n peaks as n draws without
///   replacement from the T iterations, of which K (the iterations within w
///   of a peak of B) are successes; the upper tail P(X ≥ c), summed in log
///   space (no overflow or underflow however long the run; `log10P` keeps
///   the exponent when p is below the smallest double). This null ignores
///   that peaks are never adjacent, so it is an approximation beside the
///   two shift nulls.
public enum PeakSynchronisation {
    public struct Options: Sendable, Hashable {
        /// Coincidence window w (iterations, ≥ 0).
        public var window: Int
        /// Draws of the whole-set random-shift null.
        public var shifts: Int
        /// Seed of the whole-set null.
        public var seed: UInt64
        /// Work budget of the exact enumeration, in 64-bit word operations
        /// (T × ⌈T/64⌉ per pair); pairs beyond it get no exact p (said on
        /// the page). The whole-set draws are reduced to fit the same budget.
        public var budget: Int

        public init(window: Int = 0, shifts: Int = 10_000, seed: UInt64 = 1, budget: Int = 200_000_000) {
            self.window = window
            self.shifts = shifts
            self.seed = seed
            self.budget = budget
        }
    }

    /// One pair (A, B): A's peaks are the draws, B's the successes.
    public struct Pair: Sendable, Hashable {
        public var a: Int, b: Int
        public var peaksA: Int, peaksB: Int
        /// Iterations within w of a peak of B (K of the hypergeometric).
        public var coveredB: Int
        public var coincidences: Int
        /// n·K/T: the hypergeometric mean.
        public var expected: Double
        /// Exact circular-shift p (nil: over the budget).
        public var pShift: Double?
        public var pHypergeometric: Double
        public var log10PHypergeometric: Double
    }

    public struct WholeSet: Sendable, Hashable {
        public var statistic: Int
        /// Mean of S over the draws.
        public var nullMean: Double
        public var p: Double
        public var shifts: Int
        public var seed: UInt64
    }

    public struct Result: Sendable {
        public var names: [String]
        public var iterations: Int
        public var window: Int
        /// Peak positions per tensor (record indices 0 … T − 1).
        public var peaks: [[Int]]
        public var pairs: [Pair]
        /// nil when fewer than three tensors.
        public var wholeSet: WholeSet?
        /// Pairs left without an exact p (budget).
        public var pairsWithoutExact: Int
    }

    // MARK: peaks

    /// The median of `x` (mean of the two middle values for an even count).
    public static func median(_ x: [Double]) -> Double {
        guard !x.isEmpty else { return 0 }
        let s = x.sorted()
        let n = s.count
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }

    /// The peaks of a series (see the type's documentation).
    public static func peaks(_ x: [Double]) -> [Int] {
        guard x.count >= 3 else { return [] }
        let m = median(x)
        var out: [Int] = []
        for t in 1..<(x.count - 1) where x[t] < x[t - 1] && x[t] < x[t + 1] && x[t] < m {
            out.append(t)
        }
        return out
    }

    // MARK: bit sets

    /// Bits 0 … T − 1, set at the iterations within w (circularly) of a peak.
    static func covered(_ peaks: [Int], iterations t: Int, window w: Int) -> [UInt64] {
        var bits = [UInt64](repeating: 0, count: (t + 63) / 64)
        let w = min(w, t / 2)
        for p in peaks {
            for d in -w...w {
                let q = ((p + d) % t + t) % t
                bits[q >> 6] |= 1 << UInt64(q & 63)
            }
        }
        return bits
    }

    static func popcount(_ bits: [UInt64]) -> Int { bits.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// c(A, B) for A's peaks against B's covered set.
    static func coincidences(_ peaksA: [Int], covered: [UInt64]) -> Int {
        peaksA.reduce(0) { $0 + Int((covered[$1 >> 6] >> UInt64($1 & 63)) & 1) }
    }

    /// c_s for every circular shift s = 0 … T − 1 of A's peaks (a → a + s)
    /// against B's covered set: popcount(A & rotate(cov, s)) word by word.
    public static func shiftCounts(peaksA: [Int], peaksB: [Int], iterations t: Int, window: Int) -> [Int] {
        guard t > 0 else { return [] }
        let words = (t + 63) / 64
        var a = [UInt64](repeating: 0, count: words)
        for p in peaksA { a[p >> 6] |= 1 << UInt64(p & 63) }
        let cov = covered(peaksB, iterations: t, window: window)
        // d = cov twice over (bits 0 … 2T − 1) and a spare word, so that the
        // T bits from any s are words of d read at a bit offset.
        var d = [UInt64](repeating: 0, count: 2 * words + 2)
        for q in 0..<(2 * t) {
            let r = q % t
            if (cov[r >> 6] >> UInt64(r & 63)) & 1 == 1 { d[q >> 6] |= 1 << UInt64(q & 63) }
        }
        var out = [Int](repeating: 0, count: t)
        a.withUnsafeBufferPointer { a in
            d.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { out in
                    for s in 0..<t {
                        let w0 = s >> 6, bit = UInt64(s & 63)
                        var n = 0
                        if bit == 0 {
                            for i in 0..<words { n &+= (a[i] & d[w0 + i]).nonzeroBitCount }
                        } else {
                            for i in 0..<words {
                                n &+= (a[i] & ((d[w0 + i] >> bit) | (d[w0 + i + 1] << (64 - bit)))).nonzeroBitCount
                            }
                        }
                        out[s] = n
                    }
                }
            }
        }
        return out
    }

    /// Exact circular-shift p: the share of the T shifts (the observed
    /// s = 0 among them) with at least the observed coincidences.
    public static func exactShiftP(peaksA: [Int], peaksB: [Int], iterations t: Int, window: Int) -> Double {
        let c = shiftCounts(peaksA: peaksA, peaksB: peaksB, iterations: t, window: window)
        guard let observed = c.first else { return 1 }
        return Double(c.filter { $0 >= observed }.count) / Double(t)
    }

    // MARK: hypergeometric tail

    static func logChoose(_ n: Int, _ k: Int) -> Double {
        lgamma(Double(n) + 1) - lgamma(Double(k) + 1) - lgamma(Double(n - k) + 1)
    }

    /// P(X ≥ k) for X hypergeometric: `draws` from `population` items of which
    /// `successes` are successes. Returns (p, log10 p); summed in log space.
    public static func hypergeometricTail(population N: Int, successes K: Int, draws n: Int, atLeast k: Int) -> (p: Double, log10: Double) {
        let lo = max(0, n + K - N), hi = min(n, K)
        if k <= lo { return (1, 0) }
        if k > hi { return (0, -Double.infinity) }
        let base = logChoose(N, n)
        var terms: [Double] = []
        terms.reserveCapacity(hi - k + 1)
        for j in k...hi { terms.append(logChoose(K, j) + logChoose(N - K, n - j) - base) }
        let m = terms.max()!
        let logP = min(0, m + log(terms.reduce(0) { $0 + exp($1 - m) }))
        return (exp(logP), logP / log(10))
    }

    // MARK: whole set

    /// S = Σ over ordered pairs A ≠ B of c(A, B), each tensor's peaks shifted
    /// by `shift[i]`; `count` is scratch of T zeros (left zero).
    static func wholeSetStatistic(_ peaks: [[Int]], shift: [Int], iterations t: Int, window w: Int,
                                  count: inout [Int32], mark: inout [Int32]) -> Int {
        // count[q] = tensors with q within w of one of their (shifted) peaks;
        // mark[q] = last tensor that counted q (so a tensor counts q once).
        let w = min(w, t / 2)
        var s = 0
        count.withUnsafeMutableBufferPointer { count in
            mark.withUnsafeMutableBufferPointer { mark in
                for (i, p) in peaks.enumerated() {
                    for a in p {
                        for d in -w...w {
                            var q = a + shift[i] + d
                            q %= t
                            if q < 0 { q += t }
                            if mark[q] != Int32(i + 1) { mark[q] = Int32(i + 1); count[q] += 1 }
                        }
                    }
                }
                for (i, p) in peaks.enumerated() {
                    for a in p {
                        let q = (a + shift[i]) % t
                        s += Int(count[q]) - 1
                    }
                }
            }
        }
        // reset the touched entries
        for (i, p) in peaks.enumerated() {
            for a in p {
                for d in -w...w {
                    var q = a + shift[i] + d
                    q %= t
                    if q < 0 { q += t }
                    count[q] = 0
                    mark[q] = 0
                }
            }
        }
        return s
    }

    /// The whole-set statistic and its random-shift p.
    public static func wholeSet(_ peaks: [[Int]], iterations t: Int, window: Int, shifts: Int, seed: UInt64) -> WholeSet {
        var count = [Int32](repeating: 0, count: t), mark = count
        let zero = [Int](repeating: 0, count: peaks.count)
        let observed = wholeSetStatistic(peaks, shift: zero, iterations: t, window: window, count: &count, mark: &mark)
        var rng = SplitMix64(state: seed)
        var atLeast = 0, sum = 0.0
        var shift = zero
        for _ in 0..<shifts {
            for i in shift.indices { shift[i] = rng.below(t) }
            let s = wholeSetStatistic(peaks, shift: shift, iterations: t, window: window, count: &count, mark: &mark)
            sum += Double(s)
            if s >= observed { atLeast += 1 }
        }
        return WholeSet(statistic: observed, nullMean: shifts > 0 ? sum / Double(shifts) : 0,
                        p: Double(1 + atLeast) / Double(shifts + 1), shifts: shifts, seed: seed)
    }

    // MARK: all together

    /// Peaks, every pair (A before B in `names` order, A's peaks the
    /// draws), and the whole set.
    public static func analyse(names: [String], series: [[Double]], options: Options = Options()) -> Result {
        let t = series.map(\.count).min() ?? 0
        let found: [[Int]] = series.map { Self.peaks(Array($0.prefix(t))) }
        let w = max(0, options.window)
        let words = (t + 63) / 64
        let perPair = t * words
        let m = found.count
        let pairCount = m * (m - 1) / 2
        let exactPairs = perPair == 0 ? pairCount : min(pairCount, options.budget / max(1, perPair))
        var pairs: [Pair] = []
        var k = 0
        for i in 0..<m {
            for j in (i + 1)..<max(i + 1, m) where j < m {
                let cov = covered(found[j], iterations: max(t, 1), window: w)
                let coveredB = t > 0 ? popcount(cov) : 0
                let c = t > 0 ? coincidences(found[i], covered: cov) : 0
                let h = hypergeometricTail(population: t, successes: coveredB, draws: found[i].count, atLeast: c)
                let exact: Double? = t > 0 && k < exactPairs ? exactShiftP(peaksA: found[i], peaksB: found[j], iterations: t, window: w) : nil
                pairs.append(Pair(a: i, b: j, peaksA: found[i].count, peaksB: found[j].count, coveredB: coveredB,
                                  coincidences: c, expected: t > 0 ? Double(found[i].count) * Double(coveredB) / Double(t) : 0,
                                  pShift: exact, pHypergeometric: h.p, log10PHypergeometric: h.log10))
                k += 1
            }
        }
        var whole: WholeSet?
        if m >= 3 && t > 0 {
            let peakTotal: Int = found.reduce(0) { $0 + $1.count }
            let perDraw: Int = peakTotal * (2 * min(w, t / 2) + 1) * 3 + m
            let draws: Int = min(options.shifts, max(100, options.budget / 4 / max(1, perDraw)))
            whole = wholeSet(found, iterations: t, window: w, shifts: draws, seed: options.seed)
        }
        return Result(names: names, iterations: t, window: w, peaks: found, pairs: pairs, wholeSet: whole,
                      pairsWithoutExact: pairCount - exactPairs)
    }
}
