// Run files: one HDF5 file per run holding root attributes (provenance, status, config), append-only
// metrics tables (/metrics/<table>/<column>, 1-D chunked unlimited datasets) and dense arrays
// (snapshots). RunWriter writes them, RunReader reads them back; every failure is a StoreError.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace xpand::store {

// Any failure of the store: the message names the file path, the object and what went wrong.
struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Writer of one run file: <out>/runs/<run_id>.h5 (the caller picks the path).
// Not thread-safe: use one writer from one thread.
class RunWriter {
 public:
  // Creates (truncates) the file. The parent directory must exist (the caller makes it).
  explicit RunWriter(const std::string& path);
  // Writes buffered rows, flushes and closes; never throws (errors at this point are lost:
  // call flush() first to see them).
  ~RunWriter();
  RunWriter(RunWriter&&) noexcept;
  RunWriter& operator=(RunWriter&&) noexcept;
  RunWriter(const RunWriter&) = delete;
  RunWriter& operator=(const RunWriter&) = delete;

  const std::string& path() const;

  // Root attributes (overwritten if present, whatever their old type). Strings are stored as
  // variable-length UTF-8 (h5py returns str), integers as int64, doubles as float64.
  void set_attr(const std::string& name, const std::string& value);
  void set_attr(const std::string& name, const char* value);
  void set_attr(const std::string& name, int64_t value);
  void set_attr(const std::string& name, double value);
  // Other integer types (int, unsigned, ...) are stored as int64; without this overload
  // set_attr("n", 5) would be ambiguous between int64_t and double.
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                                              !std::is_same_v<T, int64_t>,
                                          int> = 0>
  void set_attr(const std::string& name, T value) {
    set_attr(name, static_cast<int64_t>(value));
  }

  // Declares the metrics table /metrics/<table>/<column>: one 1-D, chunked, unlimited dataset per
  // column, float64 except the columns named in int_columns, which are int64 (names in int_columns
  // that are not columns are ignored). Throws if the table exists or the names are invalid
  // (empty, containing '/', duplicated).
  void add_table(const std::string& table, const std::vector<std::string>& columns,
                 const std::vector<std::string>& int_columns = {"step"});
  // Buffers one row (values in the order of the columns). Throws StoreError if the table is
  // unknown, the size mismatches, or an int64 column gets a non-integral value.
  void append(const std::string& table, const std::vector<double>& row);
  // Writes all buffered rows (extend + hyperslab write per column) and flushes the file to disk.
  void flush();
  // Number of rows appended so far (written + buffered). Throws StoreError for an unknown table.
  int64_t rows(const std::string& table) const;

  // Writes a dense float32 / float64 array at a path inside the file, creating intermediate
  // groups (e.g. "/snapshots/00000100/fc1/weight"). shape is row-major; an empty shape writes a
  // scalar. Throws if an object already exists at that path.
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape,
                   const float* data);
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape,
                   const double* data);

 private:
  struct Impl;
  Impl& impl() const;  // throws StoreError on a moved-from writer
  std::unique_ptr<Impl> impl_;
};

// Read side, used by tests and by `xpand inspect`. Opens the file read-only. Any malformed input
// (missing file, not an HDF5 file, missing object, wrong type) throws StoreError with a clear
// message, never crashes.
class RunReader {
 public:
  explicit RunReader(const std::string& path);
  ~RunReader();
  RunReader(RunReader&&) noexcept;
  RunReader& operator=(RunReader&&) noexcept;
  RunReader(const RunReader&) = delete;
  RunReader& operator=(const RunReader&) = delete;

  const std::string& path() const;

  bool has_attr(const std::string& name) const;
  std::vector<std::string> attr_names() const;  // root attributes, sorted
  std::string attr_string(const std::string& name) const;  // string attributes only
  int64_t attr_int(const std::string& name) const;         // integer attributes only
  double attr_double(const std::string& name) const;       // float or integer attributes

  std::vector<std::string> tables() const;  // sorted names under /metrics (empty if none)
  std::vector<std::string> columns(const std::string& table) const;  // sorted names under /metrics/<table>
  // One column as doubles (int64 columns converted). Throws if it is not a 1-D numeric dataset.
  std::vector<double> column(const std::string& table, const std::string& column) const;
  // Element type of a dataset: "int8".."int64", "uint8".."uint64", "float16", "float32",
  // "float64", "string" or "other".
  std::string dtype(const std::string& dataset_path) const;
  std::string column_dtype(const std::string& table, const std::string& column) const;

  bool has_object(const std::string& object_path) const;  // any object (group or dataset)
  // Sorted names of the links in a group (e.g. children("/snapshots") lists the snapshot steps).
  std::vector<std::string> children(const std::string& group_path) const;
  // Any float or integer dataset as doubles, row-major; its shape goes to *shape when given
  // (empty for a scalar).
  std::vector<double> read_array(const std::string& dataset_path,
                                 std::vector<int64_t>* shape) const;

 private:
  struct Impl;
  Impl& impl() const;  // throws StoreError on a moved-from reader
  std::unique_ptr<Impl> impl_;
};

}  // namespace xpand::store
