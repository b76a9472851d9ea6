// GoogleTest main for the multi-rank tests: initialises MPI (a world of one without mpirun), runs
// every test on every rank, and finalizes. ctest runs this binary under mpirun with 1, 2 and 3
// ranks; tests needing more ranks than the job has skip.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "core/log.h"
#include "dist/context.h"
#include "mpi_env.h"

namespace {
std::unique_ptr<xpand::dist::Group> g_world;

// Ranks other than 0 print only their failures, with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};
}  // namespace

xpand::dist::Group& xpand::test::world() { return *g_world; }

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto& ctx = xpand::dist::Context::init(&argc, &argv);
  g_world = std::make_unique<xpand::dist::Group>(ctx.split(0));
  g_world->comm->set_timeout(120);  // a test bug shows as an abort naming the missing rank, not a hang
  if (ctx.world_rank() != 0) {      // one report per job: other ranks print failures only
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(ctx.world_rank()));
  }
  xpand::log::set_level("warn");
  int rc = RUN_ALL_TESTS();
  g_world.reset();  // communicators go before MPI_Finalize
  return rc;
}
