// Tests for the store's background writer, SWMR files, object attributes, links and copies,
// atomic commits, the index and checkpoints: each against values computed here independently.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "../test_util.h"
#include "store/async_writer.h"
#include "store/index.h"
#include "store/run_file.h"

namespace fs = std::filesystem;
using namespace xpand::store;

namespace {

TEST(AsyncRunWriter, JobsRunInOrderAndEveryRowArrives) {
  xpand::test::TempDir dir;
  const std::string path = dir.file("a.h5");
  {
    auto w = std::make_unique<RunWriter>(path);
    w->add_table("t", {"step", "x"});
    w->start_swmr();
    AsyncRunWriter aw(std::move(w), 1 << 20, 0.05);
    for (int i = 1; i <= 5000; ++i) aw.post([i](RunWriter& w) { w.append("t", {double(i), 0.5 * i}); }, 64);
    aw.close();
  }
  RunReader r(path);
  auto steps = r.column("t", "step"), x = r.column("t", "x");
  ASSERT_EQ(steps.size(), 5000u);
  for (size_t i = 0; i < steps.size(); ++i) {
    ASSERT_EQ(steps[i], double(i + 1));
    ASSERT_EQ(x[i], 0.5 * double(i + 1));
  }
}

TEST(AsyncRunWriter, FullQueueBlocksThePosterAndMemoryStaysBounded) {
  xpand::test::TempDir dir;
  auto w = std::make_unique<RunWriter>(dir.file("b.h5"));
  w->add_table("t", {"step"});
  AsyncRunWriter aw(std::move(w), /*max_queue_bytes=*/1000, 10);
  // Slow jobs of 400 bytes: at most 2 fit the bound, so posting 10 must wait for the writer.
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i)
    aw.post([](RunWriter&) { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }, 400);
  const double posted_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  aw.sync();
  EXPECT_GT(aw.blocked_seconds(), 0.05);  // 10 jobs × 20 ms, at most ~3 queued at a time
  EXPECT_GT(posted_after, 0.1);
}

TEST(AsyncRunWriter, AFailedJobSurfacesOnTheNextCallAndStopsWriting) {
  xpand::test::TempDir dir;
  const std::string path = dir.file("c.h5");
  auto w = std::make_unique<RunWriter>(path);
  w->add_table("t", {"step"});
  AsyncRunWriter aw(std::move(w), 1 << 20, 10);
  aw.post([](RunWriter& w) { w.append("t", {1}); });
  aw.post([](RunWriter& w) { w.append("nope", {2}); });  // unknown table: StoreError in the thread
  aw.post([](RunWriter& w) { w.append("t", {3}); });     // skipped after the failure
  try {
    aw.sync();
    FAIL() << "sync() should rethrow the writer's error";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown table"), std::string::npos) << e.what();
  }
  EXPECT_THROW(aw.post([](RunWriter&) {}), StoreError);
  EXPECT_THROW(aw.close(), StoreError);
}

TEST(AsyncRunWriter, RowsReachTheFileWithinTheFlushPeriodWithoutAnExplicitFlush) {
  xpand::test::TempDir dir;
  const std::string path = dir.file("d.h5");
  auto w = std::make_unique<RunWriter>(path);
  w->add_table("t", {"step"});
  w->start_swmr();
  AsyncRunWriter aw(std::move(w), 1 << 20, 0.1);
  aw.post([](RunWriter& w) { w.append("t", {7}); });
  // Another reader of the same file (SWMR read) sees the row once the writer's period passed.
  size_t rows = 0;
  for (int i = 0; i < 50 && rows == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    rows = RunReader(path).column("t", "step").size();
  }
  EXPECT_EQ(rows, 1u);
  aw.close();
}

TEST(RunWriterSwmr, ObjectsAttributesAndLinksAfterSwmrStarts) {
  xpand::test::TempDir dir;
  const std::string path = dir.file("e.h5"), other = dir.file("other.h5");
  {
    RunWriter o(other);
    o.set_attr("who", "other");
    o.close();
  }
  {
    WriterOptions opts;
    opts.compression = 6;
    RunWriter w(path, opts);
    w.set_attr("status", "running");
    w.link_external("/link", "other.h5");
    w.start_swmr();
    EXPECT_TRUE(w.swmr());
    std::vector<double> big(300 * 200);
    for (size_t i = 0; i < big.size(); ++i) big[i] = double(i % 17);
    w.write_array("/snap/00000001/fc1/weight", {300, 200}, big.data());
    w.set_attr_at("/snap/00000001/fc1", "numerical_rank", int64_t(17));
    w.set_attr_at("/snap/00000001/fc1", "stable_rank", 2.5);
    w.set_attr_at("/", "hosts", std::vector<std::string>{"a", "bé"});
    w.write_strings("/s", {"x", "", "zz"});
    const uint8_t bytes[3] = {0, 128, 255};
    w.write_array("/u8", {3}, bytes);
    const int64_t ints[2] = {-(int64_t(1) << 40), 3};
    w.write_array("/i64", {2}, ints);
    w.set_attr("status", "completed");
    w.close();
  }
  RunReader r(path);
  EXPECT_EQ(r.attr_string("status"), "completed");
  EXPECT_EQ(r.attr_double_at("/snap/00000001/fc1", "numerical_rank"), 17);
  EXPECT_EQ(r.attr_double_at("/snap/00000001/fc1", "stable_rank"), 2.5);
  EXPECT_EQ(r.attr_strings("hosts"), (std::vector<std::string>{"a", "bé"}));
  EXPECT_EQ(r.read_strings("/s"), (std::vector<std::string>{"x", "", "zz"}));
  EXPECT_EQ(r.read_array("/u8", nullptr), (std::vector<double>{0, 128, 255}));
  EXPECT_EQ(r.read_array("/i64", nullptr), (std::vector<double>{-1099511627776.0, 3}));
  std::vector<int64_t> shape;
  auto back = r.read_array("/snap/00000001/fc1/weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{300, 200}));
  for (size_t i = 0; i < back.size(); ++i) ASSERT_EQ(back[i], double(i % 17));
  EXPECT_LT(fs::file_size(path), 300u * 200u * 8u / 4u);  // deflate: 17 distinct values compress well
  EXPECT_EQ(r.attr_string_at("/link", "who"), "other");   // the external link resolves next to the file
}

TEST(RunWriterSwmr, CopyFromKeepsChildrenAndAttributes) {
  xpand::test::TempDir dir;
  const std::string src = dir.file("src.h5"), dst = dir.file("dst.h5");
  {
    RunWriter w(src);
    w.start_swmr();
    const double v[4] = {1, 2, 3, 4};
    w.write_array("/snapshots/00000010/fc1/weight", {2, 2}, v);
    w.set_attr_at("/snapshots/00000010/fc1", "effective_rank", 1.75);
    w.flush();  // left open: the copy reads a file that is still being written
    RunWriter d(dst);
    d.copy_from(src, "/snapshots/00000010");
    d.close();
  }
  RunReader r(dst);
  EXPECT_EQ(r.read_array("/snapshots/00000010/fc1/weight", nullptr), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(r.attr_double_at("/snapshots/00000010/fc1", "effective_rank"), 1.75);
}

TEST(CommitFile, ReplacesAtomicallyAndRefusesAMissingSource) {
  xpand::test::TempDir dir;
  const std::string path = dir.file("f.h5"), tmp = dir.file("f.h5.tmp");
  {
    RunWriter w(path);
    w.set_attr("v", int64_t(1));
  }
  {
    RunWriter w(tmp);
    w.set_attr("v", int64_t(2));
    w.close();
  }
  commit_file(tmp, path);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_EQ(RunReader(path).attr_int("v"), 2);
  EXPECT_THROW(commit_file(dir.file("missing"), path), StoreError);
  EXPECT_EQ(RunReader(path).attr_int("v"), 2);
}

TEST(Index, SummarisesRunsAndSkipsForeignFiles) {
  xpand::test::TempDir dir;
  fs::create_directories(dir.path() / "runs");
  for (int i = 0; i < 3; ++i) {
    RunWriter w(dir.file(fmt::format("runs/r{}.h5", i)));
    w.set_attr("schema_version", int64_t(2));
    w.set_attr("run_id", fmt::format("r{}", i));
    w.set_attr("status", i == 2 ? "running" : "completed");
    w.set_attr("total_steps", int64_t(10));
    w.set_attr_at("/", "axes", std::vector<std::string>{"param.factor"});
    w.set_attr("param.factor", int64_t(i + 1));
    w.add_table("eval", {"step", "test_acc"});
    w.append("eval", {10, 0.5 + 0.1 * i});
    w.add_table("train", {"step"});
    for (int s = 1; s <= (i == 2 ? 4 : 10); ++s) w.append("train", {double(s)});
    w.close();
  }
  { RunWriter w(dir.file("runs/foreign.h5")); }  // no xpand attributes
  {
    RunWriter w(dir.file("runs/future.h5"));
    w.set_attr("schema_version", int64_t(99));
    w.set_attr("run_id", "future");
    w.set_attr("status", "completed");
  }
  IndexResult res = index_rebuild(dir.path().string());
  EXPECT_EQ(res.runs, 3);
  ASSERT_EQ(res.skipped.size(), 2u);
  RunReader idx(res.path);
  EXPECT_EQ(idx.read_strings("/summary/run_id"), (std::vector<std::string>{"r0", "r1", "r2"}));
  EXPECT_EQ(idx.read_strings("/summary/status"), (std::vector<std::string>{"completed", "completed", "running"}));
  EXPECT_EQ(idx.read_strings("/summary/axis.param.factor"), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(idx.read_array("/summary/steps", nullptr), (std::vector<double>{10, 10, 4}));
  auto acc = idx.read_array("/summary/test_acc", nullptr);
  EXPECT_DOUBLE_EQ(acc[2], 0.7);
  EXPECT_EQ(idx.attr_string_at("/runs/r1", "run_id"), "r1");  // external link into runs/r1.h5
  bool newer = false;
  for (const auto& s : res.skipped) newer |= s.find("schema_version 99 is newer") != std::string::npos;
  EXPECT_TRUE(newer);
}

}  // namespace
