// UTF-8 hygiene for text that comes from outside (HDF5 attributes, names and string datasets of
// files that may be damaged or foreign): a complete validator (Unicode 15, table 3-7: no overlong
// forms, no surrogates, nothing above U+10FFFF) and one sanitiser that every string read from a
// file passes through, so that whatever xpand prints or writes (tables, JSON, CSV, index.h5) is
// valid UTF-8.
#pragma once
#include <string>
#include <string_view>

namespace xpand::utf8 {

// Length of the well-formed UTF-8 sequence at s[i] (1-4), or 0 when the bytes there do not start
// one. Exact per Unicode's table 3-7 "Well-Formed UTF-8 Byte Sequences".
size_t sequence_length(std::string_view s, size_t i);

// True when every byte of s belongs to a well-formed sequence.
bool valid(std::string_view s);

// s with each maximal ill-formed subpart replaced by U+FFFD (Unicode's recommended practice, the
// same replacements as Python's bytes.decode("utf-8", "replace")) and embedded NULs replaced by
// U+FFFD too. Valid input without NULs comes back unchanged.
std::string sanitize(std::string_view s);

// For terminal tables: sanitize(s) with C0 control characters (except newline and tab when
// keep_newlines) and DEL shown as \xNN and C1 controls (U+0080..U+009F) as \uNNNN, so that a
// damaged file cannot move the cursor or clear the screen of whoever inspects it.
std::string printable(std::string_view s, bool keep_newlines = false);

}  // namespace xpand::utf8
