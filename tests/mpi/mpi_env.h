// The MPI world shared by the multi-rank tests (tests/mpi/main.cpp creates it).
#pragma once
#include <gtest/gtest.h>

#include "dist/context.h"

namespace xpand::test {

// The whole world as one data-parallel group (a `local` communicator when run on one rank).
dist::Group& world();

}  // namespace xpand::test

// Skips (not fails) a test that needs more ranks than the job has.
#define XPAND_NEED_RANKS(n)                                                                      \
  do {                                                                                           \
    if (::xpand::test::world().comm->size() < (n))                                               \
      GTEST_SKIP() << "needs " << (n) << " ranks, have " << ::xpand::test::world().comm->size(); \
  } while (0)
