// gpt: character-level GPT in nanoGPT's shakespeare_char shape (pre-norm blocks, causal
// self-attention, GELU MLP with 4x width, bias-free LayerNorms and linears, tied output head).
// Every linear weight (c_attn, c_proj, c_fc) is a slot; embeddings and norms are plain tensors.
#include <fmt/format.h>

#include <cmath>

#include "model/nets.h"

namespace xpand::model {

namespace {

// Module paths follow nanoGPT: h<i>.attn.{c_attn,c_proj}, h<i>.mlp.{c_fc,c_proj}.
struct Block : torch::nn::Module {
  std::shared_ptr<torch::nn::Module> attn = std::make_shared<torch::nn::Module>();
  std::shared_ptr<torch::nn::Module> mlp = std::make_shared<torch::nn::Module>();
  param::ParamPtr c_attn, attn_proj, c_fc, mlp_proj;
  torch::Tensor ln1, ln2;  // (C) LayerNorm weights (bias off)
};

class Gpt : public Network {
 public:
  Gpt(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make)
      : n_layer_(cfg.get_int("model.n_layer")),
        n_head_(cfg.get_int("model.n_head")),
        n_embd_(cfg.get_int("model.n_embd")),
        block_(ds.block_size),
        vocab_(ds.num_classes),
        dropout_(cfg.get_float("model.dropout")) {
    if (ds.task != data::Task::LanguageModel)
      cfg.fail("model.kind", fmt::format("gpt needs a language-modelling dataset (data.name chars), not {}", ds.name));
    if (n_embd_ % n_head_ != 0)
      cfg.fail("model.n_head", fmt::format("{} heads do not divide n_embd {}", n_head_, n_embd_));
    auto normal = [](std::vector<int64_t> s, double std) { return torch::randn(s) * std; };
    wte_ = register_parameter("wte", normal({vocab_, n_embd_}, 0.02));  // (V, C), tied with the head
    wpe_ = register_parameter("wpe", normal({block_, n_embd_}, 0.02));  // (T, C)
    const double proj_std = 0.02 / std::sqrt(2.0 * double(n_layer_));   // nanoGPT's scaled residual init
    int64_t c = n_embd_, t = block_;
    for (int64_t i = 0; i < n_layer_; ++i) {
      auto b = std::make_shared<Block>();
      std::string p = fmt::format("h{}", i);
      register_module(p, b);
      b->ln1 = b->register_parameter("ln1", torch::ones({c}));
      b->ln2 = b->register_parameter("ln2", torch::ones({c}));
      b->register_module("attn", b->attn);
      b->register_module("mlp", b->mlp);
      b->c_attn =
          add_slot(*b->attn, "c_attn", p + ".attn.c_attn", {{3 * c, c}}, param::Init::normal(0.02), make, t, true);
      b->attn_proj =
          add_slot(*b->attn, "c_proj", p + ".attn.c_proj", {{c, c}}, param::Init::normal(proj_std), make, t, true);
      b->c_fc = add_slot(*b->mlp, "c_fc", p + ".mlp.c_fc", {{4 * c, c}}, param::Init::normal(0.02), make, t, true);
      b->mlp_proj =
          add_slot(*b->mlp, "c_proj", p + ".mlp.c_proj", {{c, 4 * c}}, param::Init::normal(proj_std), make, t, true);
      blocks_.push_back(b);
    }
    ln_f_ = register_parameter("ln_f", torch::ones({c}));
  }

  std::string kind() const override { return "gpt"; }

  torch::Tensor forward(const torch::Tensor& idx) override {
    namespace F = torch::nn::functional;
    const int64_t B = idx.size(0), T = idx.size(1), C = n_embd_, H = n_head_, D = C / H;
    auto drop = [&](const torch::Tensor& x) {
      return F::dropout(x, F::DropoutFuncOptions().p(dropout_).training(is_training()));
    };
    auto ln = [&](const torch::Tensor& x, const torch::Tensor& w) { return torch::layer_norm(x, {C}, w, {}, 1e-5); };
    torch::Tensor x = drop(wte_.index_select(0, idx.reshape(-1)).view({B, T, C}) + wpe_.slice(0, 0, T));
    torch::Tensor none;
    const double scale = 1.0 / std::sqrt(double(D));
    // Causal mask, made per call: a bool buffer would be cast to the float dtype by Module::to().
    auto mask = torch::ones({T, T}, idx.options().dtype(torch::kBool)).triu(1);  // (T, T), true above the diagonal
    for (auto& b : blocks_) {
      auto qkv =
          b->c_attn->linear(ln(x, b->ln1), none).view({B, T, 3, H, D}).permute({2, 0, 3, 1, 4});  // (3, B, H, T, D)
      auto att = torch::matmul(qkv[0], qkv[1].transpose(-2, -1)).mul_(scale);                     // (B, H, T, T)
      att = drop(torch::softmax(att.masked_fill(mask, -INFINITY), -1));
      auto y = torch::matmul(att, qkv[2]).transpose(1, 2).reshape({B, T, C});  // (B, T, C)
      x = x + drop(b->attn_proj->linear(y, none));
      auto m = torch::gelu(b->c_fc->linear(ln(x, b->ln2), none));
      x = x + drop(b->mlp_proj->linear(m, none));
    }
    return torch::matmul(ln(x, ln_f_), wte_.t());  // (B, T, V)
  }

  std::vector<ExtraCost> extra_costs() const override {
    // Per sample: QKᵀ and att·V, each 2·T·T·C multiply-adds forward, x3 with backward; plus the tied head.
    double t = double(block_), c = double(n_embd_);
    return {{"attention (QKᵀ, att·V)", double(n_layer_) * 2 * (2 * t * t * c) * 3},
            {"lm_head (tied wte)", 2 * t * c * double(vocab_) * 3}};
  }

 private:
  int64_t n_layer_, n_head_, n_embd_, block_, vocab_;
  double dropout_;
  torch::Tensor wte_, wpe_, ln_f_;
  std::vector<std::shared_ptr<Block>> blocks_;
};

}  // namespace

NetworkPtr gpt_build(const config::Config& cfg, const data::Dataset& ds, const param::Factory& make) {
  return std::make_shared<Gpt>(cfg, ds, make);
}

}  // namespace xpand::model
