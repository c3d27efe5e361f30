internal import CLCA

/// Facts about the lca core this program was built with, and its thread
/// setting.
public enum Core {
    /// The core's version ("0.1.0").
    public static var version: String { LCA_VERSION_STRING }

    /// The thread back end the core was built with: "pthreads" (a pool of
    /// POSIX threads; what SwiftPM builds) or "openmp" (a core compiled with
    /// -fopenmp). Both give the same results.
    public static var threadBackend: String { String(cString: lca_thread_backend()) }

    /// Threads used by later calls into the core; 0 (the default) means the
    /// first number of OMP_NUM_THREADS if set, else the CPUs this process may
    /// run on. Results do not depend on it.
    public static var threads: Int {
        get { Int(lca_threads()) }
        set { lca_set_threads(Int32(clamping: newValue)) }
    }

    /// The kernel family (matrix product and convolution) this process
    /// uses: "avx512", "avx2" or "portable"; the best this CPU runs unless
    /// the environment variable `LCA_KERNEL` names another.
    public static var gemmKernelName: String { String(cString: lca_gemm_kernel_name()) }

    /// Nil when `LCA_KERNEL` is unset, empty or names a kernel family this
    /// CPU runs (avx512, avx2, portable); otherwise why it cannot be used.
    /// (The core would fall back to the automatic choice: a program that
    /// honours `LCA_KERNEL` refuses to run instead, as the CLI does.)
    public static var kernelRequestError: String? {
        lca_kernel_check() == LCA_OK ? nil : String(cString: lca_last_error())
    }

    /// The largest number of Simpson sub-intervals the integrator refines to
    /// (`LCA_MAX_SUBINTERVALS`).
    public static var maxSubintervals: Int { Int(LCA_MAX_SUBINTERVALS) }

    /// True when `n` is a sub-interval count the integrator uses (a power of
    /// two from 2 to `maxSubintervals`), asked of the core's
    /// `lca_subintervals_valid`, the one definition of that set.
    public static func isValidSubintervalCap(_ n: Int) -> Bool {
        n >= 0 && n <= Int(UInt32.max) && lca_subintervals_valid(UInt32(n)) != 0
    }

    /// The valid sub-interval counts in words: "2, 4, 8, 16 or 32".
    public static var subintervalChoices: String {
        let counts = (1...maxSubintervals).filter(isValidSubintervalCap).map(String.init)
        return counts.count < 2 ? counts.joined() : counts.dropLast().joined(separator: ", ") + " or " + counts.last!
    }
}
