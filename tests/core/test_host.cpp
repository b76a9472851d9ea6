// core/host.h: progress durations, the UTC timestamp format, and the default thread count under
// Slurm, an affinity mask and a bare machine.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <regex>
#include <string>
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

// Sets an environment variable for one scope and restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

TEST(Host, DefaultThreadsFollowSlurmThenTheMachine) {
  ScopedEnv per_task("SLURM_CPUS_PER_TASK", nullptr), on_node("SLURM_CPUS_ON_NODE", nullptr),
      job("SLURM_JOB_ID", nullptr);
  const int64_t cpus = xpand::usable_cpus();
  ASSERT_GE(cpus, 1);
  EXPECT_GE(xpand::default_threads(1), 1);
  EXPECT_LE(xpand::default_threads(1), cpus);
  // More ranks than cores: one thread each (a narrower affinity mask is taken as this rank's own).
  if (cpus == int64_t(std::thread::hardware_concurrency())) EXPECT_EQ(xpand::default_threads(1000), 1);
  const int64_t bare4 = xpand::default_threads(4);
  {
    ScopedEnv v("SLURM_CPUS_PER_TASK", "6");
    EXPECT_EQ(xpand::default_threads(4), 6);
  }
  {
    ScopedEnv v("SLURM_CPUS_PER_TASK", "4(x2)");  // Slurm's list form starts with the number
    EXPECT_EQ(xpand::default_threads(1), 4);
  }
  ScopedEnv node("SLURM_CPUS_ON_NODE", "16");
  EXPECT_EQ(xpand::default_threads(4), bare4) << "without SLURM_JOB_ID the node's CPU count is not Slurm's";
  ScopedEnv id("SLURM_JOB_ID", "1");
  EXPECT_EQ(xpand::default_threads(4), 4);
  EXPECT_EQ(xpand::default_threads(32), 1);
}
