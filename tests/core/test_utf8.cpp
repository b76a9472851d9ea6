// Tests for core/utf8.h against the Unicode Standard's own examples (version 15, section 3.9,
// "U+FFFD Substitution of Maximal Subparts", tables 3-8 to 3-11) and every code point's encoding.
#include <gtest/gtest.h>

#include <string>

#include "core/utf8.h"

namespace {

using xpand::utf8::printable;
using xpand::utf8::sanitize;
using xpand::utf8::valid;

// Bytes from a list of values.
std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s += char(c);
  return s;
}

// UTF-8 of the code points (no checks: surrogates are encoded as the 3-byte pattern).
std::string encode(std::initializer_list<unsigned> cps) {
  std::string s;
  for (unsigned cp : cps) {
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | (cp >> 12)), s += char(0x80 | ((cp >> 6) & 0x3F)), s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | (cp >> 18)), s += char(0x80 | ((cp >> 12) & 0x3F)), s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

constexpr unsigned R = 0xFFFD;

TEST(Utf8, EveryScalarValueIsValidAndNoSurrogateIs) {
  for (unsigned cp = 0; cp <= 0x10FFFF; ++cp) {
    const std::string s = encode({cp});
    const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
    ASSERT_EQ(valid(s), !surrogate) << "U+" << std::hex << cp;
    if (!surrogate && cp != 0) ASSERT_EQ(sanitize(s), s) << "U+" << std::hex << cp;
  }
}

TEST(Utf8, OverlongFormsAndOutOfRangeAreInvalid) {
  for (auto s : {bytes({0xC0, 0x80}), bytes({0xC1, 0xBF}), bytes({0xE0, 0x80, 0x80}), bytes({0xE0, 0x9F, 0xBF}),
                 bytes({0xF0, 0x80, 0x80, 0x80}), bytes({0xF0, 0x8F, 0xBF, 0xBF}), bytes({0xF4, 0x90, 0x80, 0x80}),
                 bytes({0xF5, 0x80, 0x80, 0x80}), bytes({0xF7, 0xBF, 0xBF, 0xBF}), bytes({0xFF}), bytes({0x80}),
                 bytes({0xE2, 0x82}), bytes({0xF0, 0x9F, 0x98})})
    EXPECT_FALSE(valid(s)) << testing::PrintToString(s);
}

// Table 3-8: a truncated 4-byte sequence and a truncated 3-byte one give one U+FFFD each; the
// lone continuation bytes one each.
TEST(Utf8, UnicodeTable3_8MaximalSubparts) {
  EXPECT_EQ(sanitize(bytes({0x61, 0xF1, 0x80, 0x80, 0xE1, 0x80, 0xC2, 0x62, 0x80, 0x63, 0x80, 0xBF, 0x64})),
            encode({0x61, R, R, R, 0x62, R, 0x63, R, R, 0x64}));
}

// Tables 3-9 (non-shortest forms), 3-10 (surrogates), 3-11 (other ill-formed sequences): every
// byte that cannot start a maximal subpart is its own U+FFFD.
TEST(Utf8, UnicodeTables3_9To3_11) {
  EXPECT_EQ(sanitize(bytes({0xC0, 0xAF, 0xE0, 0x80, 0xBF, 0xF0, 0x81, 0x82, 0x41})),
            encode({R, R, R, R, R, R, R, R, 0x41}));
  EXPECT_EQ(sanitize(bytes({0xED, 0xA0, 0x80, 0xED, 0xBF, 0xBF, 0xED, 0xAF, 0x41})),
            encode({R, R, R, R, R, R, R, R, 0x41}));
  EXPECT_EQ(sanitize(bytes({0xF4, 0x91, 0x92, 0x93, 0xFF, 0x41, 0x80, 0xBF, 0x42})),
            encode({R, R, R, R, R, 0x41, R, R, 0x42}));
  EXPECT_EQ(sanitize(bytes({0xE1, 0x80, 0xE2, 0xF0, 0x91, 0x92, 0xF1, 0xBF, 0x41})), encode({R, R, R, R, 0x41}));
}

TEST(Utf8, SanitizedTextIsValidAndKeepsValidParts) {
  const std::string s = "run-" + bytes({0xC0, 0x80}) + "\xC3\xA9" + bytes({0xED, 0xA0, 0x80}) + "\xF0\x9F\x98\x80" +
                        bytes({0xF4, 0x90, 0x80, 0x80}) + std::string(1, '\0') + "end";
  const std::string out = sanitize(s);
  EXPECT_TRUE(valid(out));
  EXPECT_EQ(out, "run-" + encode({R, R}) + "\xC3\xA9" + encode({R, R, R}) + "\xF0\x9F\x98\x80" + encode({R, R, R, R}) +
                     encode({R}) + "end");
}

TEST(Utf8, PrintableEscapesControlCharacters) {
  EXPECT_EQ(printable("a\x1b[2Jb\x7f"), "a\\x1b[2Jb\\x7f");
  EXPECT_EQ(printable("line\nnext\ttab"), "line\\x0anext\\x09tab");
  EXPECT_EQ(printable("line\nnext\ttab", true), "line\nnext\ttab");
  EXPECT_EQ(printable(bytes({0xFF})), encode({R}));
  EXPECT_EQ(printable("a" + encode({0x85, 0x9B, 0xA0, 0xE9}) + "b"), "a\\u0085\\u009b" + encode({0xA0, 0xE9}) + "b");
}

}  // namespace
