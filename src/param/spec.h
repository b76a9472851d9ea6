// Per-layer parameterization options: param.<field> for every layer, overridden by
// layers.<name or glob>.<field> (glob over the layer's dotted name, e.g. "h*.mlp.c_fc"). Every
// field of config::param_fields() (the registry's options) resolves to one key; a kind reads its
// options with get_int / get_float / ... (the typed fields below are the built-in kinds' options,
// read once).
#pragma once
#include <string>
#include <vector>

#include "config/config.h"

namespace xpand::param {

struct Spec {
  std::string layer;  // the layer these options resolved for
  std::string kind;   // dense | expanded | lowrank | lora | subspace
  double factor = 4;
  int64_t depth = 2;
  std::string residual = "none";                  // none | every | end | tail | intervals
  std::vector<int64_t> residual_intervals = {2};  // residual: intervals (overparam's; -1 = depth)
  std::string batch_norm_at = "between";          // between | every (after every factor, overparam's)
  double negative_slope = 0;                      // init: overparam (the last factor's leaky-ReLU gain)
  std::string width_of = "max";  // max | out | in-out: inner widths factor x max(in, out), factor x out, or
                                 // factor x in then factor x out (ExpandNets' FC)
  int64_t residual_every = 1;
  bool learnable_residual = false, batch_norm = false, factor_bias = false, first_bias = false;
  bool nonlinear = false;    // ReLU between the factors (ExpandNets' nonlinear counterpart; no collapse)
  bool expand_input = true;  // conv: the first inner width is r x in (false: in, ExpandNets' first layer)
  std::string conv = "cl";   // cl | ck | kernels
  std::vector<int64_t> kernels;
  int64_t rank = 8;
  std::string init = "default", init_from;
  int64_t init_step = 0;
  double lora_alpha = 16;
  std::string order = "auto";

  // The config key that set a field for this layer ("layers.fc2.factor" or "param.factor"), for messages.
  std::string key_of(const std::string& field) const;
  // The value of any registered option for this layer (a kind outside this file reads its own).
  int64_t get_int(const std::string& field) const { return config().get_int(key_of(field)); }
  double get_float(const std::string& field) const { return config().get_float(key_of(field)); }
  bool get_bool(const std::string& field) const { return config().get_bool(key_of(field)); }
  std::string get_string(const std::string& field) const { return config().get_string(key_of(field)); }
  std::vector<int64_t> get_ints(const std::string& field) const { return config().get_ints(key_of(field)); }
  const config::Config* cfg = nullptr;   // the config the spec was resolved from (outlives it)
  const config::Config& config() const;  // *cfg; an internal error for a spec built by hand
  // Whether this layer's value of `field` differs from the schema default (false for a spec built by
  // hand, without a config).
  bool non_default(const std::string& field) const;
  // The value of `init` for a kind that accepts `accepted`: a param.init value meant for other kinds
  // (svd for lowrank, overparam for expanded, normal for dense) means "default" here; the same value
  // set under layers.<name> for this layer is a config error naming the accepted values.
  std::string init_for(const std::vector<std::string>& accepted) const;
  // Throws ConfigError "<key> (layer <layer>): <msg>" for an option this layer cannot take.
  [[noreturn]] void fail(const std::string& field, const std::string& msg) const;
  std::vector<std::pair<std::string, std::string>> sources;  // field -> key
};

Spec spec_for(const config::Config& cfg, const std::string& layer);

}  // namespace xpand::param
