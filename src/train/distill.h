// Knowledge distillation (train.distill.*): the student trains on
//   (1 - α) · CE(student, y) + α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)),
// Hinton, Vinyals and Dean 2015 ("Distilling the Knowledge in a Neural Network"), with the KL term
// averaged over the rows (and, for a language model, the positions) as the cross-entropy is. ExpandNets
// (Guo et al., NeurIPS 2020) compares expanded training with a compact network trained this way.
// The teacher is a collapsed model: a model file from `xpand collapse`, or a run file's last
// complete snapshot. It runs in evaluation mode without gradients, once per micro-batch, on the
// rows this rank trains on (so data-parallel ranks each distil their own shard), on the very inputs
// the student sees (augmented ones included) converted to the teacher's input normalisation.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "config/config.h"
#include "data/dataset.h"
#include "model/network.h"

namespace xpand::train {

class Teacher {
 public:
  // Null when train.distill.from is empty. ConfigError (naming train.distill.from) when the file is
  // missing or its model does not take this dataset's inputs and classes; DataError when it is not a
  // readable model or run file.
  static std::unique_ptr<Teacher> from_config(const config::Config& cfg, const data::Dataset& ds, torch::Device device);
  // The distillation objective of one micro-batch: logits the student's output, teacher_logits
  // logits(x) of the same input (computed outside the student's bf16 autocast, in the teacher's dtype).
  torch::Tensor loss(const data::Dataset& ds, const torch::Tensor& logits, const torch::Tensor& y,
                     const torch::Tensor& teacher_logits) const;
  // "<path> (run <id>, step <n>)", for the run file's provenance.
  const std::string& describe() const { return what_; }
  double temperature() const { return t_; }
  double alpha() const { return alpha_; }
  // The teacher's logits for the student's input x (no gradients, evaluation mode).
  torch::Tensor logits(const torch::Tensor& x) const;

 private:
  model::NetworkPtr net_;
  double t_ = 1, alpha_ = 0;
  double scale_ = 1, shift_ = 0;  // x_teacher = x · scale + shift (images)
  bool tokens_ = false;
  torch::Dtype dtype_ = torch::kFloat32;
  std::string what_;
};

// The distillation term alone, T² · KL(softmax(t / T) ‖ softmax(s / T)) averaged over the rows of
// logits reshaped to (-1, classes): what Teacher::loss weighs by α.
torch::Tensor distill_kl(const torch::Tensor& student, const torch::Tensor& teacher, double temperature);

}  // namespace xpand::train
