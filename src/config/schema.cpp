// The schema: every configuration key xpand accepts, its type, default, range and documentation.
// This one table drives validation, defaults, `xpand keys` and the resolved config of each run.
#include <algorithm>
#include <functional>

#include "config/config.h"
#include "core/error.h"

namespace xpand::config {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

KeyDef key(std::string k, Type t, std::string def, std::string doc) {
  KeyDef d;
  d.key = std::move(k);
  d.type = t;
  d.default_yaml = std::move(def);
  d.doc = std::move(doc);
  return d;
}
KeyDef range(KeyDef d, double lo, double hi = kInf, bool lo_open = false) {
  d.min = lo, d.max = hi, d.min_open = lo_open;
  return d;
}
KeyDef choices(KeyDef d, std::vector<std::string> c) {
  d.choices = std::move(c);
  return d;
}
KeyDef when(KeyDef d, std::string k, std::vector<std::string> v) {
  d.when_key = std::move(k);
  d.when_values = std::move(v);
  return d;
}
}  // namespace

KeyDef key_def(std::string k, Type t, std::string def, std::string doc) {
  return key(std::move(k), t, std::move(def), std::move(doc));
}
KeyDef key_added(KeyDef d) {
  d.id_when_default = false;
  return d;
}
KeyDef key_range(KeyDef d, double lo, double hi, bool lo_open) { return range(std::move(d), lo, hi, lo_open); }
KeyDef key_choices(KeyDef d, std::vector<std::string> c) { return choices(std::move(d), std::move(c)); }

namespace {
std::function<std::vector<KeyDef>()>& param_fields_provider() {
  static std::function<std::vector<KeyDef>()> provider;
  return provider;
}
}  // namespace

void set_param_fields(std::function<std::vector<KeyDef>()> provider) { param_fields_provider() = std::move(provider); }

// The fields of a parameterization (param.* and layers.*.*): the registry's kinds and options.
const std::vector<KeyDef>& param_fields() {
  static const std::vector<KeyDef> fields = [] {
    if (!param_fields_provider())
      throw Error("xpand: no parameterization registry is linked (param::kinds() provides param.* keys)");
    return param_fields_provider()();
  }();
  return fields;
}

const std::vector<KeyDef>& schema() {
  using T = Type;
  static const std::vector<KeyDef> table = {
      // --- run identity ---
      key("name", T::String, "run", "run name; the run id is <name>-<hash of the resolved config>"),
      range(key("seed", T::Int, "0", "seed of initialisation, data order and dropout"), 0),
      choices(key("device", T::String, "cpu", "where tensors live: cpu, cuda, or auto (cuda when available)"),
              {"cpu", "cuda", "auto"}),
      choices(key("dtype", T::String, "float32", "parameter and activation dtype"), {"float32", "float64"}),
      range(key("threads", T::Int, "0",
                "intra-op CPU threads; 0 = cores / ranks on this node; more than the CPUs this process may use are "
                "reduced to that number"),
            0, 1024),

      // --- data ---
      choices(key("data.name", T::String, "fashion-mnist",
                  "dataset (images: IDX files of any (N, H, W) or (N, C, H, W) images under data.root; cifar10, "
                  "cifar100: the binary distribution under data.root, default $XPAND_DATA)"),
              {"fashion-mnist", "mnist", "mnist-10k", "chars", "teacher", "images", "cifar10", "cifar100"}),
      key("data.root", T::String, "''",
          "dataset directory (IDX files) or text file/directory (chars); empty = the dataset's default location"),
      range(key("data.batch_size", T::Int, "128", "global batch size (split over the ranks of a run)"), 1),
      range(key("data.eval_batch_size", T::Int, "2048", "batch size of evaluation passes"), 1),
      range(key("data.train_classes", T::IntList, "[]",
                "train only on samples of these classes (their indices; [] = every class); train_loss and "
                "train_acc then cover these classes, the test split stays whole"),
            0),
      range(key("data.focus_classes", T::IntList, "[]",
                "evaluation also reports test accuracy on these classes (test_focus_acc) and on the others "
                "(test_rest_acc)"),
            0),
      range(key("data.eval_max_samples", T::Int, "0", "evaluate on at most this many samples of each split (0 = all)"),
            0),
      choices(key("data.normalize", T::String, "standard",
                  "image scaling: standard = (x/255 - mean)/std of the train split, unit = x/255"),
              {"standard", "unit"}),
      when(
          choices(key("data.cifar100_labels", T::String, "fine", "CIFAR-100 labels: fine (100 classes) or coarse (20)"),
                  {"fine", "coarse"}),
          "data.name", {"cifar100"}),
      key_added(
          choices(key("data.augment", T::String, "none",
                      "training-batch augmentation of images: crop = a random crop of the image zero-padded by "
                      "data.crop_padding, flip = a horizontal flip with probability 1/2, crop-flip = both (evaluation "
                      "never augments)"),
                  {"none", "crop", "flip", "crop-flip"})),
      when(key_added(range(key("data.crop_padding", T::Int, "4", "data.augment crop: pixels of padding on every side"),
                           0, 1024)),
           "data.augment", {"crop", "crop-flip"}),
      when(range(key("data.block_size", T::Int, "256", "context length of chars windows (and of the gpt)"), 1),
           "data.name", {"chars"}),
      when(range(key("data.val_fraction", T::Float, "0.1", "fraction of the text held out for validation"), 0, 0.5,
                 true),
           "data.name", {"chars"}),
      when(range(key("data.eval_batches", T::Int, "20", "random validation windows batches per evaluation"), 1),
           "data.name", {"chars"}),
      when(range(key("data.teacher_inputs", T::Int, "32", "input dimension of the teacher task"), 1), "data.name",
           {"teacher"}),
      when(range(key("data.teacher_hidden", T::Int, "64", "hidden width of the random teacher network"), 1),
           "data.name", {"teacher"}),
      when(range(key("data.teacher_classes", T::Int, "10",
                     "classes of the teacher task (argmax of the teacher's outputs)"),
                 2),
           "data.name", {"teacher"}),
      when(range(key("data.train_size", T::Int, "4096", "training samples of the teacher task"), 1), "data.name",
           {"teacher"}),
      when(range(key("data.test_size", T::Int, "1024", "test samples of the teacher task"), 1), "data.name",
           {"teacher"}),

      // --- model ---
      choices(key("model.kind", T::String, "mlp", "base network"), {"mlp", "cnn", "gpt"}),
      when(range(key("model.widths", T::IntList, "[784, 512, 512, 10]",
                     "layer widths, input first and classes last (784-200-200-10 = [784, 200, 200, 10])"),
                 1),
           "model.kind", {"mlp"}),
      when(choices(key("model.activation", T::String, "relu", "nonlinearity between layers"),
                   {"relu", "tanh", "sigmoid", "gelu"}),
           "model.kind", {"mlp", "cnn"}),
      when(key("model.bias", T::Bool, "true", "bias vectors in linear and conv layers"), "model.kind", {"mlp", "cnn"}),
      when(key_added(choices(key("model.layer_bias", T::String, "separate",
                                 "with model.bias: separate (every layer gets the network's bias, also one whose "
                                 "parameterization has a bias of its own: factor biases, batch norm) or own (such a "
                                 "layer keeps only its own, as overparam's EPLinear and the Expansive seed's fc1)"),
                             {"separate", "own"})),
           "model.kind", {"mlp", "cnn"}),
      when(key_added(choices(key("model.bias_init", T::String, "default",
                                 "initial biases: default (PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))) or zero (the "
                                 "omega-space notebook's)"),
                             {"default", "zero"})),
           "model.kind", {"mlp", "cnn"}),
      when(key("model.init_from", T::String, "''",
               "run file whose snapshot, or model file (xpand collapse) that, starts every layer and bias "
               "(fine-tuning): dense layers copy the weight, "
               "lora layers take it as W0, lowrank layers with init: svd factor it"),
           "model.kind", {"mlp"}),
      when(range(key("model.init_step", T::Int, "0", "snapshot step in model.init_from (0 = the last)"), 0),
           "model.kind", {"mlp"}),
      when(range(key("model.residual", T::IntList, "[]",
                     "0-based indices of square hidden layers wrapped in a residual: h = act(h + W h + b)"),
                 0),
           "model.kind", {"mlp"}),
      when(range(key("model.channels", T::IntList, "[32, 64]",
                     "conv block output channels (each block: conv, batch norm, activation, 2x2 max pool)"),
                 1),
           "model.kind", {"cnn"}),
      when(range(key("model.kernel_size", T::Int, "3", "conv kernel size (odd with padding: same)"), 1), "model.kind",
           {"cnn"}),
      when(key_added(choices(key("model.padding", T::String, "same",
                                 "conv padding: same (kernel_size / 2, the map keeps its size) or valid (none: "
                                 "ExpandNets' 3x3 SmallNet)"),
                             {"same", "valid"})),
           "model.kind", {"cnn"}),
      when(key("model.batch_norm", T::Bool, "true", "batch norm after each conv"), "model.kind", {"cnn"}),
      when(range(key("model.fc", T::IntList, "[]", "hidden widths of the classifier after the conv blocks"), 1),
           "model.kind", {"cnn"}),
      when(range(key("model.n_layer", T::Int, "6", "transformer blocks"), 1), "model.kind", {"gpt"}),
      when(range(key("model.n_head", T::Int, "6", "attention heads (must divide n_embd)"), 1), "model.kind", {"gpt"}),
      when(range(key("model.n_embd", T::Int, "384", "embedding width"), 1), "model.kind", {"gpt"}),
      when(range(key("model.dropout", T::Float, "0.2", "dropout probability"), 0, 1, false), "model.kind", {"gpt"}),

      // --- training ---
      choices(key("train.optimizer", T::String, "adam", "optimizer"), {"sgd", "adam", "adamw"}),
      range(key("train.lr", T::Float, "0.001", "peak learning rate"), 0, kInf, true),
      when(range(key("train.momentum", T::Float, "0", "SGD momentum"), 0, 1), "train.optimizer", {"sgd"}),
      when(key("train.nesterov", T::Bool, "false", "Nesterov momentum (needs momentum > 0)"), "train.optimizer",
           {"sgd"}),
      when(range(key("train.beta1", T::Float, "0.9", "Adam beta1"), 0, 1), "train.optimizer", {"adam", "adamw"}),
      when(range(key("train.beta2", T::Float, "0.999", "Adam beta2"), 0, 1), "train.optimizer", {"adam", "adamw"}),
      when(range(key("train.eps", T::Float, "1e-08", "Adam epsilon"), 0, kInf, true), "train.optimizer",
           {"adam", "adamw"}),
      range(key("train.weight_decay", T::Float, "0",
                "weight decay (L2 for sgd/adam, decoupled for adamw; adamw's usual value is 0.01)"),
            0),
      choices(key("train.schedule", T::String, "constant", "learning-rate schedule (after warmup)"),
              {"constant", "step", "cosine"}),
      range(key("train.warmup_steps", T::Int, "0", "linear warmup from 0 to train.lr over this many steps"), 0),
      when(
          range(key("train.step_size", T::Int, "1000", "step schedule: multiply lr by gamma every this many steps"), 1),
          "train.schedule", {"step"}),
      when(range(key("train.gamma", T::Float, "0.1", "step schedule factor"), 0, 1, true), "train.schedule", {"step"}),
      when(range(key("train.lr_min", T::Float, "0", "cosine schedule floor"), 0), "train.schedule", {"cosine"}),
      key("train.freeze", T::StringList, "[]",
          "parameters kept fixed: glob patterns over their names (fc1.weight, fc1_bias, ...; `xpand plan` lists them)"),
      range(key("train.grad_clip", T::Float, "0", "clip the global gradient norm to this (0 = off)"), 0),
      key_added(
          key("train.distill.from", T::String, "''",
              "knowledge distillation: the teacher, a model file from xpand collapse or a run file (its last complete "
              "snapshot); '' = off. Loss (1 - alpha) CE + alpha T^2 KL(teacher/T || student/T) (Hinton et al. 2015)")),
      key_added(range(key("train.distill.temperature", T::Float, "4", "knowledge distillation: softmax temperature T"),
                      0, kInf, true)),
      key_added(range(key("train.distill.alpha", T::Float, "0.9",
                          "knowledge distillation: weight of the teacher's term (1 - alpha on the labels' "
                          "cross-entropy)"),
                      0, 1)),
      choices(key("train.precision", T::String, "fp32",
                  "forward-pass precision: bf16 runs the training forward under bfloat16 autocast (matmuls and "
                  "convolutions in bf16; weights, gradients, optimizer state and evaluation stay float32)"),
              {"fp32", "bf16"}),
      range(key("train.epochs", T::Float, "1", "passes over the training set (fractions allowed)"), 0),
      range(key("train.max_steps", T::Int, "0", "stop after this many steps (0 = no limit; with epochs, the earlier)"),
            0),
      range(key("train.eval_every", T::Int, "0",
                "evaluate every this many steps (0 = once per epoch); always at the end"),
            0),
      range(key("train.log_every", T::Int, "100", "console progress line every this many steps"), 1),
      range(key("train.grad_accum", T::Int, "1",
                "micro-batches per step: each rank's share of the batch runs in this many forward/backward "
                "passes, gradients accumulate locally and are all-reduced once"),
            1),

      // --- distributed (data parallel within a group of ranks; see docs/DISTRIBUTED.md) ---
      choices(key("dist.backend", T::String, "auto",
                  "gradient all-reduce: mpi (CPU tensors; CUDA staged through host), nccl (CUDA tensors), "
                  "auto (nccl for CUDA tensors when compiled in, else mpi)"),
              {"auto", "mpi", "nccl"}),
      choices(key("dist.cut", T::String, "auto",
                  "where gradients are all-reduced: auto = per layer, the cheaper of W_eff and the raw tensors "
                  "(predicted compute + exposed communication, calibrated at start; docs/DISTRIBUTED.md); "
                  "narrowest = each layer's narrowest cut (W_eff of an expanded layer, factors of low-rank/LoRA); "
                  "planned = the cut only for layers the planner runs weight-first (no extra FLOPs); raw = every "
                  "trainable tensor"),
              {"auto", "narrowest", "planned", "raw"}),
      key_added(range(key("dist.link_gbps", T::Float, "0",
                          "dist.cut auto: the link's bandwidth per rank in Gbit/s for the cost model instead of "
                          "timing all-reduces (0 = measure)"),
                      0, kInf)),
      key_added(range(key("dist.latency_us", T::Float, "0",
                          "dist.cut auto: latency per tree step in microseconds with dist.link_gbps, or in place "
                          "of the measured latency (0 = measured, none with dist.link_gbps)"),
                      0, kInf)),
      key_added(range(key("dist.gemm_gflops", T::Float, "0",
                          "dist.cut auto: price each layer's options as the planner's FLOPs at this GEMM rate "
                          "(GFLOP/s) instead of timing them (0 = time them)"),
                      0, kInf)),
      range(key("dist.bucket_mb", T::Float, "25", "gradient bucket capacity (MiB)"), 0, kInf, true),
      range(key("dist.first_bucket_mb", T::Float, "1",
                "capacity of the first bucket (MiB): small, so communication starts early in backward"),
            0, kInf, true),
      range(key("dist.timeout_s", T::Float, "300",
                "a collective unfinished after this many seconds aborts the job, naming the ranks that did "
                "not arrive"),
            0, kInf, true),

      // --- output ---
      key("output.dir", T::String, "out", "output directory; run files go to <dir>/runs/<run_id>.h5"),
      range(key("output.snapshot_every", T::Int, "0",
                "write the collapsed weights of every layer every this many steps (0 = only at the end)"),
            0),
      key("output.snapshot_factors", T::Bool, "false",
          "snapshots also hold each layer's raw tensors (factors/<i>) next to the collapsed weight"),
      range(key("output.compression", T::Int, "0", "deflate level 1-9 of snapshot and checkpoint arrays (0 = off)"), 0,
            9),
      range(key("output.checkpoint_every", T::Int, "0",
                "write a resumable checkpoint every this many steps (0 = at every evaluation); always at the end"),
            0),
      range(key("output.flush_seconds", T::Float, "10",
                "metrics reach the disk (and live readers) at least this often, and at every evaluation"),
            0, kInf, true),
      range(key("output.queue_mb", T::Float, "256",
                "bound of the background writer's queue (MiB, at most 1 TiB); training waits when it is full"),
            0, 1048576, true),
      key("output.swmr", T::Bool, "true",
          "write run files in HDF5 SWMR mode (live reading, crash-safe); false on file systems without POSIX "
          "write ordering (see docs/FORMAT.md)"),
  };
  // Parameterization keys: param.<field> for every layer, layers.<name or glob>.<field> per layer.
  static const std::vector<KeyDef> with_params = [] {
    std::vector<KeyDef> t = table;
    auto insert_at = std::find_if(t.begin(), t.end(), [](const KeyDef& d) { return d.key == "train.optimizer"; });
    std::vector<KeyDef> params;
    for (const KeyDef& f : param_fields()) {
      KeyDef global = f;
      global.key = "param." + f.key;
      params.push_back(global);
    }
    for (const KeyDef& f : param_fields()) {
      KeyDef layer = f;
      layer.key = "layers.*." + f.key;
      layer.default_yaml.clear();  // unset: the layer takes param.<field>
      layer.doc = "per-layer override of param." + f.key + " (layers.<name or glob>: fc2, \"h*.mlp.c_fc\")";
      params.push_back(layer);
    }
    params.push_back(choices(key("expand.schedule", Type::String, "all",
                                 "all: every expanded layer stays expanded; rotate: one at a time (memory)"),
                             {"all", "rotate"}));
    params.push_back(range(key("expand.period", Type::Int, "100", "rotate: steps between switches"), 1));
    t.insert(insert_at, params.begin(), params.end());
    return t;
  }();
  return with_params;
}

}  // namespace xpand::config
