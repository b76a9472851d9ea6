// RunWriter / RunReader over the HDF5 C library: RAII handles for every HDF5 id, every call checked
// and turned into a StoreError naming file, object and cause (with HDF5's own description).
// HDF5's automatic error-stack printing is switched off; errors surface only as exceptions.
#include "store/run_file.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <new>
#include <set>
#include <utility>

#include "core/utf8.h"

namespace xpand::store {
namespace {

constexpr hsize_t kChunkRows = 1024;
// Rows buffered per table before append() writes them out on its own (without a disk flush).
constexpr size_t kMaxBufferedRows = 1 << 16;

// ---- errors ----------------------------------------------------------------------------------

// Called from every constructor: no HDF5 error stack dumps on stderr, only exceptions.
void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

struct StackWalk {
  std::string outer;  // closest to the API call
  std::string inner;  // most specific
};

herr_t walk_cb(unsigned n, const H5E_error2_t* err, void* data) {
  auto* w = static_cast<StackWalk*>(data);
  if (err == nullptr || err->desc == nullptr) return 0;
  if (n == 0) w->inner = err->desc;
  w->outer = err->desc;
  return 0;
}

// HDF5's description of the error just raised (must run before any other HDF5 call).
std::string hdf5_detail() {
  StackWalk w;
  if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w) < 0 || w.outer.empty()) return "";
  std::string d = w.outer;
  if (!w.inner.empty() && w.inner != w.outer) d += ": " + w.inner;
  return " (HDF5: " + d + ")";
}

std::string message(const std::string& path, const std::string& object, const std::string& what) {
  std::string m = "xpand store: " + path;
  if (!object.empty()) m += ": " + object;
  return m + ": " + what;
}

[[noreturn]] void fail(const std::string& path, const std::string& object, const std::string& what) {
  throw StoreError(message(path, object, what));
}

// Failure of an HDF5 call: the message carries HDF5's description of the cause.
[[noreturn]] void fail_hdf5(const std::string& path, const std::string& object, const std::string& what) {
  std::string detail = hdf5_detail();
  throw StoreError(message(path, object, what) + detail);
}

void check(herr_t status, const std::string& path, const std::string& object, const std::string& what) {
  if (status < 0) fail_hdf5(path, object, what);
}

// ---- RAII handle -----------------------------------------------------------------------------

using CloseFn = herr_t (*)(hid_t);

class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, CloseFn close_fn) : id_(id), close_(close_fn) {}
  ~Hid() { reset(); }
  Hid(Hid&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  void reset() noexcept {
    if (id_ >= 0 && close_ != nullptr) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  // Closes now and reports a failed close (used where the close itself writes data).
  herr_t close() noexcept {
    herr_t s = 0;
    if (id_ >= 0 && close_ != nullptr) s = close_(id_);
    id_ = H5I_INVALID_HID;
    return s;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  CloseFn close_ = nullptr;
};

// Wraps a freshly returned id, throwing if the call failed.
Hid make(hid_t id, CloseFn close_fn, const std::string& path, const std::string& object, const std::string& what) {
  if (id < 0) fail_hdf5(path, object, what);
  return Hid(id, close_fn);
}

// ---- names and paths ---------------------------------------------------------------------------

std::string quoted(const std::string& kind, const std::string& name) { return kind + " '" + name + "'"; }

void check_name(const std::string& path, const std::string& kind, const std::string& name) {
  if (name.empty()) fail(path, kind + " ''", "name is empty");
  if (name.find('/') != std::string::npos) fail(path, quoted(kind, name), "name contains '/'");
  if (name == "." || name == "..") fail(path, quoted(kind, name), "name is not allowed");
  if (name.find('\0') != std::string::npos) fail(path, quoted(kind, name), "name contains NUL");
}

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (j > i) parts.push_back(p.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

enum class Kind { None, Group, Dataset, Other };

// What lives at an absolute path, walking component by component so that a missing (or non-group)
// intermediate never makes HDF5 fail.
Kind object_kind(hid_t file, const std::string& file_path, const std::string& object_path) {
  const std::vector<std::string> parts = split_path(object_path);
  if (parts.empty()) return Kind::Group;  // the root
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    prefix += "/" + parts[i];
    htri_t e = H5Lexists(file, prefix.c_str(), H5P_DEFAULT);
    if (e < 0) fail_hdf5(file_path, quoted("object", prefix), "cannot look up link");
    if (e == 0) return Kind::None;
    // A dangling soft or external link has no object behind it.
    hid_t oid = H5Oopen(file, prefix.c_str(), H5P_DEFAULT);
    if (oid < 0) return Kind::None;
    Hid obj(oid, H5Oclose);
    H5I_type_t t = H5Iget_type(obj.get());
    Kind k = t == H5I_GROUP ? Kind::Group : t == H5I_DATASET ? Kind::Dataset : Kind::Other;
    if (i + 1 == parts.size()) return k;
    if (k != Kind::Group) return Kind::None;
  }
  return Kind::None;
}

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string absolute(const std::string& p) { return p.empty() || p[0] != '/' ? "/" + p : p; }

// Names of the links in a group, sorted (portable across HDF5 1.10 / 1.12 / 1.14).
std::vector<std::string> link_names(hid_t group, const std::string& file_path, const std::string& object) {
  H5G_info_t info;
  check(H5Gget_info(group, &info), file_path, object, "cannot get group info");
  std::vector<std::string> names;
  names.reserve(info.nlinks);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) fail_hdf5(file_path, object, "cannot read link name");
    std::string name(static_cast<size_t>(n), '\0');
    if (H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), static_cast<size_t>(n) + 1,
                           H5P_DEFAULT) < 0)
      fail_hdf5(file_path, object, "cannot read link name");
    names.push_back(utf8::sanitize(name));  // every string read from a file is valid UTF-8
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string dtype_name(hid_t type) {
  H5T_class_t c = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  if (c == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 1 || size == 2 || size == 4 || size == 8)
      return (is_signed ? "int" : "uint") + std::to_string(size * 8);
  } else if (c == H5T_FLOAT) {
    if (size == 2 || size == 4 || size == 8) return "float" + std::to_string(size * 8);
  } else if (c == H5T_STRING) {
    return "string";
  }
  return "other";
}

// Number of elements for a shape, refusing negative extents and overflow.
hsize_t element_count(const std::vector<hsize_t>& dims) {
  hsize_t n = 1;
  for (hsize_t d : dims) {
    if (d != 0 && n > std::numeric_limits<hsize_t>::max() / d) throw std::overflow_error("element count overflows");
    n *= d;
  }
  return n;
}

// File access for SWMR reading. A SWMR reader re-reads metadata whose checksum fails, assuming the
// writer is half-way through updating it; HDF5's default of 100 attempts with growing sleeps makes a
// damaged file look like a hang. A live writer's metadata settles within a few attempts.
constexpr unsigned kSwmrReadAttempts = 6;

Hid swmr_read_fapl(const std::string& path) {
  Hid fapl = make(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, path, "", "cannot create property list");
  check(H5Pset_metadata_read_attempts(fapl.get(), kSwmrReadAttempts), path, "", "cannot set read attempts");
  return fapl;
}

}  // namespace

// ================================================================================================
// RunWriter
// ================================================================================================

namespace {

struct Column {
  std::string name;
  bool is_int = false;
  Hid dataset;
};

struct Table {
  std::vector<Column> columns;
  std::vector<double> pending;  // buffered rows, row-major
  int64_t written = 0;          // rows already in the datasets
  size_t pending_rows() const { return columns.empty() ? 0 : pending.size() / columns.size(); }
};

}  // namespace

struct RunWriter::Impl {
  std::string path;
  WriterOptions options;
  bool swmr_on = false;
  Hid file;
  Hid metrics;                          // /metrics, created with the first table
  std::map<std::string, Table> tables;  // declared after `file`: closed before it

  explicit Impl(std::string p) : path(std::move(p)) {}

  ~Impl() {
    try {
      write_pending();
    } catch (...) {
    }
    tables.clear();
    metrics.reset();
    if (file) {
      H5Fflush(file.get(), H5F_SCOPE_GLOBAL);
      file.close();
    }
  }

  hid_t root() const { return file.get(); }

  void write_table(const std::string& name, Table& t) {
    const size_t n = t.pending_rows();
    if (n == 0) return;
    const size_t ncol = t.columns.size();
    const hsize_t start = static_cast<hsize_t>(t.written);
    const hsize_t count = static_cast<hsize_t>(n);
    const hsize_t new_size = start + count;
    std::vector<double> dbuf;
    std::vector<int64_t> ibuf;
    // Every column is extended to an absolute size and written at an absolute offset, so a
    // failure half-way leaves the buffer intact and a retry rewrites the same rows.
    for (size_t c = 0; c < ncol; ++c) {
      Column& col = t.columns[c];
      const std::string obj = quoted("dataset", "/metrics/" + name + "/" + col.name);
      check(H5Dset_extent(col.dataset.get(), &new_size), path, obj, "cannot extend dataset");
      Hid fspace = make(H5Dget_space(col.dataset.get()), H5Sclose, path, obj, "cannot get dataspace");
      check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr), path, obj,
            "cannot select rows");
      Hid mspace = make(H5Screate_simple(1, &count, nullptr), H5Sclose, path, obj, "cannot create memory dataspace");
      herr_t s;
      if (col.is_int) {
        ibuf.resize(n);
        for (size_t r = 0; r < n; ++r) ibuf[r] = static_cast<int64_t>(t.pending[r * ncol + c]);
        s = H5Dwrite(col.dataset.get(), H5T_NATIVE_INT64, mspace.get(), fspace.get(), H5P_DEFAULT, ibuf.data());
      } else {
        dbuf.resize(n);
        for (size_t r = 0; r < n; ++r) dbuf[r] = t.pending[r * ncol + c];
        s = H5Dwrite(col.dataset.get(), H5T_NATIVE_DOUBLE, mspace.get(), fspace.get(), H5P_DEFAULT, dbuf.data());
      }
      check(s, path, obj, "cannot write " + std::to_string(n) + " rows");
    }
    t.written += static_cast<int64_t>(n);
    t.pending.clear();
  }

  void write_pending() {
    if (!file) return;
    for (auto& [name, t] : tables) write_table(name, t);
  }

  Table& table(const std::string& name) {
    auto it = tables.find(name);
    if (it == tables.end()) fail(path, quoted("table", name), "unknown table (add_table first)");
    return it->second;
  }

  // The group or dataset at an absolute path, opened for attribute writes.
  Hid open_object(const std::string& object_path) const {
    const std::string p = absolute(object_path);
    Kind k = object_kind(root(), path, p);
    if (k == Kind::None) fail(path, quoted("object", p), "no such group or dataset");
    return make(H5Oopen(root(), p.c_str(), H5P_DEFAULT), H5Oclose, path, quoted("object", p), "cannot open object");
  }

  static constexpr hsize_t kScalar = hsize_t(-1);
  void write_attr(const std::string& object_path, const std::string& name, hid_t file_type, hid_t mem_type,
                  const void* value, hsize_t count = kScalar /* else a 1-D array, possibly empty */) {
    check_name(path, "attribute", name);
    const std::string obj = quoted("attribute", object_path == "/" ? name : object_path + "@" + name);
    Hid target = open_object(object_path);
    htri_t e = H5Aexists(target.get(), name.c_str());
    if (e < 0) fail_hdf5(path, obj, "cannot look up attribute");
    if (e > 0) check(H5Adelete(target.get(), name.c_str()), path, obj, "cannot delete old attribute");
    Hid space = count == kScalar
                    ? make(H5Screate(H5S_SCALAR), H5Sclose, path, obj, "cannot create dataspace")
                    : make(H5Screate_simple(1, &count, nullptr), H5Sclose, path, obj, "cannot create dataspace");
    Hid attr = make(H5Acreate2(target.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                    path, obj, "cannot create attribute");
    check(H5Awrite(attr.get(), mem_type, value), path, obj, "cannot write attribute");
    check(attr.close(), path, obj, "cannot close attribute");
  }

  void write_scalar_attr(const std::string& name, hid_t file_type, hid_t mem_type, const void* value) {
    write_attr("/", name, file_type, mem_type, value);
  }

  Hid utf8_type(const std::string& obj) const {
    Hid type = make(H5Tcopy(H5T_C_S1), H5Tclose, path, obj, "cannot create string type");
    check(H5Tset_size(type.get(), H5T_VARIABLE), path, obj, "cannot set string size");
    check(H5Tset_cset(type.get(), H5T_CSET_UTF8), path, obj, "cannot set UTF-8");
    return type;
  }

  // Checks an absolute dataset path for a new object and returns it normalised.
  std::string new_object_path(const std::string& dataset_path, const std::string& obj) const {
    const std::string p = absolute(dataset_path);
    const std::vector<std::string> parts = split_path(p);
    if (parts.empty()) fail(path, obj, "dataset path is empty");
    for (const std::string& part : parts)
      if (part == "." || part == "..") fail(path, obj, "dataset path contains '.' or '..'");
    if (object_kind(root(), path, p) != Kind::None) fail(path, obj, "an object already exists there");
    return p;
  }

  Hid intermediate_groups(const std::string& obj) const {
    Hid lcpl = make(H5Pcreate(H5P_LINK_CREATE), H5Pclose, path, obj, "cannot create property list");
    check(H5Pset_create_intermediate_group(lcpl.get(), 1), path, obj, "cannot enable intermediate groups");
    return lcpl;
  }

  template <typename T>
  void write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const T* data, hid_t mem_type,
                   hid_t file_type) {
    const std::string obj = quoted("dataset", absolute(dataset_path));
    const std::string p = new_object_path(dataset_path, obj);
    if (shape.size() > H5S_MAX_RANK) fail(path, obj, "rank exceeds " + std::to_string(H5S_MAX_RANK));
    std::vector<hsize_t> dims;
    for (int64_t d : shape) {
      if (d < 0) fail(path, obj, "negative extent " + std::to_string(d) + " in shape");
      dims.push_back(static_cast<hsize_t>(d));
    }
    hsize_t count;
    try {
      count = element_count(dims);
    } catch (const std::overflow_error&) {
      fail(path, obj, "shape has too many elements");
    }
    if (count > 0 && data == nullptr) fail(path, obj, "data pointer is null");

    Hid lcpl = intermediate_groups(obj);
    Hid dcpl = make(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, path, obj, "cannot create property list");
    if ((options.compression > 0 || options.checksum) && !dims.empty() && count > 0) {
      // Chunks of whole trailing rows, at most ~1 MiB each, deflated and/or checksummed.
      std::vector<hsize_t> chunk = dims;
      const hsize_t row = count / dims[0];
      const hsize_t max_rows = std::max<hsize_t>(1, (hsize_t(1) << 20) / (sizeof(T) * std::max<hsize_t>(row, 1)));
      chunk[0] = std::min(dims[0], max_rows);
      for (hsize_t& c : chunk) c = std::max<hsize_t>(c, 1);
      check(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), path, obj, "cannot set chunking");
      if (options.compression > 0)
        check(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(options.compression)), path, obj,
              "cannot enable deflate");
      // HDF5 checksums metadata, not raw data: Fletcher-32 per chunk, verified by every read, so a
      // flipped bit in a weight fails the read instead of changing results silently.
      if (options.checksum) check(H5Pset_fletcher32(dcpl.get()), path, obj, "cannot enable the Fletcher-32 checksum");
    }
    Hid space = dims.empty() ? make(H5Screate(H5S_SCALAR), H5Sclose, path, obj, "cannot create dataspace")
                             : make(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
                                    path, obj, "cannot create dataspace");
    Hid dset = make(H5Dcreate2(root(), p.c_str(), file_type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
                    H5Dclose, path, obj, "cannot create dataset");
    if (count > 0)
      check(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path, obj, "cannot write data");
    check(dset.close(), path, obj, "cannot close dataset");
  }
};

RunWriter::RunWriter(const std::string& path, const WriterOptions& options) : impl_(std::make_unique<Impl>(path)) {
  impl_->options = options;
  if (options.compression < 0 || options.compression > 9)
    fail(path, "", "compression level " + std::to_string(options.compression) + " is not in 0..9");
  silence_hdf5_errors();
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (path.empty()) fail(path, "", "file path is empty");
  if (!parent.empty() && !fs::is_directory(parent, ec))
    fail(path, "", "parent directory '" + parent.string() + "' does not exist");
  // The latest format: checksummed metadata, and what SWMR writing requires.
  Hid fapl = make(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, path, "", "cannot create property list");
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), path, "",
        "cannot select the latest file format");
  impl_->file =
      make(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose, path, "", "cannot create file");
}

void RunWriter::start_swmr() {
  Impl& m = impl();
  if (m.swmr_on) return;
  m.write_pending();
  m.metrics.reset();  // SWMR writing starts only with no group open
  check(H5Fstart_swmr_write(m.root()), m.path, "", "cannot start SWMR writing");
  m.swmr_on = true;
}

bool RunWriter::swmr() const { return impl().swmr_on; }

void RunWriter::close() {
  Impl& m = impl();
  if (!m.file) return;
  m.write_pending();
  m.tables.clear();
  m.metrics.reset();
  check(H5Fflush(m.root(), H5F_SCOPE_GLOBAL), m.path, "", "cannot flush file");
  check(m.file.close(), m.path, "", "cannot close file");
}

void RunWriter::reopen() {
  Impl& m = impl();
  if (!m.file) fail(m.path, "", "reopen after close");
  if (m.swmr_on) fail(m.path, "", "reopen in SWMR mode");
  m.write_pending();
  for (auto& [name, t] : m.tables)
    for (auto& c : t.columns) c.dataset.reset();
  m.metrics.reset();
  check(H5Fflush(m.root(), H5F_SCOPE_GLOBAL), m.path, "", "cannot flush file");
  // Only a file with nothing else open really closes (and its metadata cache with it).
  const ssize_t open_ids = H5Fget_obj_count(m.root(), H5F_OBJ_ALL | H5F_OBJ_LOCAL);
  if (open_ids != 1)
    fail(m.path, "", "reopen: " + std::to_string(open_ids - 1) + " HDF5 object(s) of the file are still open");
  check(m.file.close(), m.path, "", "cannot close file");
  Hid fapl = make(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, m.path, "", "cannot create property list");
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), m.path, "",
        "cannot select the latest file format");
  m.file = make(H5Fopen(m.path.c_str(), H5F_ACC_RDWR, fapl.get()), H5Fclose, m.path, "", "cannot reopen file");
  if (!m.tables.empty())
    m.metrics =
        make(H5Gopen2(m.root(), "/metrics", H5P_DEFAULT), H5Gclose, m.path, "group '/metrics'", "cannot open group");
  for (auto& [name, t] : m.tables)
    for (auto& c : t.columns) {
      const std::string p = "/metrics/" + name + "/" + c.name;
      c.dataset = make(H5Dopen2(m.root(), p.c_str(), H5P_DEFAULT), H5Dclose, m.path, quoted("dataset", p),
                       "cannot open dataset");
    }
}

bool hdf5_threadsafe() {
  hbool_t safe = 0;
  H5is_library_threadsafe(&safe);
  return safe > 0;
}

std::string hdf5_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}

void commit_file(const std::string& tmp, const std::string& path) {
  namespace fs = std::filesystem;
  auto sync_path = [&](const std::string& p, int flags) {
    int fd = ::open(p.c_str(), flags);
    if (fd < 0) fail(path, "", "cannot open " + p + " to sync it: " + std::strerror(errno));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0 && err != EINVAL) fail(path, "", "cannot fsync " + p + ": " + std::strerror(err));
  };
  sync_path(tmp, O_RDONLY);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail(path, "", "cannot rename " + tmp + " to it: " + ec.message());
  std::string dir = fs::path(path).parent_path().string();
  sync_path(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
}

RunWriter::~RunWriter() = default;
RunWriter::RunWriter(RunWriter&&) noexcept = default;
RunWriter& RunWriter::operator=(RunWriter&&) noexcept = default;

RunWriter::Impl& RunWriter::impl() const {
  if (!impl_) throw StoreError("xpand store: RunWriter used after being moved from");
  return *impl_;
}

void RunWriter::set_path(const std::string& path) { impl().path = path; }

const std::string& RunWriter::path() const {
  static const std::string empty;
  return impl_ ? impl_->path : empty;
}

void RunWriter::set_attr(const std::string& name, const std::string& value) {
  Impl& m = impl();
  const std::string obj = quoted("attribute", name);
  Hid type = make(H5Tcopy(H5T_C_S1), H5Tclose, m.path, obj, "cannot create string type");
  check(H5Tset_size(type.get(), H5T_VARIABLE), m.path, obj, "cannot set string size");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), m.path, obj, "cannot set UTF-8");
  const char* p = value.c_str();
  m.write_scalar_attr(name, type.get(), type.get(), &p);
}

void RunWriter::set_attr(const std::string& name, const char* value) {
  if (value == nullptr) fail(path(), quoted("attribute", name), "string value is null");
  set_attr(name, std::string(value));
}

void RunWriter::set_attr(const std::string& name, int64_t value) {
  impl().write_scalar_attr(name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void RunWriter::set_attr(const std::string& name, double value) {
  impl().write_scalar_attr(name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void RunWriter::set_attr_at(const std::string& object_path, const std::string& name, const std::string& value) {
  Impl& m = impl();
  Hid type = m.utf8_type(quoted("attribute", name));
  const char* p = value.c_str();
  m.write_attr(object_path, name, type.get(), type.get(), &p);
}

void RunWriter::set_attr_at(const std::string& object_path, const std::string& name, int64_t value) {
  impl().write_attr(object_path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void RunWriter::set_attr_at(const std::string& object_path, const std::string& name, double value) {
  impl().write_attr(object_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void RunWriter::set_attr_at(const std::string& object_path, const std::string& name,
                            const std::vector<std::string>& values) {
  Impl& m = impl();
  Hid type = m.utf8_type(quoted("attribute", name));
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  const char* none = "";  // an empty list is an empty array (HDF5 wants a buffer all the same)
  m.write_attr(object_path, name, type.get(), type.get(), ptrs.empty() ? &none : ptrs.data(), ptrs.size());
}

void RunWriter::set_attr_at(const std::string& object_path, const std::string& name,
                            const std::vector<int64_t>& values) {
  const int64_t none = 0;
  impl().write_attr(object_path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, values.empty() ? &none : values.data(),
                    values.size());
}

void RunWriter::set_attr_at(const std::string& object_path, const std::string& name,
                            const std::vector<double>& values) {
  const double none = 0;
  impl().write_attr(object_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values.empty() ? &none : values.data(),
                    values.size());
}

void RunWriter::add_table(const std::string& table, const std::vector<std::string>& columns,
                          const std::vector<std::string>& int_columns) {
  Impl& m = impl();
  check_name(m.path, "table", table);
  const std::string tobj = quoted("table", table);
  if (m.tables.count(table) != 0) fail(m.path, tobj, "table already declared");
  if (columns.empty()) fail(m.path, tobj, "table has no columns");
  std::set<std::string> seen;
  for (const std::string& c : columns) {
    check_name(m.path, "column", c);
    if (!seen.insert(c).second) fail(m.path, tobj, "duplicate column '" + c + "'");
  }
  const std::set<std::string> ints(int_columns.begin(), int_columns.end());

  if (!m.metrics) {
    Kind k = object_kind(m.root(), m.path, "/metrics");
    if (k == Kind::Group)
      m.metrics =
          make(H5Gopen2(m.root(), "/metrics", H5P_DEFAULT), H5Gclose, m.path, "group '/metrics'", "cannot open group");
    else if (k == Kind::None)
      m.metrics = make(H5Gcreate2(m.root(), "/metrics", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, m.path,
                       "group '/metrics'", "cannot create group");
    else
      fail(m.path, "'/metrics'", "exists and is not a group");
  }
  const std::string gpath = "/metrics/" + table;
  if (object_kind(m.root(), m.path, gpath) != Kind::None) fail(m.path, tobj, "an object already exists at " + gpath);
  Hid group = make(H5Gcreate2(m.metrics.get(), table.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, m.path,
                   quoted("group", gpath), "cannot create group");

  Table t;
  const hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = kChunkRows;
  for (const std::string& c : columns) {
    const std::string obj = quoted("dataset", gpath + "/" + c);
    const bool is_int = ints.count(c) != 0;
    Hid space = make(H5Screate_simple(1, &zero, &unlimited), H5Sclose, m.path, obj, "cannot create dataspace");
    Hid dcpl = make(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, m.path, obj, "cannot create property list");
    check(H5Pset_chunk(dcpl.get(), 1, &chunk), m.path, obj, "cannot set chunking");
    Hid dset = make(H5Dcreate2(group.get(), c.c_str(), is_int ? H5T_STD_I64LE : H5T_IEEE_F64LE, space.get(),
                               H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                    H5Dclose, m.path, obj, "cannot create dataset");
    t.columns.push_back(Column{c, is_int, std::move(dset)});
  }
  m.tables.emplace(table, std::move(t));
}

void RunWriter::append(const std::string& table, const std::vector<double>& row) {
  Impl& m = impl();
  Table& t = m.table(table);
  if (row.size() != t.columns.size())
    fail(m.path, quoted("table", table),
         "row has " + std::to_string(row.size()) + " values, table has " + std::to_string(t.columns.size()) +
             " columns");
  for (size_t c = 0; c < row.size(); ++c) {
    if (!t.columns[c].is_int) continue;
    const double v = row[c];
    // 2^63 is exactly representable; anything at or above it does not fit int64.
    if (!std::isfinite(v) || v != std::trunc(v) || v < -9223372036854775808.0 || v >= 9223372036854775808.0)
      fail(m.path, quoted("dataset", "/metrics/" + table + "/" + t.columns[c].name),
           "value " + format_double(v) + " is not an int64");
  }
  t.pending.insert(t.pending.end(), row.begin(), row.end());
  if (t.pending_rows() >= kMaxBufferedRows) m.write_table(table, t);
}

void RunWriter::flush() {
  Impl& m = impl();
  m.write_pending();
  check(H5Fflush(m.root(), H5F_SCOPE_GLOBAL), m.path, "", "cannot flush file");
}

int64_t RunWriter::rows(const std::string& table) const {
  Impl& m = impl();
  const Table& t = m.table(table);
  return t.written + static_cast<int64_t>(t.pending_rows());
}

void RunWriter::write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const float* data) {
  impl().write_array(dataset_path, shape, data, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE);
}

void RunWriter::write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const double* data) {
  impl().write_array(dataset_path, shape, data, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE);
}

void RunWriter::write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const int64_t* data) {
  impl().write_array(dataset_path, shape, data, H5T_NATIVE_INT64, H5T_STD_I64LE);
}

void RunWriter::write_array(const std::string& dataset_path, const std::vector<int64_t>& shape, const uint8_t* data) {
  impl().write_array(dataset_path, shape, data, H5T_NATIVE_UINT8, H5T_STD_U8LE);
}

void RunWriter::write_strings(const std::string& dataset_path, const std::vector<std::string>& values) {
  Impl& m = impl();
  const std::string obj = quoted("dataset", absolute(dataset_path));
  const std::string p = m.new_object_path(dataset_path, obj);
  Hid type = m.utf8_type(obj);
  const hsize_t n = values.size();
  Hid space = make(H5Screate_simple(1, &n, nullptr), H5Sclose, m.path, obj, "cannot create dataspace");
  Hid lcpl = m.intermediate_groups(obj);
  Hid dset = make(H5Dcreate2(m.root(), p.c_str(), type.get(), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                  H5Dclose, m.path, obj, "cannot create dataset");
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (n > 0)
    check(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), m.path, obj,
          "cannot write strings");
  check(dset.close(), m.path, obj, "cannot close dataset");
}

void RunWriter::create_group(const std::string& group_path) {
  Impl& m = impl();
  std::string prefix;
  for (const std::string& part : split_path(absolute(group_path))) {
    prefix += "/" + part;
    Kind k = object_kind(m.root(), m.path, prefix);
    if (k == Kind::Group) continue;
    if (k != Kind::None) fail(m.path, quoted("group", prefix), "exists and is not a group");
    make(H5Gcreate2(m.root(), prefix.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, m.path,
         quoted("group", prefix), "cannot create group");
  }
}

void RunWriter::copy_from(const std::string& source_file, const std::string& object_path) {
  Impl& m = impl();
  const std::string p = absolute(object_path);
  const std::string obj = quoted("object", p);
  hid_t id = H5Fopen(source_file.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, swmr_read_fapl(m.path).get());
  if (id < 0) id = H5Fopen(source_file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) fail_hdf5(m.path, obj, "cannot open " + source_file + " to copy from it");
  Hid src(id, H5Fclose);
  if (object_kind(src.get(), source_file, p) == Kind::None) fail(m.path, obj, "no such object in " + source_file);
  if (object_kind(m.root(), m.path, p) != Kind::None) fail(m.path, obj, "an object already exists there");
  Hid lcpl = m.intermediate_groups(obj);
  check(H5Ocopy(src.get(), p.c_str(), m.root(), p.c_str(), H5P_DEFAULT, lcpl.get()), m.path, obj,
        "cannot copy from " + source_file);
}

void RunWriter::link_external(const std::string& link_path, const std::string& target_file,
                              const std::string& target_object) {
  Impl& m = impl();
  const std::string obj = quoted("link", absolute(link_path));
  const std::string p = absolute(link_path);
  htri_t e = H5Lexists(m.root(), p.c_str(), H5P_DEFAULT);
  if (e > 0) fail(m.path, obj, "a link already exists there");
  Hid lcpl = m.intermediate_groups(obj);
  check(H5Lcreate_external(target_file.c_str(), target_object.c_str(), m.root(), p.c_str(), lcpl.get(), H5P_DEFAULT),
        m.path, obj, "cannot create external link to " + target_file);
}

// ================================================================================================
// RunReader
// ================================================================================================

struct RunReader::Impl {
  std::string path;
  Hid file;

  hid_t root() const { return file.get(); }

  std::string attr_label(const std::string& object_path, const std::string& name) const {
    return quoted("attribute", object_path == "/" ? name : object_path + "@" + name);
  }

  // Names handed out are sanitised (utf8::sanitize); a name that came out changed is mapped back
  // to the bytes stored in the file here, so that it still addresses its object or attribute.
  static bool maybe_sanitised(const std::string& s) { return s.find("\xEF\xBF\xBD") != std::string::npos; }

  std::string raw(const std::string& absolute_path) const {
    if (!maybe_sanitised(absolute_path)) return absolute_path;
    std::string out;
    for (const std::string& part : split_path(absolute_path)) {
      std::string name = part;
      if (maybe_sanitised(part) && object_kind(root(), path, out.empty() ? "/" : out) == Kind::Group) {
        hid_t g = H5Gopen2(root(), out.empty() ? "/" : out.c_str(), H5P_DEFAULT);
        if (g >= 0) {
          Hid group(g, H5Gclose);
          H5G_info_t info;
          if (H5Gget_info(g, &info) >= 0)
            for (hsize_t i = 0; i < info.nlinks; ++i) {
              ssize_t n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
              if (n < 0) break;
              std::string r(static_cast<size_t>(n), '\0');
              if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, r.data(), size_t(n) + 1, H5P_DEFAULT) < 0)
                break;
              if (utf8::sanitize(r) == part) {
                name = r;
                break;
              }
            }
        }
      }
      out += "/" + name;
    }
    return out.empty() ? "/" : out;
  }

  std::string raw_attr(hid_t target, const std::string& name) const {
    if (!maybe_sanitised(name)) return name;
    struct Find {
      const std::string* want;
      std::string found;
    } f{&name, name};
    hsize_t idx = 0;
    H5Aiterate2(
        target, H5_INDEX_NAME, H5_ITER_INC, &idx,
        [](hid_t, const char* n, const H5A_info_t*, void* d) -> herr_t {
          auto* f = static_cast<Find*>(d);
          if (utf8::sanitize(n) != *f->want) return 0;
          f->found = n;
          return 1;
        },
        &f);
    return f.found;
  }

  Hid open_object(const std::string& object_path) const {
    const std::string p = raw(absolute(object_path));
    Kind k = object_kind(root(), path, p);
    if (k == Kind::None) fail(path, quoted("object", p), "no such group or dataset");
    return make(H5Oopen(root(), p.c_str(), H5P_DEFAULT), H5Oclose, path, quoted("object", p), "cannot open object");
  }

  // Opens an attribute; `max_values` > 1 allows a 1-D array (its count goes to *count).
  Hid open_attr(const std::string& name, Hid* type, const std::string& object_path = "/", hssize_t max_values = 1,
                hssize_t* count = nullptr) const {
    const std::string obj = attr_label(object_path, name);
    if (name.empty()) fail(path, obj, "name is empty");
    Hid target = open_object(object_path);
    const std::string rn = raw_attr(target.get(), name);
    htri_t e = H5Aexists(target.get(), rn.c_str());
    if (e < 0) fail_hdf5(path, obj, "cannot look up attribute");
    if (e == 0) fail(path, obj, "no such attribute");
    Hid attr = make(H5Aopen(target.get(), rn.c_str(), H5P_DEFAULT), H5Aclose, path, obj, "cannot open attribute");
    Hid space = make(H5Aget_space(attr.get()), H5Sclose, path, obj, "cannot get dataspace");
    hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (n < 0) fail_hdf5(path, obj, "cannot get size");
    if (max_values == 1 && n != 1) fail(path, obj, "holds " + std::to_string(n) + " values, expected one");
    if (n > max_values) fail(path, obj, "holds " + std::to_string(n) + " values, more than expected");
    if (count != nullptr) *count = n;
    *type = make(H5Aget_type(attr.get()), H5Tclose, path, obj, "cannot get type");
    return attr;
  }

  std::string read_string_attr(const std::string& object_path, const std::string& name) const;
  double read_double_attr(const std::string& object_path, const std::string& name) const;

  Hid open_dataset(const std::string& dataset_path, const std::string& obj) const {
    const std::string p = raw(absolute(dataset_path));
    Kind k = object_kind(root(), path, p);
    if (k == Kind::None) fail(path, obj, "no such dataset");
    if (k != Kind::Dataset) fail(path, obj, "is not a dataset");
    return make(H5Dopen2(root(), p.c_str(), H5P_DEFAULT), H5Dclose, path, obj, "cannot open dataset");
  }

  Hid open_table(const std::string& table) const {
    const std::string obj = quoted("table", table);
    if (table.empty() || table.find('/') != std::string::npos) fail(path, obj, "invalid table name");
    const std::string p = raw("/metrics/" + table);
    Kind k = object_kind(root(), path, p);
    if (k == Kind::None) fail(path, obj, "no such table (no group " + p + ")");
    if (k != Kind::Group) fail(path, obj, p + " is not a group");
    return make(H5Gopen2(root(), p.c_str(), H5P_DEFAULT), H5Gclose, path, obj, "cannot open group");
  }

  // Reads a numeric dataset converted to double.
  std::vector<double> read_numeric(const std::string& dataset_path, const std::string& obj, std::vector<int64_t>* shape,
                                   bool require_1d) const {
    Hid dset = open_dataset(dataset_path, obj);
    Hid type = make(H5Dget_type(dset.get()), H5Tclose, path, obj, "cannot get type");
    H5T_class_t c = H5Tget_class(type.get());
    if (c != H5T_INTEGER && c != H5T_FLOAT) fail(path, obj, "has non-numeric type " + dtype_name(type.get()));
    Hid space = make(H5Dget_space(dset.get()), H5Sclose, path, obj, "cannot get dataspace");
    int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0) fail_hdf5(path, obj, "cannot get rank");
    if (require_1d && rank != 1) fail(path, obj, "has rank " + std::to_string(rank) + ", expected a 1-D column");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
      fail_hdf5(path, obj, "cannot get shape");
    hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (n < 0) fail_hdf5(path, obj, "cannot get size");
    if (n > (hssize_t(1) << 27))
      fail(path, obj, "holds " + std::to_string(n) + " elements, more than xpand reads at once (2^27)");
    std::vector<double> out;
    try {
      out.resize(static_cast<size_t>(n));
    } catch (const std::exception&) {
      fail(path, obj, "too large to read (" + std::to_string(n) + " elements)");
    }
    if (n > 0)
      check(H5Dread(dset.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), path, obj,
            "cannot read data");
    if (shape != nullptr) shape->assign(dims.begin(), dims.end());
    return out;
  }
};

RunReader::RunReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  silence_hdf5_errors();
  impl_->path = path;
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) fail(path, "", "file path is empty");
  if (!fs::exists(path, ec)) fail(path, "", "no such file");
  if (!fs::is_regular_file(path, ec)) fail(path, "", "not a regular file");
  htri_t is_h5 = H5Fis_hdf5(path.c_str());
  if (is_h5 < 0) fail_hdf5(path, "", "cannot read file");
  if (is_h5 == 0) fail(path, "", "not an HDF5 file");
  // SWMR-read first: it is the consistent view of a file whose run is writing it (or whose writer
  // was killed, which leaves the "open for write" flag set). Files in older HDF5 formats (not
  // written by xpand) cannot be opened that way and open plainly.
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, swmr_read_fapl(path).get());
  if (id < 0) {
    id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id < 0) fail_hdf5(path, "", "cannot open HDF5 file");
  }
  impl_->file = Hid(id, H5Fclose);
}

RunReader::~RunReader() = default;
RunReader::RunReader(RunReader&&) noexcept = default;
RunReader& RunReader::operator=(RunReader&&) noexcept = default;

RunReader::Impl& RunReader::impl() const {
  if (!impl_) throw StoreError("xpand store: RunReader used after being moved from");
  return *impl_;
}

const std::string& RunReader::path() const {
  static const std::string empty;
  return impl_ ? impl_->path : empty;
}

bool RunReader::has_attr(const std::string& name) const {
  const Impl& m = impl();
  if (name.empty()) return false;
  htri_t e = H5Aexists(m.root(), m.raw_attr(m.root(), name).c_str());
  if (e < 0) fail_hdf5(m.path, quoted("attribute", name), "cannot look up attribute");
  return e > 0;
}

namespace {
herr_t attr_name_cb(hid_t, const char* name, const H5A_info_t*, void* data) {
  try {
    static_cast<std::vector<std::string>*>(data)->emplace_back(utf8::sanitize(name));
    return 0;
  } catch (...) {
    return -1;
  }
}
}  // namespace

std::vector<std::string> RunReader::attr_names() const {
  const Impl& m = impl();
  std::vector<std::string> names;
  hsize_t idx = 0;
  check(H5Aiterate2(m.root(), H5_INDEX_NAME, H5_ITER_INC, &idx, attr_name_cb, &names), m.path, "root attributes",
        "cannot list attributes");
  std::sort(names.begin(), names.end());
  return names;
}

std::string RunReader::Impl::read_string_attr(const std::string& object_path, const std::string& name) const {
  const std::string obj = attr_label(object_path, name);
  Hid ftype;
  Hid attr = open_attr(name, &ftype, object_path);
  if (H5Tget_class(ftype.get()) != H5T_STRING) fail(path, obj, "is " + dtype_name(ftype.get()) + ", not a string");
  htri_t vlen = H5Tis_variable_str(ftype.get());
  if (vlen < 0) fail_hdf5(path, obj, "cannot inspect string type");
  H5T_cset_t cset = H5Tget_cset(ftype.get());
  if (cset < 0) fail_hdf5(path, obj, "cannot get character set");
  if (vlen > 0) {
    Hid mtype = make(H5Tcopy(H5T_C_S1), H5Tclose, path, obj, "cannot create string type");
    check(H5Tset_size(mtype.get(), H5T_VARIABLE), path, obj, "cannot set string size");
    check(H5Tset_cset(mtype.get(), cset), path, obj, "cannot set character set");
    char* p = nullptr;
    check(H5Aread(attr.get(), mtype.get(), &p), path, obj, "cannot read attribute");
    std::string s = p != nullptr ? std::string(p) : std::string();
    if (p != nullptr) H5free_memory(p);
    return utf8::sanitize(s);
  }
  const size_t size = H5Tget_size(ftype.get());
  if (size == 0) fail_hdf5(path, obj, "cannot get string size");
  if (size > (size_t(1) << 30)) fail(path, obj, "string size " + std::to_string(size) + " is implausible");
  std::vector<char> buf(size + 1, '\0');
  check(H5Aread(attr.get(), ftype.get(), buf.data()), path, obj, "cannot read attribute");
  std::string s(buf.data(), strnlen(buf.data(), size));
  if (H5Tget_strpad(ftype.get()) == H5T_STR_SPACEPAD) s.erase(s.find_last_not_of(' ') + 1);
  return utf8::sanitize(s);
}

double RunReader::Impl::read_double_attr(const std::string& object_path, const std::string& name) const {
  const std::string obj = attr_label(object_path, name);
  Hid ftype;
  Hid attr = open_attr(name, &ftype, object_path);
  H5T_class_t c = H5Tget_class(ftype.get());
  if (c != H5T_FLOAT && c != H5T_INTEGER) fail(path, obj, "is " + dtype_name(ftype.get()) + ", not a number");
  double v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), path, obj, "cannot read attribute");
  return v;
}

std::string RunReader::attr_string(const std::string& name) const { return impl().read_string_attr("/", name); }

std::string RunReader::dtype_attr(const std::string& name) const { return dtype_attr_at("/", name); }

std::vector<int64_t> RunReader::attr_ints_at(const std::string& object_path, const std::string& name) const {
  const Impl& m = impl();
  const std::string obj = m.attr_label(object_path, name);
  Hid ftype;
  hssize_t n = 0;
  Hid attr = m.open_attr(name, &ftype, object_path, hssize_t(1) << 20, &n);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER) fail(m.path, obj, "is " + dtype_name(ftype.get()) + ", not integers");
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (n > 0) check(H5Aread(attr.get(), H5T_NATIVE_INT64, out.data()), m.path, obj, "cannot read attribute");
  return out;
}

std::string RunReader::dtype_attr_at(const std::string& object_path, const std::string& name) const {
  const Impl& m = impl();
  Hid ftype;
  hssize_t n = 0;
  Hid attr = m.open_attr(name, &ftype, object_path, hssize_t(1) << 20, &n);
  switch (H5Tget_class(ftype.get())) {
    case H5T_INTEGER:
      return "int";
    case H5T_FLOAT:
      return "float";
    case H5T_STRING:
      return "string";
    default:
      return "other";
  }
}

std::string RunReader::attr_string_at(const std::string& object_path, const std::string& name) const {
  return impl().read_string_attr(object_path, name);
}

double RunReader::attr_double_at(const std::string& object_path, const std::string& name) const {
  return impl().read_double_attr(object_path, name);
}

bool RunReader::has_attr_at(const std::string& object_path, const std::string& name) const {
  const Impl& m = impl();
  if (name.empty() || object_kind(m.root(), m.path, m.raw(absolute(object_path))) == Kind::None) return false;
  Hid target = m.open_object(object_path);
  htri_t e = H5Aexists(target.get(), m.raw_attr(target.get(), name).c_str());
  if (e < 0) fail_hdf5(m.path, m.attr_label(object_path, name), "cannot look up attribute");
  return e > 0;
}

namespace {
// Variable-length strings read through a memory type; HDF5 allocates them, we free them.
std::vector<std::string> read_vlen_strings(hid_t obj_id, bool is_attr, hssize_t n, hid_t ftype, const std::string& path,
                                           const std::string& label) {
  htri_t vlen = H5Tis_variable_str(ftype);
  if (vlen <= 0) fail(path, label, "is not a variable-length string");
  if (n == 0) return {};  // an empty array (an empty axes list)
  Hid mtype = make(H5Tcopy(H5T_C_S1), H5Tclose, path, label, "cannot create string type");
  check(H5Tset_size(mtype.get(), H5T_VARIABLE), path, label, "cannot set string size");
  check(H5Tset_cset(mtype.get(), H5Tget_cset(ftype)), path, label, "cannot set character set");
  std::vector<char*> ptrs(static_cast<size_t>(n), nullptr);
  herr_t st = is_attr ? H5Aread(obj_id, mtype.get(), ptrs.data())
                      : H5Dread(obj_id, mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data());
  std::vector<std::string> out;
  for (char* p : ptrs) {
    out.emplace_back(utf8::sanitize(p != nullptr ? p : ""));
    if (p != nullptr) H5free_memory(p);
  }
  check(st, path, label, "cannot read strings");
  return out;
}
}  // namespace

std::vector<std::string> RunReader::attr_strings(const std::string& name) const {
  const Impl& m = impl();
  const std::string obj = m.attr_label("/", name);
  Hid ftype;
  hssize_t n = 0;
  Hid attr = m.open_attr(name, &ftype, "/", hssize_t(1) << 20, &n);
  if (H5Tget_class(ftype.get()) != H5T_STRING) fail(m.path, obj, "is " + dtype_name(ftype.get()) + ", not a string");
  return read_vlen_strings(attr.get(), true, n, ftype.get(), m.path, obj);
}

std::vector<std::string> RunReader::read_strings(const std::string& dataset_path) const {
  const Impl& m = impl();
  const std::string obj = quoted("dataset", absolute(dataset_path));
  Hid dset = m.open_dataset(dataset_path, obj);
  Hid type = make(H5Dget_type(dset.get()), H5Tclose, m.path, obj, "cannot get type");
  if (H5Tget_class(type.get()) != H5T_STRING) fail(m.path, obj, "is " + dtype_name(type.get()) + ", not strings");
  Hid space = make(H5Dget_space(dset.get()), H5Sclose, m.path, obj, "cannot get dataspace");
  if (H5Sget_simple_extent_ndims(space.get()) != 1) fail(m.path, obj, "is not 1-D");
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0) fail_hdf5(m.path, obj, "cannot get size");
  if (n > (hssize_t(1) << 26)) fail(m.path, obj, "holds an implausible " + std::to_string(n) + " strings");
  return read_vlen_strings(dset.get(), false, n, type.get(), m.path, obj);
}

int64_t RunReader::attr_int(const std::string& name) const {
  const Impl& m = impl();
  const std::string obj = quoted("attribute", name);
  Hid ftype;
  Hid attr = m.open_attr(name, &ftype);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER) fail(m.path, obj, "is " + dtype_name(ftype.get()) + ", not an integer");
  int64_t v = 0;
  check(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), m.path, obj, "cannot read attribute");
  return v;
}

double RunReader::attr_double(const std::string& name) const { return impl().read_double_attr("/", name); }

std::vector<std::string> RunReader::tables() const {
  const Impl& m = impl();
  Kind k = object_kind(m.root(), m.path, "/metrics");
  if (k == Kind::None) return {};
  if (k != Kind::Group) fail(m.path, "'/metrics'", "is not a group");
  Hid g = make(H5Gopen2(m.root(), "/metrics", H5P_DEFAULT), H5Gclose, m.path, "group '/metrics'", "cannot open group");
  return link_names(g.get(), m.path, "group '/metrics'");
}

std::vector<std::string> RunReader::children(const std::string& group_path) const {
  const Impl& m = impl();
  const std::string obj = quoted("group", group_path);
  const std::string p = m.raw(absolute(group_path));
  Kind k = object_kind(m.root(), m.path, p);
  if (k == Kind::None) fail(m.path, obj, "no such group");
  if (k != Kind::Group) fail(m.path, obj, "is not a group");
  Hid g = make(H5Gopen2(m.root(), p.c_str(), H5P_DEFAULT), H5Gclose, m.path, obj, "cannot open group");
  return link_names(g.get(), m.path, obj);
}

std::vector<std::string> RunReader::columns(const std::string& table) const {
  const Impl& m = impl();
  Hid g = m.open_table(table);
  return link_names(g.get(), m.path, quoted("table", table));
}

std::vector<double> RunReader::column(const std::string& table, const std::string& column) const {
  const Impl& m = impl();
  m.open_table(table);  // clearer message when the whole table is missing
  const std::string obj = quoted("column", "/metrics/" + table + "/" + column);
  if (column.empty() || column.find('/') != std::string::npos) fail(m.path, obj, "invalid column name");
  return m.read_numeric("/metrics/" + table + "/" + column, obj, nullptr, true);
}

std::string RunReader::dtype(const std::string& dataset_path) const {
  const Impl& m = impl();
  const std::string obj = quoted("dataset", absolute(dataset_path));
  Hid dset = m.open_dataset(dataset_path, obj);
  Hid type = make(H5Dget_type(dset.get()), H5Tclose, m.path, obj, "cannot get type");
  return dtype_name(type.get());
}

std::string RunReader::column_dtype(const std::string& table, const std::string& column) const {
  impl().open_table(table);
  return dtype("/metrics/" + table + "/" + column);
}

bool RunReader::has_object(const std::string& object_path) const {
  const Impl& m = impl();
  return object_kind(m.root(), m.path, m.raw(absolute(object_path))) != Kind::None;
}

std::vector<int64_t> RunReader::extent(const std::string& dataset_path) const {
  const Impl& m = impl();
  const std::string obj = quoted("dataset", absolute(dataset_path));
  Hid dset = m.open_dataset(dataset_path, obj);
  Hid space = make(H5Dget_space(dset.get()), H5Sclose, m.path, obj, "cannot get dataspace");
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail_hdf5(m.path, obj, "cannot get rank");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    fail_hdf5(m.path, obj, "cannot get shape");
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::vector<double> RunReader::read_array(const std::string& dataset_path, std::vector<int64_t>* shape) const {
  const Impl& m = impl();
  return m.read_numeric(dataset_path, quoted("dataset", absolute(dataset_path)), shape, false);
}

}  // namespace xpand::store
