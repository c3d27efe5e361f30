// TEMPORARY (branch report2): the log-version-2 fields that the logv2 branch
// adds to the readers, under the names agreed for the merge, returning
// "absent" so that every log reads as version 1 here. Delete this file at
// the merge: the real properties then take over (a redeclaration error
// until it is deleted).

extension ViewRecord {
    /// v2: the floor below which |LCA| counts as zero (nil for v1).
    public var lcaFloor: Double? { nil }
    /// v2: Σ of the negative LCA per tensor (empty for v1).
    public var tensorHelping: [Double] { [] }
    /// v2: Σ of the positive LCA per tensor (empty for v1).
    public var tensorHurting: [Double] { [] }
    /// v2: parameters that did not move, per tensor (empty for v1).
    public var tensorUnmoved: [UInt64] { [] }
    /// v2: T × 2 × 30 counts of |LCA| per bin, tensor-major, helping then
    /// hurting (empty for v1).
    public var tensorHistogram: [UInt32] { [] }
}

extension LogReader {
    /// The log's format version.
    public var formatVersion: Int { header.version }
    /// v2: the 29 finite histogram edges (nil for v1).
    public var histogramEdges: [Double]? { nil }
}
