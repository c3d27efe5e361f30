/* CMPI: the system MPI library (Open MPI's libopenmpi-dev, found through
 * pkg-config ompi-c), for the trait MPI of Package.swift (docs/mpi.md). */
#include <mpi.h>

/* MPI_COMM_WORLD is a cast address in Open MPI's header, which Swift does
 * not import: the calls the lca command makes, in C. */
static inline int lca_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
}
static inline int lca_mpi_finalize(void) { return MPI_Finalize(); }
static inline int lca_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
