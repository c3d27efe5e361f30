// swift-tools-version:6.1
//
// lca: trains small neural networks and measures Loss Change Allocation
// while they train. A C11 core (target CLCA, sources in CCore/) does the numerics; LCAKit is its Swift
// face; `lca` is the command-line tool.
import PackageDescription

// Nothing here is an unsafe flag, so that another package can depend on
// LCAKit by version (`.package(url: …, from: "0.1.0")`; SwiftPM refuses
// unsafeFlags in such a dependency).
//
// - Threads: SwiftPM builds the core without -fopenmp, so threads.c uses its
//   pthreads back end, which needs no flag (docs/threads.md). The Makefile
//   builds the OpenMP back end when it finds libomp; both give the same bytes.
// - Optimisation: SwiftPM compiles C at -O0 in debug builds and -O2 in
//   release builds, with no safe setting to change that. A consumer's release
//   build is fast; in a debug build pass `-Xcc -O2` (tools/test does, so the
//   project's own tests run an optimised core). No CPU-specific flags are
//   needed: GEMM kernels are chosen at run time.
// - C11: cLanguageStandard below.

// Release builds of the executables link the Swift runtime and Foundation
// statically on Linux: dynamically linked, they cost about 8 MB of resident
// memory at start-up (relocations, ICU tables), a large share of the tool's
// footprint on a small net. This is an unsafe flag, but only on executable
// targets, which a package that depends on the product LCAKit never builds,
// and SwiftPM checks only the targets a dependant uses
// (tools/consumer-test checks that it still builds).
#if os(Linux)
let staticRuntime: [SwiftSetting] = [.unsafeFlags(["-static-stdlib"], .when(configuration: .release))]
let staticRuntimeLink: [LinkerSetting] = [.unsafeFlags(["-static-stdlib"], .when(configuration: .release))]
#else
let staticRuntime: [SwiftSetting] = []
let staticRuntimeLink: [LinkerSetting] = []
#endif

let package = Package(
    name: "lca",
    products: [
        .library(name: "LCAKit", targets: ["LCAKit"]),
        .executable(name: "lca", targets: ["lca"]),
        .executable(name: "freeze-last-layer", targets: ["freeze-last-layer"]),
        .executable(name: "lr-sweep", targets: ["lr-sweep"]),
    ],
    // MPI (docs/mpi.md): `swift build -c release --traits MPI` builds the
    // core against the system's Open MPI (pkg-config ompi-c; apt
    // libopenmpi-dev) and `mpirun -np N lca train …` splits every
    // evaluation pass over N ranks, with the same bytes. Not a default: a
    // build without the trait needs no MPI and links none. The trait's
    // settings are defines and a target dependency, none of them unsafe.
    traits: [
        .trait(name: "MPI", description: "Data-parallel evaluation over MPI ranks (Open MPI, pkg-config ompi-c)"),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CMPI",
            path: "Sources/CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"]), .brew(["open-mpi"])]
        ),
        .target(
            name: "CLCA",
            dependencies: [.target(name: "CMPI", condition: .when(traits: ["MPI"]))],
            path: "CCore",
            publicHeadersPath: "include",
            cSettings: [
                .headerSearchPath("."),
                .define("_GNU_SOURCE"),
                .define("LCA_MPI", .when(traits: ["MPI"])),
            ],
            linkerSettings: [.linkedLibrary("z"), .linkedLibrary("m"), .linkedLibrary("pthread")]
        ),
        .target(
            name: "LCAKit",
            dependencies: ["CLCA"],
            path: "Sources/LCAKit"
        ),
        .executableTarget(
            name: "lca",
            dependencies: [
                "LCAKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .target(name: "CMPI", condition: .when(traits: ["MPI"])),
            ],
            path: "Sources/lca",
            swiftSettings: staticRuntime + [.define("LCA_MPI", .when(traits: ["MPI"]))],
            linkerSettings: staticRuntimeLink
        ),
        // Examples a user would copy; the tests run both on the digits.
        .executableTarget(name: "freeze-last-layer", dependencies: ["LCAKit"], path: "Examples/FreezeLastLayer",
                          swiftSettings: staticRuntime, linkerSettings: staticRuntimeLink),
        .executableTarget(name: "lr-sweep", dependencies: ["LCAKit"], path: "Examples/LearningRateSweep",
                          swiftSettings: staticRuntime, linkerSettings: staticRuntimeLink),
        .testTarget(
            name: "LCAKitTests",
            dependencies: ["LCAKit", "lca", "freeze-last-layer", "lr-sweep"],
            path: "Tests/LCAKitTests"
        ),
    ],
    cLanguageStandard: .c11
)
