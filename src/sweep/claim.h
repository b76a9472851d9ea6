// Claims on sweep points, shared through the output directory so that several jobs (a Slurm job
// array, a second submission) can work on one sweep: <out>/claims/<run_id>.claim is created with
// O_EXCL by the group that trains the point, holds its owner (host, pid, group), and is kept alive
// by a thread that touches it every lease/4 seconds. A claim whose file has not been touched for a
// whole lease belongs to a dead owner, and so does one whose owner ran on this host and whose process
// is gone (a killed job rerun on the same node goes on at once); either is taken over (under a takeover lock, so that
// of several takers exactly one wins). Released (removed) when the point's run ends, whatever its status.
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace xpand::sweep {

class Claim {
 public:
  // Tries to claim run_id in <out>/claims; null when another live owner holds it.
  static std::unique_ptr<Claim> try_acquire(const std::string& out_dir, const std::string& run_id,
                                            const std::string& owner, double lease_seconds);
  ~Claim();  // stops renewing and removes the claim file if it is still this owner's
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;
  const std::string& path() const { return path_; }

 private:
  Claim(std::string path, std::string owner, double lease_seconds);
  std::string path_, owner_;
  double lease_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread renew_;
};

// The owner line of this process's claims: host|pid|group|pid space (boot id and pid namespace)|
// process start time, so that only a process of the same pid space judges whether the owner lives.
std::string owner_id(const std::string& group);

// Removes run_id's claim if its owner died (a job killed after its point completed leaves one).
void claim_clear_stale(const std::string& out_dir, const std::string& run_id, double lease_seconds);

// Whether run_id has a live claim (touched within the lease).
bool claim_live(const std::string& out_dir, const std::string& run_id, double lease_seconds);

}  // namespace xpand::sweep
