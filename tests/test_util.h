// Helpers shared by the GoogleTest files: scratch directories and small configs.
#pragma once
#include <fmt/format.h>

#include <filesystem>
#include <random>
#include <string>

namespace xpand::test {

// A fresh directory under the system temp dir, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / fmt::format("xpand-test-{:016x}", (uint64_t(rd()) << 32) | rd());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace xpand::test
