import Foundation
@testable import LCAKit
import XCTest

/// Figure 8's statistic on inputs with known answers: a hand-computed
/// enumeration, the hypergeometric tail against a brute-force sum,
/// identical series (p ≈ 0) and independent noise (p roughly uniform).
final class SyncTests: XCTestCase {
    typealias S = PeakSynchronisation

    func testPeaksAreStrictLocalMinimaBelowTheMedian() {
        // median of {3,1,2,0,5,-1,4} is 2; minima at 1 (1), 3 (0), 5 (-1)
        XCTAssertEqual(S.peaks([3, 1, 2, 0, 5, -1, 4]), [1, 3, 5])
        // the minimum at 2 equals the median (4): not below it
        XCTAssertEqual(S.peaks([0, 5, 4, 5, 0]), [])
        // a plateau is not a strict minimum; the ends are never peaks
        XCTAssertEqual(S.peaks([-9, 2, 1, 1, 2, 3, -9]), [])
        XCTAssertEqual(S.peaks([1, 2]), [])
        XCTAssertEqual(S.median([4, 1, 3, 2]), 2.5)
    }

    func testExactEnumerationByHand() {
        // T = 6, A = {1, 3}, B = {1, 4}, w = 0: shifting A by s gives
        // {1+s, 3+s} mod 6; against B: s=0 → 1 (1), s=1 → 1 (4), s=2 → 0,
        // s=3 → 1 (4), s=4 → 1 (1), s=5 → 0. Observed 1; 4 of 6 shifts ≥ 1.
        XCTAssertEqual(S.shiftCounts(peaksA: [1, 3], peaksB: [1, 4], iterations: 6, window: 0), [1, 1, 0, 1, 1, 0])
        XCTAssertEqual(S.exactShiftP(peaksA: [1, 3], peaksB: [1, 4], iterations: 6, window: 0), 4.0 / 6.0)
        // T = 10, A = {2, 7}, B = {8}, w = 1: B covers {7, 8, 9}; a = 2 lands
        // there for s ∈ {5, 6, 7}, a = 7 for s ∈ {0, 1, 2}: c_s = 1 at those
        // six shifts, 0 elsewhere; observed 1, p = 6/10.
        XCTAssertEqual(S.shiftCounts(peaksA: [2, 7], peaksB: [8], iterations: 10, window: 1), [1, 1, 1, 0, 0, 1, 1, 1, 0, 0])
        XCTAssertEqual(S.exactShiftP(peaksA: [2, 7], peaksB: [8], iterations: 10, window: 1), 0.6)
        // Circular cover: w = 1 around 0 covers 9, 0, 1.
        XCTAssertEqual(S.coincidences([9, 1, 5], covered: S.covered([0], iterations: 10, window: 1)), 2)
        // Word boundaries: T = 130 (three words), compare with a direct count.
        let a = [0, 5, 63, 64, 70, 127, 129], b = [1, 64, 65, 100, 128]
        for w in [0, 2] {
            let counts = S.shiftCounts(peaksA: a, peaksB: b, iterations: 130, window: w)
            for s in 0..<130 {
                let direct = a.filter { x in b.contains { y in
                    let d = abs((x + s) % 130 - y)
                    return min(d, 130 - d) <= w
                } }.count
                XCTAssertEqual(counts[s], direct, "s \(s) w \(w)")
            }
        }
    }

    func testHypergeometricTailAgainstBruteForce() {
        func choose(_ n: Int, _ k: Int) -> Double {
            guard k >= 0, k <= n else { return 0 }
            var r = 1.0
            for i in 0..<k { r = r * Double(n - i) / Double(i + 1) }
            return r
        }
        var worst = 0.0
        for n in 0...16 {
            for k in 0...n {
                for d in 0...n {
                    for c in 0...(d + 1) {
                        var brute = 0.0
                        for j in c...max(c, d) { brute += choose(k, j) * choose(n - k, d - j) / choose(n, d) }
                        let (p, l) = S.hypergeometricTail(population: n, successes: k, draws: d, atLeast: c)
                        worst = max(worst, abs(p - brute) / max(brute, 1e-300))
                        XCTAssertEqual(p, brute, accuracy: 1e-11 * max(1, brute), "N \(n) K \(k) n \(d) k \(c)")
                        if brute > 0 { XCTAssertEqual(l, log10(brute), accuracy: 1e-9) }
                    }
                }
            }
        }
        print("hypergeometric tail: worst relative difference from the brute-force sum \(worst)")
        // Far below the smallest double: finite log, p = 0, no NaN.
        let (p, l) = S.hypergeometricTail(population: 100_000, successes: 30_000, draws: 30_000, atLeast: 30_000)
        XCTAssertEqual(p, 0)
        XCTAssertTrue(l.isFinite && l < -10_000, "\(l)")
        // At or below the smallest possible count: p = 1.
        XCTAssertEqual(S.hypergeometricTail(population: 100, successes: 60, draws: 60, atLeast: 20).p, 1)
    }

    private func noise(_ t: Int, seed: UInt64) -> [Double] {
        var rng = SplitMix64(state: seed)
        return (0..<t).map { _ in Double(rng.next() >> 11) / Double(1 << 53) - 0.5 }
    }

    func testIdenticalSeriesAreSynchronised() {
        let t = 2000
        let x = noise(t, seed: 7)
        let r = S.analyse(names: ["a", "b", "c"], series: [x, x, x], options: .init(shifts: 1000))
        XCTAssertGreaterThan(r.peaks[0].count, 300)
        for pair in r.pairs {
            XCTAssertEqual(pair.coincidences, pair.peaksA)
            XCTAssertEqual(pair.pShift, 1 / Double(t), "the floor of the exact enumeration")
            XCTAssertLessThan(pair.log10PHypergeometric, -6)
            XCTAssertLessThan(pair.pHypergeometric, 1e-6)
        }
        let whole = try! XCTUnwrap(r.wholeSet)
        XCTAssertEqual(whole.statistic, 6 * r.peaks[0].count)
        XCTAssertEqual(whole.p, 1 / 1001.0, "the floor of 1000 draws")
    }

    /// Under independence every p is (super-)uniform: for each decile α the
    /// share of 200 seeds with p ≤ α is within 0.12 of α (3.4 standard
    /// deviations of a share of 200 at α = 0.5), and never above α + 0.12.
    func testIndependentNoiseGivesUniformP() {
        let seeds = 200, t = 300
        var shift: [Double] = [], hyper: [Double] = [], whole: [Double] = []
        for seed in 0..<seeds {
            let series = (0..<3).map { noise(t, seed: UInt64(1000 * seed + $0)) }
            let r = S.analyse(names: ["a", "b", "c"], series: series, options: .init(shifts: 200, seed: UInt64(seed)))
            shift.append(r.pairs[0].pShift!)
            hyper.append(r.pairs[0].pHypergeometric)
            whole.append(r.wholeSet!.p)
        }
        for (name, ps) in [("exact shift", shift), ("hypergeometric", hyper), ("whole-set random shifts", whole)] {
            var worst = 0.0
            for d in 1...9 {
                let alpha = Double(d) / 10
                let share = Double(ps.filter { $0 <= alpha }.count) / Double(seeds)
                worst = max(worst, abs(share - alpha))
                XCTAssertEqual(share, alpha, accuracy: 0.12, "\(name): share of p ≤ \(alpha)")
            }
            print("\(name): largest |share(p ≤ α) − α| over the deciles \(worst)")
        }
    }

    func testWholeSetStatisticCountsOrderedPairs() {
        // three tensors: A = {1, 5}, B = {1, 7}, C = {5, 7}, T = 10, w = 0:
        // c(A,B)=1, c(A,C)=1, c(B,C)=1 and symmetric: S = 6.
        var count = [Int32](repeating: 0, count: 10), mark = count
        XCTAssertEqual(S.wholeSetStatistic([[1, 5], [1, 7], [5, 7]], shift: [0, 0, 0], iterations: 10, window: 0, count: &count, mark: &mark), 6)
        XCTAssertEqual(count, [Int32](repeating: 0, count: 10), "scratch left zero")
        // w = 1 and B shifted by 1 (B = {2, 8}): A's 1 is within 1 of B's 2,
        // A's 5 of nothing in B; c(A,B) = 1, c(B,A) = 1; c(A,C): 5 → 1;
        // c(C,A) = 1; c(B,C): 8 near 7 → 1; c(C,B): 7 near 8 → 1. S = 6.
        XCTAssertEqual(S.wholeSetStatistic([[1, 5], [1, 7], [5, 7]], shift: [0, 1, 0], iterations: 10, window: 1, count: &count, mark: &mark), 6)
        XCTAssertEqual(mark, [Int32](repeating: 0, count: 10))
    }
}
