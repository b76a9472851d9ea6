// dist-internal: MPI handles and the check macro. Included only by src/dist/*.cpp.
#pragma once
#include <mpi.h>

#include <string>

#include "dist/comm.h"

namespace xpand::dist {

// Throws xpand::Error naming the MPI call, its error string, file and line.
void mpi_check(int rc, const char* call, const char* file, int line);
#define XPAND_MPI(call) ::xpand::dist::mpi_check((call), #call, __FILE__, __LINE__)

// The `mpi` backend over `comm` (taken over: freed with the communicator). `label` names the
// group in messages ("group 0 (world ranks 0-1)"); world_ranks maps group rank -> world rank.
CommPtr comm_mpi(MPI_Comm comm, const std::string& label, std::vector<int> world_ranks, double timeout_s);

}  // namespace xpand::dist
