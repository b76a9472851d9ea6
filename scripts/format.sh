#!/usr/bin/env bash
# Formats every C/C++ file of the tree with the repo's .clang-format (clang-format 14); the check
# that CI runs is tests/style/check_format.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
git ls-files -co --exclude-standard -- 'src/*' 'tests/*' 'bench/*' | grep -E '\.(c|cc|cpp|h|hpp|cu)$' |
  xargs clang-format-14 -i --style=file
echo "format: done (check: bash tests/style/check_format.sh .)"
