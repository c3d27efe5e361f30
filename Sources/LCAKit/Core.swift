internal import CLCA

/// Facts about the lca core this program was built with, and its thread
/// setting.
public enum Core {
    /// The core's version ("0.1.0").
    public static var version: String { LCA_VERSION_STRING }

    /// True when the core was built with OpenMP. Without it everything runs
    /// on one thread and gives the same results.
    public static var hasOpenMP: Bool { lca_has_openmp() != 0 }

    /// Threads used by later calls into the core; 0 means the OpenMP
    /// default. Results do not depend on it. Ignored without OpenMP.
    public static var threads: Int {
        get { Int(lca_threads()) }
        set { lca_set_threads(Int32(clamping: newValue)) }
    }

    /// Name of the matrix-product micro-kernel chosen at run time for this
    /// CPU ("avx2-fma", "portable").
    public static var gemmKernelName: String { String(cString: lca_gemm_kernel_name()) }
}
