// Communicator helpers shared by every backend, and the single-rank `local` backend.
#include "dist/comm.h"

#include <cstring>

namespace xpand::dist {

double Communicator::allreduce_scalar(double v, ReduceOp op, const std::string& what) {
  auto t = torch::full({1}, v, torch::TensorOptions().dtype(torch::kFloat64).device(device()));
  allreduce(t, op, what);
  return t.item<double>();
}

std::string Communicator::broadcast_string(const std::string& s, int root, const std::string& what) {
  auto n = torch::full({1}, int64_t(s.size()), torch::kInt64);
  broadcast(n, root, what + " (length)");
  auto bytes = torch::zeros({n.item<int64_t>()}, torch::kUInt8);
  if (rank() == root) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  broadcast(bytes, root, what);
  return std::string(static_cast<const char*>(bytes.data_ptr()), size_t(bytes.numel()));
}

std::vector<std::string> Communicator::allgather_strings(const std::string& mine, const std::string& what) {
  if (size() == 1) return {mine};
  auto lengths = allgather(torch::full({1}, int64_t(mine.size()), torch::kInt64), what + " (lengths)");
  const int64_t longest = lengths.max().item<int64_t>();
  auto bytes = torch::zeros({longest}, torch::kUInt8);
  if (!mine.empty()) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  auto all = allgather(bytes, what).cpu().contiguous();
  std::vector<std::string> out;
  for (int r = 0; r < size(); ++r)
    out.emplace_back(static_cast<const char*>(all[r].data_ptr()), size_t(lengths[r][0].item<int64_t>()));
  return out;
}

namespace {

class LocalWork : public Work {
 public:
  void wait() override {}
  double seconds() const override { return 0; }
};

class LocalComm : public Communicator {
 public:
  std::string backend() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::shared_ptr<Work> allreduce_async(torch::Tensor, ReduceOp, const std::string&) override {
    return std::make_shared<LocalWork>();
  }
  void broadcast(torch::Tensor, int, const std::string&) override {}
  torch::Tensor allgather(const torch::Tensor& mine, const std::string&) override { return mine.unsqueeze(0).clone(); }
  void barrier(const std::string&) override {}
};

}  // namespace

CommPtr comm_local() { return std::make_shared<LocalComm>(); }

}  // namespace xpand::dist
