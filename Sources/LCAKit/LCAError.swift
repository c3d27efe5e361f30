internal import CLCA

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An error reported by the lca core or by LCAKit itself.
///
/// `code` is the kind of failure (the core's status); `message` is the
/// detailed text: for file errors it names the file, the byte offset and what
/// was expected.
///
/// ```swift
/// do { _ = try Dataset(source: "missing.idx") }
/// catch let error as LCAError where error.code == .io { print(error.message) }
/// ```
public struct LCAError: Error, Sendable, Equatable, CustomStringConvertible {
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

    /// The kind of failure.
    public let code: Code
    /// The detailed message (from `lca_last_error()` for core failures).
    public let message: String
    /// `errno` as it was right after the failing call, when it was a system
    /// error; 0 otherwise. Used to recognise a closed pipe.
    public let systemError: Int32

    /// Makes an error with an explicit code and message.
    public init(code: Code, message: String, systemError: Int32 = 0) {
        self.code = code
        self.message = message
        self.systemError = systemError
    }

    /// The message, or the status phrase when the message is empty.
    public var description: String { message.isEmpty ? code.description : message }

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
