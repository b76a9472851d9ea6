// Schema lookups behind the config loader's own messages, shared with the CLI's: whether a word
// names a section of the schema, and the edit distance behind "did you mean".
#pragma once
#include <cstddef>
#include <string>

namespace xpand::config {

// True when `prefix` names a section (some schema key lies below it): "train", "layers.fc1".
bool is_section(const std::string& prefix);
// Levenshtein distance of two words.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace xpand::config
