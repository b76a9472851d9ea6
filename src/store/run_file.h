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

// The HDF5 library's version, "1.10.8".
std::string hdf5_version();
// Whether this HDF5 build may be called from two threads (Debian's is thread-safe).
bool hdf5_threadsafe();

// Makes a freshly written file durable under its final name: fsync(tmp), rename(tmp, path),
// fsync(directory). A reader sees either the old file at `path` or the complete new one.
void commit_file(const std::string& tmp, const std::string& path);

struct WriterOptions {
  // Deflate level 1-9 for write_array datasets (0: uncompressed, contiguous).
  int compression = 0;
  // A Fletcher-32 checksum on every chunk of the non-scalar write_array datasets (chunked then),
  // which HDF5 verifies on every read: damaged raw data fails the read instead of being returned.
  bool checksum = false;
};

// Writer of one run file: <out>/runs/<run_id>.h5 (the caller picks the path).
// Not thread-safe: use one writer from one thread (the HDF5 library itself is thread-safe, so
// readers in other threads are fine).
//
// Files are created in the latest HDF5 format (checksummed metadata) so that start_swmr() can
// switch them to single-writer/multiple-reader mode: from then on every flush leaves the file in a
// state readers (h5py swmr=True, `xpand inspect`) can open, also after a SIGKILL of the writer.
class RunWriter {
 public:
  // Creates (truncates) the file. The parent directory must exist (the caller makes it).
  explicit RunWriter(const std::string& path, const WriterOptions& options = {});
  // Writes buffered rows, flushes and closes; never throws (errors at this point are lost:
  // call flush() first to see them).
  ~RunWriter();
  RunWriter(RunWriter&&) noexcept;
  RunWriter& operator=(RunWriter&&) noexcept;
  RunWriter(const RunWriter&) = delete;
  RunWriter& operator=(const RunWriter&) = delete;

  const std::string& path() const;
  // The name messages use for the file, after the caller renamed it (commit_file of a ".part").
  void set_path(const std::string& path);

  // Switches the file to SWMR writing (call once the root attributes and tables exist; groups,
  // datasets and attributes may still be created afterwards). Flushes first.
  void start_swmr();
  bool swmr() const;
  // Writes buffered rows, flushes and closes the file; the writer is unusable afterwards. Unlike
  // the destructor, reports failures.
  void close();
  // Writes buffered rows, flushes, closes and opens the file again (before start_swmr only):
  // HDF5's metadata cache starts over. After copy_from, HDF5 1.10.8 can leave the cache in a state
  // in which a later flush in SWMR mode fails ("slist not empty (2)?"); a resumed run's rebuilt
  // file is reopened before it switches to SWMR writing.
  void reopen();

  // Root attributes (overwritten if present, whatever their old type). Strings are stored as
  // variable-length UTF-8 (h5py returns str), integers as int64, doubles as float64.
  void set_attr(const std::string& name, const std::string& value);
  void set_attr(const std::string& name, const char* value);
  void set_attr(const std::string& name, int64_t value);
  void set_attr(const std::string& name, double value);
  // Other integer types (int, unsigned, ...) are stored as int64; without this overload
  // set_attr("n", 5) would be ambiguous between int64_t and double.
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, int64_t>, int> = 0>
  void set_attr(const std::string& name, T value) {
    set_attr(name, static_cast<int64_t>(value));
  }

  // Attributes of any existing group or dataset (absolute path, "/" is the root).
  void set_attr_at(const std::string& object_path, const std::string& name, const std::string& value);
  void set_attr_at(const std::string& object_path, const std::string& name, int64_t value);
  void set_attr_at(const std::string& object_path, const std::string& name, double value);
  // A 1-D array of strings (hostnames, devices per rank, axes); h5py returns an array of str, an
  // empty one for an empty list.
  void set_attr_at(const std::string& object_path, const std::string& name, const std::vector<std::string>& values);
  // A 1-D int64 / float64 array (shapes, widths, byte values); h5py returns a numpy array.
  void set_attr_at(const std::string& object_path, const std::string& name, const std::vector<int64_t>& values);
  void set_attr_at(const std::string& object_path, const std::string& name, const std::vector<double>& values);

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
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const float* data);
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const double* data);
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const int64_t* data);
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const uint8_t* data);
  // A 1-D dataset of variable-length UTF-8 strings (index summary columns).
  void write_strings(const std::string& dataset_path, const std::vector<std::string>& values);
  // Creates the groups of an absolute path that do not exist yet.
  void create_group(const std::string& group_path);
  // Copies a group or dataset (with its attributes and children) from another file to the same
  // path here; the source may be a run file still open for SWMR writing.
  void copy_from(const std::string& source_file, const std::string& object_path);
  // An external link at link_path to object target_object of file target_file (a path relative
  // to this file's directory, or absolute). The target need not exist yet.
  void link_external(const std::string& link_path, const std::string& target_file,
                     const std::string& target_object = "/");

 private:
  struct Impl;
  Impl& impl() const;  // throws StoreError on a moved-from writer
  std::unique_ptr<Impl> impl_;
};

// Read side, used by tests and by `xpand inspect`. Opens the file read-only, in SWMR-read mode
// when its format allows (files xpand writes: consistent while a run writes them, and after a
// killed writer), plainly otherwise.
// Any malformed input (missing file, not an HDF5 file, missing object, wrong type) throws
// StoreError with a clear message, never crashes.
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
  // The class of a root attribute: "int", "float", "string" or "other".
  std::string dtype_attr(const std::string& name) const;
  std::vector<std::string> attr_names() const;             // root attributes, sorted
  std::string attr_string(const std::string& name) const;  // string attributes only
  int64_t attr_int(const std::string& name) const;         // integer attributes only
  double attr_double(const std::string& name) const;       // float or integer attributes

  std::vector<std::string> tables() const;                           // sorted names under /metrics (empty if none)
  std::vector<std::string> columns(const std::string& table) const;  // sorted names under /metrics/<table>
  // One column as doubles (int64 columns converted). Throws if it is not a 1-D numeric dataset.
  std::vector<double> column(const std::string& table, const std::string& column) const;
  // Element type of a dataset: "int8".."int64", "uint8".."uint64", "float16", "float32",
  // "float64", "string" or "other".
  std::string dtype(const std::string& dataset_path) const;
  std::string column_dtype(const std::string& table, const std::string& column) const;

  // Attributes of any group or dataset (absolute path).
  bool has_attr_at(const std::string& object_path, const std::string& name) const;
  std::string attr_string_at(const std::string& object_path, const std::string& name) const;
  double attr_double_at(const std::string& object_path, const std::string& name) const;
  // An integer attribute, scalar or 1-D array, as a list.
  std::vector<int64_t> attr_ints_at(const std::string& object_path, const std::string& name) const;
  // The class of any attribute: "int", "float", "string" or "other".
  std::string dtype_attr_at(const std::string& object_path, const std::string& name) const;
  // A string attribute or a 1-D array of strings, as a list.
  std::vector<std::string> attr_strings(const std::string& name) const;
  // A 1-D string dataset.
  std::vector<std::string> read_strings(const std::string& dataset_path) const;

  bool has_object(const std::string& object_path) const;  // any object (group or dataset)
  // Sorted names of the links in a group (e.g. children("/snapshots") lists the snapshot steps).
  std::vector<std::string> children(const std::string& group_path) const;
  // A dataset's shape, without reading it.
  std::vector<int64_t> extent(const std::string& dataset_path) const;
  // Any float or integer dataset as doubles, row-major; its shape goes to *shape when given
  // (empty for a scalar).
  std::vector<double> read_array(const std::string& dataset_path, std::vector<int64_t>* shape) const;

 private:
  struct Impl;
  Impl& impl() const;  // throws StoreError on a moved-from reader
  std::unique_ptr<Impl> impl_;
};

}  // namespace xpand::store
