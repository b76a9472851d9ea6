// Point claims on the file system (see claim.h).
#include "sweep/claim.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "core/host.h"
#include "core/log.h"

namespace xpand::sweep {

namespace {

namespace fs = std::filesystem;

std::string claim_path(const std::string& out_dir, const std::string& run_id) {
  return (fs::path(out_dir) / "claims" / (run_id + ".claim")).string();
}

// Seconds since the claim file was last touched; negative when there is none.
double claim_age(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return double(now.tv_sec - st.st_mtim.tv_sec) + 1e-9 * double(now.tv_nsec - st.st_mtim.tv_nsec);
}

bool create_exclusive(const std::string& path, const std::string& owner) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw Error(fmt::format("cannot create claim {}: {}", path, std::strerror(errno)));
  }
  const std::string text = owner + "\n";
  ssize_t w = ::write(fd, text.data(), text.size());
  ::fsync(fd);
  ::close(fd);
  if (w != ssize_t(text.size())) throw Error(fmt::format("cannot write claim {}", path));
  return true;
}

// Where a pid means this process: the boot and the pid namespace (containers sharing a hostname
// but not their processes differ here), read once.
const std::string& pid_space() {
  static const std::string id = [] {
    std::string boot;
    std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
    char ns[256] = {0};
    const ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    return boot + "/" + (n > 0 ? std::string(ns, size_t(n)) : std::string("?"));
  }();
  return id;
}

// The start time of a process (field 22 of /proc/<pid>/stat, clock ticks since boot), or "" when
// it does not exist: with the pid it names one process, even after the pid is reused.
std::string start_time(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return "";
  const auto close = stat.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return "";
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i)
    if (i == 22) return field;
  return "";
}

// Whether the claim's owner ("host:pid:group:pidspace:start", see owner_id) ran in this host's pid
// space and its process is gone (or the pid now names another process): a crashed or killed job rerun
// on the same node takes its points back at once instead of waiting for the lease.
bool owner_dead_here(const std::string& path) {
  std::ifstream in(path);
  std::string owner;
  if (!std::getline(in, owner)) return false;
  std::vector<std::string> f;
  std::istringstream parts(owner);
  for (std::string x; std::getline(parts, x, '|');) f.push_back(x);
  if (f.size() != 5 || f[0] != hostname() || f[3] != pid_space()) return false;
  long pid = 0;
  try {
    pid = std::stol(f[1]);
  } catch (const std::exception&) {
    return false;
  }
  if (pid <= 0 || pid == long(::getpid())) return false;
  if (::kill(pid_t(pid), 0) != 0) return errno == ESRCH;
  return start_time(pid) != f[4];  // alive, but another process under the same pid
}

// Whether the claim at path is stale: not renewed for a whole lease, or its owner died on this host.
bool stale(const std::string& path, double lease_seconds) {
  const double age = claim_age(path);
  if (age < 0) return false;
  return age >= lease_seconds || owner_dead_here(path);
}

}  // namespace

std::string owner_id(const std::string& group) {
  return fmt::format("{}|{}|{}|{}|{}", hostname(), ::getpid(), group, pid_space(), start_time(::getpid()));
}

// The owner line of the claim file at path ("" when there is none).
std::string claim_owner(const std::string& path) {
  std::ifstream in(path);
  std::string owner;
  std::getline(in, owner);
  return owner;
}

Claim::Claim(std::string path, std::string owner, double lease_seconds)
    : path_(std::move(path)), owner_(std::move(owner)), lease_(lease_seconds) {
  renew_ = std::thread([this] {
    std::unique_lock<std::mutex> lk(mu_);
    const auto period = std::chrono::duration<double>(lease_ / 4);
    while (!cv_.wait_for(lk, period, [this] { return stop_; })) {
      // A claim that is no longer this process's (taken over while this process was stopped) is
      // left to its new owner: renewing it would keep the new owner's claim alive for it.
      const std::string now_owner = claim_owner(path_);
      if (!now_owner.empty() && now_owner != owner_) {  // "" (unreadable for a moment): try again next period
        log::warn(
            "claim {} now belongs to another job (this one was stopped for longer than the lease); no longer "
            "renewing it",
            path_);
        return;
      }
      if (::utimensat(AT_FDCWD, path_.c_str(), nullptr, 0) != 0)
        log::warn("cannot renew claim {}: {} (another job may take the point over)", path_, std::strerror(errno));
    }
  });
}

Claim::~Claim() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  renew_.join();
  // Only this process's own claim is removed, never one another job took over in the meantime.
  if (claim_owner(path_) == owner_) ::unlink(path_.c_str());
}

std::unique_ptr<Claim> Claim::try_acquire(const std::string& out_dir, const std::string& run_id,
                                          const std::string& owner, double lease_seconds) {
  const std::string path = claim_path(out_dir, run_id);
  fs::create_directories(fs::path(path).parent_path());
  if (create_exclusive(path, owner)) return std::unique_ptr<Claim>(new Claim(path, owner, lease_seconds));
  if (!stale(path, lease_seconds)) return nullptr;  // a live owner (or none any more: retry next round)
  // A stale claim (its owner stopped renewing it, or died on this host): one taker at a time, under
  // a takeover lock that itself expires, re-checks the claim, removes it and claims anew.
  const std::string lock = path + ".takeover";
  if (stale(lock, lease_seconds)) ::unlink(lock.c_str());  // a taker died half-way
  if (!create_exclusive(lock, owner)) return nullptr;
  std::unique_ptr<Claim> claim;
  const double again = claim_age(path);
  if (again < 0 || stale(path, lease_seconds)) {
    if (again >= 0)
      log::warn(
          "claim {} was not renewed for {:.0f} s (lease {:.0f} s) or its owner's process is gone: taking the "
          "point over",
          path, again, lease_seconds);
    ::unlink(path.c_str());
    if (create_exclusive(path, owner)) claim.reset(new Claim(path, owner, lease_seconds));
  }
  ::unlink(lock.c_str());
  return claim;
}

void claim_clear_stale(const std::string& out_dir, const std::string& run_id, double lease_seconds) {
  const std::string path = claim_path(out_dir, run_id);
  if (stale(path, lease_seconds)) ::unlink(path.c_str());
}

bool claim_live(const std::string& out_dir, const std::string& run_id, double lease_seconds) {
  const std::string path = claim_path(out_dir, run_id);
  return claim_age(path) >= 0 && !stale(path, lease_seconds);
}

}  // namespace xpand::sweep
