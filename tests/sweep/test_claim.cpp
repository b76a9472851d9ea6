// Tests for sweep claims: a claim taken over by another job while its first owner was stopped stays
// the new owner's when the first owner ends (its destructor must not remove another's claim).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../test_util.h"
#include "sweep/claim.h"

namespace {

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

TEST(Claim, ReleaseRemovesOnlyItsOwnClaim) {
  xpand::test::TempDir dir;
  const std::string out = dir.path().string();
  const std::string path = (dir.path() / "claims" / "run-1.claim").string();
  {
    auto mine = xpand::sweep::Claim::try_acquire(out, "run-1", "me|1|group0|space|1", 60);
    ASSERT_TRUE(mine);
    EXPECT_EQ(first_line(path), "me|1|group0|space|1");
    // Another job took the point over (the file now names it) while this one was stopped.
    std::filesystem::remove(path);
    std::ofstream(path) << "other|2|group0|space|2\n";
  }
  ASSERT_TRUE(std::filesystem::exists(path)) << "the first owner's release removed the new owner's claim";
  EXPECT_EQ(first_line(path), "other|2|group0|space|2");
  {
    auto again = xpand::sweep::Claim::try_acquire(out, "run-2", "me|1|group0|space|1", 60);
    ASSERT_TRUE(again);
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "claims" / "run-2.claim")) << "an own claim is released";
}

}  // namespace
