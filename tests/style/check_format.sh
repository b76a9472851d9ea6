#!/usr/bin/env bash
# Every C/C++ file of the tree is formatted as the repo's .clang-format says (clang-format 14, the
# version of Debian bookworm that scripts/setup.sh installs: other versions format differently).
# Fix with: scripts/format.sh
# Usage: check_format.sh SOURCE_DIR       exit 0 when clean, 1 listing the files that differ.
set -uo pipefail
root="${1:?usage: check_format.sh SOURCE_DIR}"
cd "$root" || exit 2
fmt=$(command -v clang-format-14 || true)
if [[ -z "$fmt" ]]; then
  echo "format: clang-format-14 not found (scripts/setup.sh installs it: apt-get install clang-format-14)" >&2
  exit 1
fi
mapfile -t files < <(git ls-files -co --exclude-standard -- 'src/*' 'tests/*' 'bench/*' 2>/dev/null |
                     grep -E '\.(c|cc|cpp|h|hpp|cu)$')
if ((${#files[@]} == 0)); then
  echo "format: no C/C++ files found under $root (not a git checkout?)" >&2
  exit 1
fi
bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  "$fmt" --dry-run -Werror --style=file "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "format: ${#bad[@]} of ${#files[@]} files differ from .clang-format (run scripts/format.sh):"
  printf '  %s\n' "${bad[@]}"
  for f in "${bad[@]:0:3}"; do diff -u "$f" <("$fmt" --style=file "$f") | head -20; done
  exit 1
fi
echo "format: all ${#files[@]} C/C++ files follow .clang-format"
