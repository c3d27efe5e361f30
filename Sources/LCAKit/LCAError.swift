import Foundation
internal import CLCA

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The one error type of LCAKit: failures of the lca core, of LCAKit
/// itself and of reading a log.
///
/// `code` is the kind of failure (the core's status); `kind` the log
/// reader's finer name for a log that cannot be read (`.badMagic`, …);
/// `message` says what was expected and what was found; `path` and `offset`
/// name the file and the byte where the problem is, when there is one
/// (a core failure names its file inside `message`, as `lca_last_error`
/// writes it); `systemError` is `errno` for system failures.
///
/// ```swift
/// do { _ = try LogStream(path: "x.log") }
/// catch let error as LCAError where error.kind == .badMagic { print(error) }  // "x.log: byte 0: expected …"
/// ```
public struct LCAError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure: the core's `lca_status`, with one named static
    /// member per status.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The numeric `lca_status` value.
        public let rawValue: Int32
        /// Wraps a numeric status.
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// A value outside its documented range.
        public static let invalidArgument = Code(rawValue: Int32(LCA_ERR_INVALID_ARGUMENT.rawValue))
        /// Memory could not be allocated.
        public static let outOfMemory = Code(rawValue: Int32(LCA_ERR_OUT_OF_MEMORY.rawValue))
        /// Opening, reading or writing a file failed.
        public static let io = Code(rawValue: Int32(LCA_ERR_IO.rawValue))
        /// A file's bytes are not what its format says.
        public static let format = Code(rawValue: Int32(LCA_ERR_FORMAT.rawValue))
        /// Names, shapes or sizes do not fit the model or the data.
        public static let mismatch = Code(rawValue: Int32(LCA_ERR_MISMATCH.rawValue))
        /// A valid request that this build cannot do.
        public static let unsupported = Code(rawValue: Int32(LCA_ERR_UNSUPPORTED.rawValue))
        /// A loss or gradient became NaN or infinite.
        public static let numeric = Code(rawValue: Int32(LCA_ERR_NUMERIC.rawValue))
        /// A call made at the wrong time.
        public static let state = Code(rawValue: Int32(LCA_ERR_STATE.rawValue))

        /// The core's short phrase for this status ("format error").
        public var description: String {
            String(cString: lca_status_string(lca_status(rawValue: UInt32(bitPattern: rawValue))))
        }
    }

    /// What is wrong with a log that cannot be read (with code `.io` for
    /// `.unreadable`, `.format` otherwise).
    public struct Kind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// A short name of the kind ("bad magic").
        public let rawValue: String
        /// Wraps a kind name.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The file could not be opened or read.
        public static let unreadable = Kind(rawValue: "unreadable")
        /// The first 8 bytes are not the LCA log magic.
        public static let badMagic = Kind(rawValue: "bad magic")
        /// A format version this reader does not know.
        public static let unsupportedVersion = Kind(rawValue: "unsupported version")
        /// The file ends inside the preamble or the JSON header.
        public static let truncatedHeader = Kind(rawValue: "truncated header")
        /// The JSON header does not parse or does not describe a valid layout.
        public static let badHeader = Kind(rawValue: "bad header")
        /// The preamble's record size differs from the header's, or from the
        /// size its fields add up to.
        public static let recordSizeMismatch = Kind(rawValue: "record size mismatch")
        /// The log holds fewer complete records than the run needs.
        public static let missingRecords = Kind(rawValue: "missing records")
        /// A record whose iteration does not follow the previous record's
        /// (garbage appended, two logs concatenated).
        public static let badRecord = Kind(rawValue: "bad record")
        /// epochs × batches per epoch does not fit in the iteration count.
        public static let tooManyIterations = Kind(rawValue: "too many iterations")
        /// The kind's name.
        public var description: String { rawValue }
    }

    /// The kind of failure.
    public let code: Code
    /// The log reader's name for the problem, for errors reading a log.
    public let kind: Kind?
    /// What was expected, and what was found (from `lca_last_error()` for
    /// core failures).
    public let message: String
    /// The file the problem is in ("-" for standard input), when known
    /// apart from the message.
    public let path: String?
    /// The byte offset in `path` where the problem was found.
    public let offset: Int?
    /// `errno` as it was right after the failing call, when it was a system
    /// error; 0 otherwise. Used to recognise a closed pipe.
    public let systemError: Int32

    /// Makes an error.
    public init(code: Code, kind: Kind? = nil, message: String, path: String? = nil, offset: Int? = nil,
                systemError: Int32 = 0) {
        self.code = code
        self.kind = kind
        self.message = message
        self.path = path
        self.offset = offset
        self.systemError = systemError
    }

    /// "path: byte N: message", "path: message", or the message (the status
    /// phrase when the message is empty).
    public var description: String {
        let text = message.isEmpty ? code.description : message
        guard let path else { return text }
        return offset.map { "\(path): byte \($0): \(text)" } ?? "\(path): \(text)"
    }

    /// True when the failure was a write to a pipe whose reader has gone
    /// (EPIPE): a command should then stop quietly.
    public var isBrokenPipe: Bool {
        guard code == .io else { return false }
        if systemError == EPIPE { return true }
        return message.contains(String(cString: strerror(EPIPE)))
    }

    /// An invalid-argument error raised by LCAKit itself.
    static func invalid(_ message: String) -> LCAError {
        LCAError(code: .invalidArgument, message: message)
    }

    /// A log that cannot be read: `kind` at byte `offset` of `path`.
    static func log(_ kind: Kind, path: String, offset: Int, _ message: String, systemError: Int32 = 0) -> LCAError {
        LCAError(code: kind == .unreadable ? .io : .format, kind: kind, message: message, path: path,
                 offset: offset, systemError: systemError)
    }
}

/// The one place where a core status becomes a thrown error. Every call into
/// the core that can fail goes through here.
@inline(__always)
func check(_ status: lca_status) throws {
    if status == LCA_OK { return }
    let savedErrno = errno
    let detail = String(cString: lca_last_error())
    throw LCAError(code: LCAError.Code(rawValue: Int32(status.rawValue)), message: detail,
                   systemError: savedErrno)
}

extension LCAError {
    /// Plain text for a Foundation file error, never "NSCocoaErrorDomain
    /// error 512": the POSIX error it wraps (strerror), else what the
    /// Cocoa code means, else what the system says when `path` is tried
    /// for `writing` (or reading) directly.
    public static func fileSystemText(_ error: Error, path: String? = nil, writing: Bool = false) -> String {
        var current: NSError? = error as NSError
        while let nsError = current {
            if nsError.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(nsError.code))) }
            current = nsError.userInfo[NSUnderlyingErrorKey] as? NSError
        }
        let nsError = error as NSError
        if nsError.domain == NSCocoaErrorDomain {
            let posix: [Int: Int32] = [4: ENOENT, 260: ENOENT, 257: EACCES, 513: EACCES, 516: EEXIST,
                                       640: ENOSPC, 642: EROFS, 263: EFBIG]
            if let code = posix[nsError.code] { return String(cString: strerror(code)) }
        }
        if let path, let code = probe(path, writing: writing) { return String(cString: strerror(code)) }
        if nsError.domain == NSCocoaErrorDomain {
            return nsError.code >= 512 && nsError.code < 640 ? "cannot write" : "cannot read"
        }
        return "\(error)"
    }

    /// The errno of creating, writing or reading `path` (or its nearest
    /// existing ancestor for a folder to be made) directly; nil when that
    /// works.
    private static func probe(_ path: String, writing: Bool) -> Int32? {
        var info = stat()
        if writing {
            // the first component that does not exist must be creatable in its parent
            var url = URL(fileURLWithPath: path)
            while stat(url.path, &info) != 0 {
                let parent = url.deletingLastPathComponent()
                if parent.path == url.path { break }
                if stat(parent.path, &info) == 0 {
                    if (info.st_mode & S_IFMT) != S_IFDIR { return ENOTDIR }
                    return access(parent.path, W_OK) == 0 ? nil : errno
                }
                url = parent
            }
            if (info.st_mode & S_IFMT) == S_IFDIR { return access(url.path, W_OK) == 0 ? nil : errno }
            return nil
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return errno }
        defer { close(fd) }
        var byte: UInt8 = 0
        return read(fd, &byte, 1) < 0 ? errno : nil
    }
}
