/* Plain MPI all-reduce timing, without xpand: the reference that tells Open MPI's own speed on a
 * machine from the overhead of xpand's communicator (docs/DISTRIBUTED.md, Benchmarks).
 *   mpicc -O2 bench/mpi_allreduce_reference.c -o /tmp/mpi_allreduce_reference
 *   mpirun -np 2 /tmp/mpi_allreduce_reference
 * For 4 MiB to 128 MiB of float32: 5 blocking MPI_Allreduce and 5 MPI_Iallreduce + MPI_Test loops,
 * in place; rank 0 prints the mean time and size/time. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (long n = 1L << 20; n <= (1L << 25); n *= 2) {
    float* buf = malloc((size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) buf[i] = 1.0f;
    for (int nonblocking = 0; nonblocking < 2; nonblocking++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t = MPI_Wtime();
      for (int rep = 0; rep < 5; rep++) {
        if (nonblocking) {
          MPI_Request req;
          int done = 0;
          MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
          while (!done) MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        } else {
          MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
      }
      t = (MPI_Wtime() - t) / 5;
      if (rank == 0)
        printf("%10ld bytes %-11s %9.2f ms %6.2f GB/s\n", n * 4, nonblocking ? "Iallreduce" : "Allreduce", t * 1e3,
               (double)n * 4 / t * 1e-9);
    }
    free(buf);
  }
  MPI_Finalize();
  return 0;
}
