// core/host.h: progress durations, the UTC timestamp format, and the default thread count under
// Slurm, an affinity mask and a bare machine.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <regex>
#include <thread>

#include "core/host.h"

TEST(Host, DurationsForProgressLines) {
  EXPECT_EQ(xpand::duration(0), "0s");
  EXPECT_EQ(xpand::duration(42.4), "42s");
  EXPECT_EQ(xpand::duration(187), "3m07s");
  EXPECT_EQ(xpand::duration(2 * 3600 + 5 * 60 + 10), "2h05m");
  EXPECT_EQ(xpand::duration(-1), "?");
  EXPECT_EQ(xpand::duration(NAN), "?");
}

TEST(Host, TimestampAndHostname) {
  EXPECT_TRUE(std::regex_match(xpand::now_iso(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"))) << xpand::now_iso();
  EXPECT_FALSE(xpand::hostname().empty());
}

TEST(Host, DefaultThreadsFollowSlurmThenTheMachine) {
  ::unsetenv("SLURM_CPUS_PER_TASK");
  ::unsetenv("SLURM_CPUS_ON_NODE");
  ::unsetenv("SLURM_JOB_ID");
  const int64_t cpus = xpand::usable_cpus();
  ASSERT_GE(cpus, 1);
  EXPECT_GE(xpand::default_threads(1), 1);
  EXPECT_LE(xpand::default_threads(1), cpus);
  EXPECT_EQ(xpand::default_threads(1000), 1);  // more ranks than cores: one thread each
  const int64_t bare4 = xpand::default_threads(4);
  ::setenv("SLURM_CPUS_PER_TASK", "6", 1);
  EXPECT_EQ(xpand::default_threads(4), 6);
  ::setenv("SLURM_CPUS_PER_TASK", "4(x2)", 1);  // Slurm's list form starts with the number
  EXPECT_EQ(xpand::default_threads(1), 4);
  ::unsetenv("SLURM_CPUS_PER_TASK");
  ::setenv("SLURM_CPUS_ON_NODE", "16", 1);
  EXPECT_EQ(xpand::default_threads(4), bare4) << "without SLURM_JOB_ID the node's CPU count is not Slurm's";
  ::setenv("SLURM_JOB_ID", "1", 1);
  EXPECT_EQ(xpand::default_threads(4), 4);
  EXPECT_EQ(xpand::default_threads(32), 1);
  ::unsetenv("SLURM_CPUS_ON_NODE");
  ::unsetenv("SLURM_JOB_ID");
}
