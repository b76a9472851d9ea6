// bfloat16 autocast around a training forward (train.precision: bf16), as torch.autocast does in
// Python: inside the scope, matmuls and convolutions of float32 tensors run in bfloat16 on the
// tensors' device type; what it casts is cached until the scope ends. Parameters, gradients and
// optimizer state stay float32. The scope restores the previous state, nested or not.
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

namespace xpand::train {

class Autocast {
 public:
  Autocast(bool on, torch::Device device) : on_(on), type_(device.type()) {
    if (!on_) return;
    was_enabled_ = enabled();
    was_dtype_ = dtype();
    set(true, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(was_enabled_, was_dtype_);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  bool enabled() const { return at::autocast::is_autocast_enabled(type_); }
  at::ScalarType dtype() const { return at::autocast::get_autocast_dtype(type_); }
  void set(bool on, at::ScalarType t) const {
    at::autocast::set_autocast_dtype(type_, t);
    at::autocast::set_autocast_enabled(type_, on);
  }
#else
  bool enabled() const { return cuda() ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
  at::ScalarType dtype() const {
    return cuda() ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
  }
  void set(bool on, at::ScalarType t) const {
    if (cuda()) {
      at::autocast::set_autocast_gpu_dtype(t);
      at::autocast::set_enabled(on);
    } else {
      at::autocast::set_autocast_cpu_dtype(t);
      at::autocast::set_cpu_enabled(on);
    }
  }
  bool cuda() const { return type_ == at::kCUDA; }
#endif

  bool on_;
  at::DeviceType type_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace xpand::train
