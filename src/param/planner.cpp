// Matrix-chain ordering and evaluation (see planner.h).
#include "param/planner.h"

#include <limits>

#include "core/error.h"

namespace xpand::param {

OrderPolicy order_policy(const std::string& name) {
  if (name == "activation") return OrderPolicy::Activation;
  if (name == "weight") return OrderPolicy::Weight;
  return OrderPolicy::Auto;
}

namespace {

// Matrices 0..n (0 is x); matrix i has shape p[i] × p[i+1].
double mult_cost(const std::vector<int64_t>& p, int i, int k, int j) {
  return double(p[i]) * double(p[k + 1]) * double(p[j + 1]);
}

double tree_cost(const std::vector<int64_t>& p, const std::vector<std::vector<int>>& s, int i, int j, double* elems,
                 bool root) {
  if (i == j) return 0;
  int k = s[i][j];
  double c = tree_cost(p, s, i, k, elems, false) + tree_cost(p, s, k + 1, j, elems, false) + mult_cost(p, i, k, j);
  if (!root) *elems += double(p[i]) * double(p[j + 1]);
  return c;
}

// Forward+backward FLOPs of the subtree (i..j); `grad[i..j]` says which leaves need gradients.
double tree_flops(const std::vector<int64_t>& p, const std::vector<std::vector<int>>& s, int i, int j, bool x_grad,
                  bool* needs_grad) {
  if (i == j) {
    *needs_grad = i > 0 || x_grad;
    return 0;
  }
  int k = s[i][j];
  bool gl, gr;
  double f = tree_flops(p, s, i, k, x_grad, &gl) + tree_flops(p, s, k + 1, j, x_grad, &gr);
  double m = 2.0 * mult_cost(p, i, k, j);
  *needs_grad = gl || gr;
  return f + m + (gl ? m : 0) + (gr ? m : 0);
}

torch::Tensor tree_eval(const torch::Tensor& x, const std::vector<torch::Tensor>& mats,
                        const std::vector<std::vector<int>>& s, int i, int j) {
  if (i == j) return i == 0 ? x : mats[i - 1];
  int k = s[i][j];
  return torch::matmul(tree_eval(x, mats, s, i, k), tree_eval(x, mats, s, k + 1, j));
}

}  // namespace

ChainPlan chain_plan(const std::vector<int64_t>& dims, OrderPolicy policy) {
  XPAND_CHECK(dims.size() >= 3, "a chain needs x and at least one matrix");
  ChainPlan plan;
  plan.dims = dims;
  const int n = int(dims.size()) - 1;  // matrices 0..n-1
  std::vector<std::vector<double>> cost(n, std::vector<double>(n, 0));
  plan.split.assign(n, std::vector<int>(n, 0));
  for (int len = 2; len <= n; ++len)
    for (int i = 0; i + len - 1 < n; ++i) {
      int j = i + len - 1;
      cost[i][j] = std::numeric_limits<double>::infinity();
      for (int k = i; k < j; ++k) {
        double c = cost[i][k] + cost[k + 1][j] + mult_cost(dims, i, k, j);
        if (c < cost[i][j]) cost[i][j] = c, plan.split[i][j] = k;
      }
    }
  // The two fixed orders, for reporting and for forced policies.
  auto act = plan.split, wgt = plan.split;
  for (int j = 1; j < n; ++j) act[0][j] = j - 1;  // ((x A1) A2) ...
  for (int i = 1; i < n; ++i)
    for (int j = i + 1; j < n; ++j) wgt[i][j] = j - 1;  // A1 A2 ... left to right
  wgt[0][n - 1] = 0;                                    // x (A1 ⋯ An)
  double e = 0;
  plan.act_first_macs = tree_cost(dims, act, 0, n - 1, &e, true);
  plan.weight_first_macs = tree_cost(dims, wgt, 0, n - 1, &e, true);
  if (policy == OrderPolicy::Activation) plan.split = act;
  if (policy == OrderPolicy::Weight) plan.split = wgt;
  plan.intermediate_elems = 0;
  plan.macs = tree_cost(dims, plan.split, 0, n - 1, &plan.intermediate_elems, true);
  // Name the order by the shape of the tree around x.
  bool left_deep = true;
  for (int j = 1; j < n; ++j) left_deep &= plan.split[0][j] == j - 1;
  if (left_deep || n == 2)
    plan.order = "activation";
  else if (plan.split[0][n - 1] == 0)
    plan.order = "weight";
  else
    plan.order = "mixed";
  if (n == 2) plan.order = "direct";
  return plan;
}

torch::Tensor chain_eval(const torch::Tensor& x, const std::vector<torch::Tensor>& mats, const ChainPlan& plan) {
  XPAND_CHECK(mats.size() + 2 == plan.dims.size(), "chain of {} matrices planned for {}", mats.size(),
              plan.dims.size() - 2);
  return tree_eval(x, mats, plan.split, 0, int(mats.size()));
}

double chain_flops(const ChainPlan& plan, bool input_grad) {
  bool g;
  return tree_flops(plan.dims, plan.split, 0, int(plan.dims.size()) - 2, input_grad, &g);
}

}  // namespace xpand::param
