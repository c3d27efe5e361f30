// swift-tools-version:6.0
//
// lca: trains small neural networks and measures Loss Change Allocation
// while they train. A C11 core (target CLCA, sources in CCore/) does the numerics; LCAKit is its Swift
// face; `lca` is the command-line tool.
import Foundation
import PackageDescription

// OpenMP is optional. Debian's libomp-dev puts omp.h beside clang 14's
// headers and libomp5.so in the multiarch library folder; when both are there
// the core is built with -fopenmp, otherwise it runs on one thread (and gives
// the same bytes). Same detection as the Makefile.
let ompInclude = "/usr/lib/llvm-14/lib/clang/14.0.6/include"
let ompLibraryDirectories = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
let fileManager = FileManager.default
let ompLibraryDirectory: String? = fileManager.fileExists(atPath: ompInclude + "/omp.h")
    ? ompLibraryDirectories.first { fileManager.fileExists(atPath: $0 + "/libomp5.so") }
    : nil

// The core runs numerics even in debug builds (tests train real nets), so it
// is always optimised. No CPU-specific flags: kernels are chosen at run time.
var coreFlags = ["-O2", "-std=c11"]
var coreLinkerSettings: [LinkerSetting] = [.linkedLibrary("z"), .linkedLibrary("m")]
if let directory = ompLibraryDirectory {
    coreFlags += ["-fopenmp", "-I" + ompInclude]
    coreLinkerSettings += [.unsafeFlags(["-L" + directory]), .linkedLibrary("omp5")]
}

// Release builds link the Swift runtime and Foundation statically on Linux:
// dynamically linked, they cost about 8 MB of resident memory at start-up
// (relocations, ICU tables), a large share of the tool's footprint on a
// small net, and users on small machines are the ones who count it. Debug
// builds (the tests) link dynamically, which is faster to build.
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
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(
            name: "CLCA",
            path: "CCore",
            publicHeadersPath: "include",
            cSettings: [
                .headerSearchPath("."),
                .define("_GNU_SOURCE"),
                .unsafeFlags(coreFlags),
            ],
            linkerSettings: coreLinkerSettings
        ),
        .target(
            name: "LCAKit",
            dependencies: ["CLCA"],
            path: "Sources/LCAKit",
            swiftSettings: staticRuntime
        ),
        .executableTarget(
            name: "lca",
            dependencies: [
                "LCAKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/lca",
            swiftSettings: staticRuntime,
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
    ]
)
