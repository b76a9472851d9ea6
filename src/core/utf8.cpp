// UTF-8 validation and sanitising (see utf8.h).
#include "core/utf8.h"

#include <fmt/format.h>

namespace xpand::utf8 {

namespace {

bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// How many bytes of the sequence starting at s[i] are a valid prefix (at least 1: the lead byte
// itself is consumed even when invalid). This is the "maximal subpart" of Unicode's section 3.9.
size_t maximal_subpart(std::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  size_t n = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
    if (c == 0xED) hi = 0x9F;  // no surrogates U+D800..DFFF
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 1;  // 80..C1 and F5..FF never start a sequence
  }
  size_t k = 1;
  if (i + k < s.size()) {
    const unsigned char c1 = static_cast<unsigned char>(s[i + k]);
    if (c1 < lo || c1 > hi) return 1;
    ++k;
  } else {
    return 1;
  }
  while (k < n && i + k < s.size() && cont(static_cast<unsigned char>(s[i + k]))) ++k;
  return k;  // == n: the whole sequence is valid
}

}  // namespace

size_t sequence_length(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  const size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
  return maximal_subpart(s, i) == n && c >= 0xC2 && c <= 0xF4 ? n : 0;
}

bool valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string sanitize(std::string_view s) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = sequence_length(s, i);
    if (n == 0) {
      out += kReplacement;
      i += maximal_subpart(s, i);
    } else if (n == 1 && s[i] == '\0') {
      out += kReplacement;
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string printable(std::string_view s, bool keep_newlines) {
  const std::string clean = sanitize(s);
  std::string out;
  out.reserve(clean.size());
  for (size_t i = 0; i < clean.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(clean[i]);
    if ((c < 0x20 && !(keep_newlines && (c == '\n' || c == '\t'))) || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else if (c == 0xC2 && i + 1 < clean.size() && static_cast<unsigned char>(clean[i + 1]) <= 0x9F) {
      // C1 controls U+0080..U+009F (U+009B is an 8-bit CSI that terminals act on).
      out += fmt::format("\\u{:04x}", static_cast<unsigned char>(clean[i + 1]));
      ++i;
    } else {
      out += clean[i];
    }
  }
  return out;
}

}  // namespace xpand::utf8
