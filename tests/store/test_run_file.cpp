// Tests for the run-file store: attribute, metrics-table and array round trips through RunWriter /
// RunReader, and StoreError (naming the file) for every malformed use or input.
// Set XPAND_STORE_SAMPLE_OUT=/some/file.h5 to also keep a schema-shaped sample for read_run.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/utf8.h"
#include "store/index.h"
#include "store/run_file.h"

namespace fs = std::filesystem;
using xpand::store::RunReader;
using xpand::store::RunWriter;
using xpand::store::StoreError;

namespace {

class RunFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("xpand_store_" + std::string(info->name()) + "_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Runs fn, expecting a StoreError whose message contains the file path and `needle`.
void expect_store_error(const std::function<void()>& fn, const std::string& path, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected StoreError containing '" << needle << "'";
  } catch (const StoreError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "path missing from: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "'" << needle << "' missing from: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected StoreError, got another exception: " << e.what();
  }
}

// Row r of the test table: step, loss, lr.
std::vector<double> train_row(int64_t r) {
  return {static_cast<double>(r * 10), 1.0 / (1.0 + static_cast<double>(r)),
          0.1 * std::pow(0.999, static_cast<double>(r))};
}

TEST_F(RunFileTest, AttributesRoundTripAndOverwrite) {
  const std::string path = file("attrs.h5");
  const std::string utf8 = "r\xC3\xA9sum\xC3\xA9 \xE2\x9C\x93";  // "résumé ✓"
  const std::string big_config(200000, 'x');                     // beyond the 64 KiB header limit
  {
    RunWriter w(path);
    EXPECT_EQ(w.path(), path);
    w.set_attr("run_id", std::string("abc123"));
    w.set_attr("status", "running");
    w.set_attr("schema_version", int64_t{1});
    w.set_attr("seed", 42);  // plain int goes to the int64 overload
    w.set_attr("big", int64_t{1} << 62);
    w.set_attr("neg", int64_t{-7});
    w.set_attr("lr", 0.1);
    w.set_attr("tiny", 1e-300);
    w.set_attr("text", utf8);
    w.set_attr("empty", "");
    w.set_attr("config", big_config);
    // Overwrites: same type, and a change of type.
    w.set_attr("status", "completed");
    w.set_attr("lr", 0.25);
    w.set_attr("seed", "forty-two");
  }
  RunReader r(path);
  EXPECT_TRUE(r.has_attr("run_id"));
  EXPECT_FALSE(r.has_attr("nope"));
  EXPECT_EQ(r.attr_string("run_id"), "abc123");
  EXPECT_EQ(r.attr_string("status"), "completed");
  EXPECT_EQ(r.attr_int("schema_version"), 1);
  EXPECT_EQ(r.attr_int("big"), int64_t{1} << 62);
  EXPECT_EQ(r.attr_int("neg"), -7);
  EXPECT_EQ(r.attr_double("lr"), 0.25);
  EXPECT_EQ(r.attr_double("tiny"), 1e-300);
  EXPECT_EQ(r.attr_double("schema_version"), 1.0);  // integers read as double too
  EXPECT_EQ(r.attr_string("text"), utf8);
  EXPECT_EQ(r.attr_string("empty"), "");
  EXPECT_EQ(r.attr_string("config"), big_config);
  EXPECT_EQ(r.attr_string("seed"), "forty-two");
  const std::vector<std::string> names = {"big",  "config", "empty", "lr",  "neg", "run_id", "schema_version",
                                          "seed", "status", "text",  "tiny"};
  EXPECT_EQ(r.attr_names(), names);
  EXPECT_TRUE(r.tables().empty());
}

TEST_F(RunFileTest, TableGrowsPastOneChunkAcrossFlushes) {
  const std::string path = file("table.h5");
  const int64_t total = 3000;
  // Pieces of uneven size so that writes straddle the 1024-row chunk boundaries.
  const std::vector<int64_t> pieces = {1, 7, 500, 1023, 1024, 1, 444};
  {
    RunWriter w(path);
    w.add_table("train", {"step", "loss", "lr"});
    w.add_table("eval", {"step", "test_acc"});
    EXPECT_EQ(w.rows("train"), 0);
    int64_t r = 0;
    for (int64_t piece : pieces) {
      for (int64_t i = 0; i < piece; ++i, ++r) w.append("train", train_row(r));
      EXPECT_EQ(w.rows("train"), r);
      w.flush();
      EXPECT_EQ(w.rows("train"), r);
      w.append("eval", {static_cast<double>(r), 0.5 + 1e-4 * static_cast<double>(r)});
    }
    ASSERT_EQ(r, total);
    w.flush();
    // Rows appended after the last flush are written by the destructor.
    w.append("eval", {1e6, 0.99});
    EXPECT_EQ(w.rows("eval"), static_cast<int64_t>(pieces.size()) + 1);
  }
  RunReader rd(path);
  EXPECT_EQ(rd.tables(), (std::vector<std::string>{"eval", "train"}));
  EXPECT_EQ(rd.columns("train"), (std::vector<std::string>{"loss", "lr", "step"}));
  const std::vector<double> step = rd.column("train", "step");
  const std::vector<double> loss = rd.column("train", "loss");
  const std::vector<double> lr = rd.column("train", "lr");
  ASSERT_EQ(step.size(), static_cast<size_t>(total));
  ASSERT_EQ(loss.size(), static_cast<size_t>(total));
  ASSERT_EQ(lr.size(), static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) {
    const std::vector<double> want = train_row(i);
    ASSERT_EQ(step[i], want[0]) << "row " << i;
    ASSERT_EQ(loss[i], want[1]) << "row " << i;  // bit-exact float64
    ASSERT_EQ(lr[i], want[2]) << "row " << i;
  }
  const std::vector<double> eval_step = rd.column("eval", "step");
  ASSERT_EQ(eval_step.size(), pieces.size() + 1);
  EXPECT_EQ(eval_step.back(), 1e6);
  EXPECT_EQ(rd.column("eval", "test_acc").back(), 0.99);
}

TEST_F(RunFileTest, IntColumnsStayInt64) {
  const std::string path = file("dtype.h5");
  const int64_t big = (int64_t{1} << 53);  // exactly representable in double
  {
    RunWriter w(path);
    w.add_table("train", {"step", "loss"});
    w.add_table("custom", {"epoch", "step", "acc"}, {"epoch", "step"});
    w.add_table("nostep", {"a", "b"});  // default int_columns {"step"} absent: ignored
    w.append("train", {0, 1.5});
    w.append("train", {static_cast<double>(big), 0.5});
    w.append("custom", {3, -5, 0.75});
    w.append("nostep", {1.25, 2.5});
  }
  RunReader r(path);
  EXPECT_EQ(r.column_dtype("train", "step"), "int64");
  EXPECT_EQ(r.column_dtype("train", "loss"), "float64");
  EXPECT_EQ(r.column_dtype("custom", "epoch"), "int64");
  EXPECT_EQ(r.column_dtype("custom", "step"), "int64");
  EXPECT_EQ(r.column_dtype("custom", "acc"), "float64");
  EXPECT_EQ(r.column_dtype("nostep", "a"), "float64");
  EXPECT_EQ(r.column("train", "step"), (std::vector<double>{0, static_cast<double>(big)}));
  EXPECT_EQ(r.column("custom", "step"), (std::vector<double>{-5}));
  // The on-disk integer is the exact int64 (read through read_array too).
  std::vector<int64_t> shape;
  EXPECT_EQ(r.read_array("/metrics/custom/epoch", &shape), (std::vector<double>{3}));
  EXPECT_EQ(shape, (std::vector<int64_t>{1}));
}

TEST_F(RunFileTest, WriteArrayRoundTripWithNestedGroups) {
  const std::string path = file("arrays.h5");
  std::vector<float> weight(3 * 4);
  for (size_t i = 0; i < weight.size(); ++i) weight[i] = 0.1f * static_cast<float>(i) - 0.5f;
  const std::vector<double> bias = {1.0 / 3.0, -2.0, 1e-310, 4.0};
  std::vector<float> cube(2 * 3 * 5);
  for (size_t i = 0; i < cube.size(); ++i) cube[i] = static_cast<float>(i);
  const double scalar = 3.25;
  {
    RunWriter w(path);
    w.write_array("/snapshots/00000100/fc1/weight", {3, 4}, weight.data());
    w.write_array("/snapshots/00000100/fc1/bias", {4}, bias.data());
    w.write_array("snapshots/00000200/conv/kernel", {2, 3, 5}, cube.data());  // relative = root
    w.write_array("/snapshots/00000200/scale", {}, &scalar);
    w.write_array("/snapshots/00000200/empty", {0, 5}, static_cast<const float*>(nullptr));
  }
  RunReader r(path);
  EXPECT_TRUE(r.has_object("/snapshots/00000100/fc1"));
  EXPECT_FALSE(r.has_object("/snapshots/00000300"));
  EXPECT_EQ(r.dtype("/snapshots/00000100/fc1/weight"), "float32");
  EXPECT_EQ(r.dtype("/snapshots/00000100/fc1/bias"), "float64");

  std::vector<int64_t> shape;
  std::vector<double> got = r.read_array("/snapshots/00000100/fc1/weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{3, 4}));
  ASSERT_EQ(got.size(), weight.size());
  for (size_t i = 0; i < weight.size(); ++i) EXPECT_EQ(got[i], static_cast<double>(weight[i]));

  got = r.read_array("/snapshots/00000100/fc1/bias", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(got, bias);

  got = r.read_array("/snapshots/00000200/conv/kernel", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 3, 5}));
  ASSERT_EQ(got.size(), cube.size());
  for (size_t i = 0; i < cube.size(); ++i) EXPECT_EQ(got[i], static_cast<double>(cube[i]));

  got = r.read_array("/snapshots/00000200/scale", &shape);
  EXPECT_TRUE(shape.empty());
  EXPECT_EQ(got, (std::vector<double>{3.25}));

  got = r.read_array("/snapshots/00000200/empty", nullptr);
  EXPECT_TRUE(got.empty());
}

TEST_F(RunFileTest, MovedWriterKeepsWriting) {
  const std::string path = file("moved.h5");
  {
    RunWriter a(path);
    a.add_table("train", {"step", "loss"});
    a.append("train", {1, 0.5});
    RunWriter b(std::move(a));
    b.append("train", {2, 0.25});
    EXPECT_EQ(b.path(), path);
    EXPECT_EQ(b.rows("train"), 2);
    EXPECT_THROW(a.append("train", {3, 0.1}), StoreError);  // NOLINT(bugprone-use-after-move)
    RunWriter c(file("other.h5"));
    c = std::move(b);  // closes other.h5, takes over moved.h5
    c.append("train", {3, 0.125});
  }
  RunReader r(path);
  EXPECT_EQ(r.column("train", "loss"), (std::vector<double>{0.5, 0.25, 0.125}));
  RunReader other(file("other.h5"));  // closed cleanly by the move assignment
  EXPECT_TRUE(other.tables().empty());
}

TEST_F(RunFileTest, WriterErrorsNameTheFile) {
  const std::string path = file("errors.h5");
  RunWriter w(path);
  w.add_table("train", {"step", "loss"});
  expect_store_error([&] { w.append("nope", {1, 2}); }, path, "table 'nope'");
  expect_store_error([&] { w.append("train", {1, 2, 3}); }, path, "row has 3 values");
  expect_store_error([&] { w.append("train", {}); }, path, "table has 2 columns");
  expect_store_error([&] { w.append("train", {1.5, 2}); }, path, "not an int64");
  expect_store_error([&] { w.append("train", {NAN, 2}); }, path, "not an int64");
  expect_store_error([&] { w.rows("nope"); }, path, "table 'nope'");
  expect_store_error([&] { w.add_table("train", {"step"}); }, path, "already declared");
  expect_store_error([&] { w.add_table("dup", {"a", "a"}); }, path, "duplicate column 'a'");
  expect_store_error([&] { w.add_table("empty", {}); }, path, "no columns");
  expect_store_error([&] { w.add_table("a/b", {"x"}); }, path, "contains '/'");
  expect_store_error([&] { w.set_attr("", "x"); }, path, "name is empty");
  const float v[2] = {1, 2};
  w.write_array("/snap/x", {2}, v);
  expect_store_error([&] { w.write_array("/snap/x", {2}, v); }, path, "already exists");
  expect_store_error([&] { w.write_array("/snap/y", {-1}, v); }, path, "negative extent");
  expect_store_error([&] { w.write_array("/snap/z", {2}, static_cast<const float*>(nullptr)); }, path, "null");
  // Failed calls leave the writer usable.
  w.append("train", {1, 0.5});
  w.flush();
  EXPECT_EQ(w.rows("train"), 1);

  const std::string no_dir = file("missing_dir/run.h5");
  expect_store_error([&] { RunWriter bad(no_dir); }, no_dir, "does not exist");
}

TEST_F(RunFileTest, ReaderErrorsNameTheFile) {
  const std::string garbage = file("garbage.h5");
  {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 7919) & 0xff));
  }
  expect_store_error([&] { RunReader r(garbage); }, garbage, "not an HDF5 file");

  const std::string empty = file("empty.h5");
  { std::ofstream out(empty, std::ios::binary); }
  expect_store_error([&] { RunReader r(empty); }, empty, "not an HDF5 file");

  const std::string missing = file("missing.h5");
  expect_store_error([&] { RunReader r(missing); }, missing, "no such file");
  expect_store_error([&] { RunReader r(dir_.string()); }, dir_.string(), "not a regular file");

  // A truncated HDF5 file (e.g. a crashed writer): an error, not a crash.
  const std::string good = file("good.h5");
  {
    RunWriter w(good);
    w.set_attr("status", "completed");
    w.set_attr("n", int64_t{3});
    w.add_table("train", {"step", "loss"});
    for (int i = 0; i < 2000; ++i) w.append("train", {static_cast<double>(i), 1.0});
    std::vector<double> big(10000, 1.0);
    w.write_array("/snapshots/1/w", {100, 100}, big.data());
  }
  const std::string truncated = file("truncated.h5");
  fs::copy_file(good, truncated);
  fs::resize_file(truncated, fs::file_size(good) / 2);
  try {
    RunReader r(truncated);
    (void)r.column("train", "loss");
    (void)r.read_array("/snapshots/1/w", nullptr);
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find(truncated), std::string::npos) << e.what();
  }

  RunReader r(good);
  expect_store_error([&] { r.attr_string("nope"); }, good, "attribute 'nope': no such attribute");
  expect_store_error([&] { r.attr_int("nope"); }, good, "no such attribute");
  expect_store_error([&] { r.attr_double("nope"); }, good, "no such attribute");
  expect_store_error([&] { r.attr_int("status"); }, good, "not an integer");
  expect_store_error([&] { r.attr_double("status"); }, good, "not a number");
  expect_store_error([&] { r.attr_string("n"); }, good, "not a string");
  expect_store_error([&] { r.column("train", "nope"); }, good, "no such dataset");
  expect_store_error([&] { r.column("eval", "step"); }, good, "table 'eval'");
  expect_store_error([&] { r.columns("eval"); }, good, "no such table");
  expect_store_error([&] { r.column_dtype("train", "nope"); }, good, "no such dataset");
  expect_store_error([&] { r.read_array("/snapshots/2/w", nullptr); }, good, "no such dataset");
  expect_store_error([&] { r.read_array("/snapshots/1", nullptr); }, good, "is not a dataset");
  // A path through a dataset is "missing", not an HDF5 failure.
  expect_store_error([&] { r.read_array("/snapshots/1/w/x", nullptr); }, good, "no such dataset");
  EXPECT_FALSE(r.has_object("/snapshots/1/w/x"));
}

}  // namespace

// Every string the reader hands out is valid UTF-8, whatever bytes the file holds: attribute values
// (variable-length; fixed-length ones with embedded NULs: tests/store/utf8_strings.py), attribute names, link names,
// string lists and string datasets; control characters are kept (they are valid UTF-8) for the printers to escape.
TEST_F(RunFileTest, ReaderSanitisesInvalidUtf8FromEveryString) {
  const std::string bad = std::string("id-\xC0\x80-\xED\xA0\x80-\xF4\x90\x80\x80-\xFF-") + "\x1b[2J\x01" + "end";
  const std::string clean = xpand::utf8::sanitize(bad);
  ASSERT_TRUE(xpand::utf8::valid(clean));
  ASSERT_NE(clean, bad);
  const std::string bad_name = "attr\xC3\x28";
  const std::string p = file("bad_utf8.h5");
  {
    RunWriter w(p);
    w.set_attr("run_id", bad);
    w.set_attr(bad_name, "v");
    w.set_attr_at("/", "axes", std::vector<std::string>{bad, "ok"});
    w.write_strings("/summary/run_id", {bad, "ok", bad});
    const double x[2] = {1, 2};
    w.write_array("/snapshots/" + bad_name + "/weight", {1, 2}, x);
    w.close();
  }
  RunReader r(p);
  EXPECT_EQ(r.attr_string("run_id"), clean);
  for (const auto& name : r.attr_names()) EXPECT_TRUE(xpand::utf8::valid(name)) << name;
  const auto names = r.attr_names();
  EXPECT_NE(std::find(names.begin(), names.end(), xpand::utf8::sanitize(bad_name)), names.end());
  EXPECT_EQ(r.attr_strings("axes"), (std::vector<std::string>{clean, "ok"}));
  EXPECT_EQ(r.read_strings("/summary/run_id"), (std::vector<std::string>{clean, "ok", clean}));
  for (const auto& c : r.children("/snapshots")) EXPECT_EQ(c, xpand::utf8::sanitize(bad_name));
}

// After the caller renames a file (a run file is set up as <id>.h5.part and renamed to <id>.h5),
// the writer's messages (a full disk, an I/O error) name the file by its new name.
TEST_F(RunFileTest, MessagesNameTheFileAfterARename) {
  const std::string part = file("run.h5.part"), final_path = file("run.h5");
  RunWriter w(part);
  w.add_table("train", {"step", "loss"});
  w.flush();
  xpand::store::commit_file(part, final_path);
  w.set_path(final_path);
  try {
    w.add_table("train", {"step"});
    FAIL() << "adding a table twice did not throw";
  } catch (const StoreError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(final_path), std::string::npos) << m;
    EXPECT_EQ(m.find(".part"), std::string::npos) << m;
  }
}

// reopen(): rows appended before and after it land in order, a table keeps growing, and the
// file then switches to SWMR writing; reopen in SWMR mode is refused.
TEST_F(RunFileTest, ReopenKeepsTablesGrowing) {
  const std::string path = file("reopen.h5");
  {
    RunWriter w(path);
    w.add_table("train", {"step", "loss", "lr"});
    for (int64_t r = 0; r < 5; ++r) w.append("train", train_row(r));
    const std::vector<double> a = {1, 2, 3};
    w.write_array("/snapshots/00000010/fc1/weight", {3}, a.data());
    w.reopen();
    for (int64_t r = 5; r < 9; ++r) w.append("train", train_row(r));
    w.start_swmr();
    EXPECT_THROW(w.reopen(), StoreError);
    w.write_array("/snapshots/00000020/fc1/weight", {3}, a.data());
    for (int64_t r = 9; r < 12; ++r) w.append("train", train_row(r));
    w.close();
  }
  RunReader r(path);
  const auto steps = r.column("train", "step");
  ASSERT_EQ(steps.size(), 12u);
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(steps[size_t(i)], train_row(i)[0]);
  EXPECT_EQ(r.children("/snapshots"), (std::vector<std::string>{"00000010", "00000020"}));
}

// A half-written newest snapshot (a killed or failed writer): snapshot_list marks it, a run that did
// not complete still reads (summary, index), a completed one with the same hole is refused.
TEST_F(RunFileTest, HalfWrittenNewestSnapshotIsMarkedNotFatal) {
  auto make = [&](const std::string& name, const std::string& status, bool layer_without_weight) {
    const std::string path = file(name);
    RunWriter w(path);
    w.set_attr("schema_version", int64_t(2));
    w.set_attr("run_id", name);
    w.set_attr("status", status);
    const std::vector<double> a = {1, 2, 3, 4};
    for (const char* layer : {"fc1", "fc2"})
      w.write_array(std::string("/snapshots/00000010/") + layer + "/weight", {2, 2}, a.data());
    w.write_array("/snapshots/00000020/fc1/weight", {2, 2}, a.data());  // fc2 never came
    if (layer_without_weight) w.write_array("/snapshots/00000020/fc2/bias", {2}, a.data());
    w.close();
    return path;
  };
  for (bool hole : {false, true}) {
    const std::string failed = make(hole ? "f1.h5" : "f0.h5", "failed", hole);
    auto snaps = xpand::store::snapshot_list(RunReader(failed));
    ASSERT_EQ(snaps.size(), 2u);
    EXPECT_TRUE(snaps[0].complete);
    EXPECT_FALSE(snaps[1].complete) << "hole " << hole;
    EXPECT_NO_THROW(xpand::store::summary_read(failed)) << "hole " << hole;
  }
  const std::string done = make("c.h5", "completed", true);
  expect_store_error([&] { xpand::store::summary_read(done); }, done, "/snapshots/00000020/fc2/weight is missing");
  // The writer's `layers` attribute on the snapshot group decides: equal to the layer groups present
  // (each with weight and spectrum) is complete, fewer is not (also for a run's first snapshot); a
  // layer with its weight but without its spectrum (written last) is not complete either.
  auto live = [&](const std::string& name, int64_t layers_attr, int present, bool spectrum) {
    const std::string path = file(name);
    RunWriter w(path);
    w.set_attr("schema_version", int64_t(2));
    w.set_attr("run_id", name);
    w.set_attr("status", "running");
    const std::vector<double> a = {1, 2, 3, 4}, sv = {2, 1};
    for (int i = 0; i < present; ++i) {
      const std::string g = "/snapshots/00000010/fc" + std::to_string(i + 1);
      w.write_array(g + "/weight", {2, 2}, a.data());
      if (spectrum) w.write_array(g + "/singular_values", {2}, sv.data());
    }
    if (layers_attr > 0) w.set_attr_at("/snapshots/00000010", "layers", layers_attr);
    w.close();
    return xpand::store::snapshot_list(RunReader(path)).back().complete;
  };
  EXPECT_TRUE(live("l2of2.h5", 2, 2, true));
  EXPECT_FALSE(live("l1of2.h5", 2, 1, true));  // the only snapshot, half-written
  EXPECT_FALSE(live("nosv.h5", 2, 2, false));  // weights, no spectra yet
  EXPECT_TRUE(live("noattr.h5", 0, 2, true));  // an older file: judged by its contents
}
