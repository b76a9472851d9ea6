// The contraction planner: a chain x·A_1·A_2⋯A_n (x: rows×p_1, A_i: p_i×p_{i+1}) is evaluated in
// the cheapest exact order, found by matrix-chain ordering with the batch as one more matrix.
// Activation-first (((x A_1) A_2) ⋯) and weight-first x (A_1 ⋯ A_n) are two of the orders it
// considers; any split between them ("mixed") is allowed. Same function, same gradients.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace xpand::param {

struct ChainPlan {
  std::vector<int64_t> dims;            // p_0 = rows, p_1 .. p_{n+1}
  std::vector<std::vector<int>> split;  // split[i][j]: the k where (i..k)(k+1..j) is cheapest
  double macs = 0;                      // multiply-adds of the forward in this order
  double act_first_macs = 0, weight_first_macs = 0;
  double intermediate_elems = 0;  // elements of the intermediate results (kept for backward)
  std::string order;              // "activation", "weight" or "mixed"
};

enum class OrderPolicy { Auto, Activation, Weight };
OrderPolicy order_policy(const std::string& name);  // "auto" | "activation" | "weight"

// Plans the chain with p = {rows, p_1, ..., p_{n+1}} under the policy.
ChainPlan chain_plan(const std::vector<int64_t>& dims, OrderPolicy policy = OrderPolicy::Auto);

// Evaluates x·A_1⋯A_n in the planned order. mats[i] is A_{i+1} (p_{i+1} × p_{i+2}).
torch::Tensor chain_eval(const torch::Tensor& x, const std::vector<torch::Tensor>& mats, const ChainPlan& plan);

// Forward+backward FLOPs of a planned chain: each product costs 2·MACs forward and 2·MACs per
// operand that needs a gradient backward (x needs one only when input_grad).
double chain_flops(const ChainPlan& plan, bool input_grad);

}  // namespace xpand::param
