import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// When the log of a run is fsynced (`lca train --fsync`).
///
/// Records are written with one `write(2)` each and nothing is buffered in
/// the process, so a killed process (SIGKILL, the OOM killer) loses at most
/// the record in flight whatever the policy; the policy decides what
/// survives a power loss or a kernel crash.
public enum LogSync: String, Sendable, Hashable, CaseIterable {
    /// Never fsync the log (the system writes it back in its own time).
    case never
    /// Fsync the log at every save, before the resume state is written, so
    /// the state never runs ahead of the log on disk (the default).
    case checkpoint
    /// Fsync after every record (slowest).
    case record
}

/// Writing the small files of a run folder so that a kill at any moment
/// leaves either the old file or the new one, never a part.
enum AtomicFile {
    /// Writes `data` to `path.tmp`, fsyncs it, renames it over `path` and
    /// fsyncs the folder.
    static func write(_ data: Data, to path: String) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw LCAError(code: .io, message: "\(path): cannot create \(tmp): \(String(cString: strerror(errno)))")
        }
        var failure: String?
        data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < buffer.count {
                let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = "cannot write it (via \(tmp)): \(String(cString: strerror(errno)))"
                    return
                }
                offset += n
            }
        }
        if failure == nil, fsync(fd) != 0 {
            failure = "cannot fsync it (via \(tmp)): \(String(cString: strerror(errno)))"
        }
        if close(fd) != 0, failure == nil {
            failure = "cannot write it (via \(tmp)): \(String(cString: strerror(errno)))"
        }
        if failure == nil, rename(tmp, path) != 0 {
            failure = "cannot rename \(tmp) over it: \(String(cString: strerror(errno)))"
        }
        if let failure {
            unlink(tmp)
            throw LCAError(code: .io, message: "\(path): \(failure); the previous file, if any, is unchanged")
        }
        syncFolder(of: path)
    }

    /// Fsyncs the folder holding `path` (makes a rename durable; failures
    /// lose nothing already written and are not reported).
    static func syncFolder(of path: String) {
        let folder = (path as NSString).deletingLastPathComponent
        let fd = open(folder.isEmpty ? "." : folder, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }
}

/// The exclusive lock a run holds on its folder while it writes it: an
/// `flock` on `lca.lock` in the folder, released when the process ends
/// (however it ends), so a stale lock file never blocks a later run.
final class RunFolderLock {
    private let fd: Int32

    /// Takes the lock at once or throws `.state` naming the folder.
    init(folder: RunFolder) throws {
        let path = folder.lock
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw LCAError(code: .io, message: "\(path): cannot create the run folder's lock file: \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let error = errno
            close(fd)
            if error == EWOULDBLOCK {
                throw LCAError(code: .state, message: "\(folder.path): another lca process is writing this run folder (it holds \(path)); wait for it to end, or choose another folder")
            }
            throw LCAError(code: .io, message: "\(path): cannot lock: \(String(cString: strerror(error)))")
        }
        self.fd = fd
    }

    deinit { close(fd) }
}
