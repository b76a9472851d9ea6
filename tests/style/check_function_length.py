#!/usr/bin/env python3
"""Every function defined in src/train/*.cpp is at most 120 lines (docs/ARCHITECTURE.md: the trainer
stays a readable loop; set-up, evaluation, checkpoints and the gradient path live in their own files).

    check_function_length.py SOURCE_DIR [--max 120] [--dir src/train]

A function is a brace block that opens at the end of a line starting a definition at namespace or
class level (clang-formatted code: the body's closing brace is at the definition's indentation).
Exit 0 when every function fits, 1 listing the ones that do not.
"""
import argparse
import os
import re
import sys

DEF = re.compile(r"^(\s*)(?!if\b|for\b|while\b|switch\b|namespace\b|struct\b|class\b|enum\b|union\b|extern\b)"
                 r"[\w:<>,~*&\s\[\]]+\([^;]*\)\s*(const)?\s*(override)?\s*(noexcept)?\s*(->\s*[\w:<>]+)?\s*(:.*)?\{\s*$")


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        # a definition may wrap its parameter list over several lines
        start = i
        text = line
        while text.count("(") > text.count(")") and i + 1 < len(lines):
            i += 1
            text += " " + lines[i].strip()
        m = DEF.match(text)
        indent = len(line) - len(line.lstrip())
        if m and indent <= 2 and not line.lstrip().startswith(("//", "#", "return", "else")):
            close = " " * indent + "}"
            j = i + 1
            while j < len(lines) and not (lines[j].startswith(close) and lines[j][len(close):len(close) + 1] in ("", ";", " ")):
                j += 1
            name = re.search(r"([\w:~]+)\s*\(", text)
            yield (name.group(1) if name else "?"), start + 1, j - start + 1
            i = j
        i += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source_dir")
    ap.add_argument("--max", type=int, default=120)
    ap.add_argument("--dir", default="src/train")
    args = ap.parse_args()
    root = os.path.join(args.source_dir, args.dir)
    too_long, count, longest = [], 0, (None, 0)
    for f in sorted(os.listdir(root)):
        if not f.endswith(".cpp"):
            continue
        for name, line, n in functions(os.path.join(root, f)):
            count += 1
            if n > longest[1]:
                longest = (f"{args.dir}/{f}:{line} {name}", n)
            if n > args.max:
                too_long.append(f"{args.dir}/{f}:{line}: {name} is {n} lines (at most {args.max})")
    if count == 0:
        sys.exit(f"function length: no functions found under {root}")
    for t in too_long:
        print("function length:", t)
    if too_long:
        sys.exit(1)
    print(f"function length: all {count} functions in {args.dir} are at most {args.max} lines "
          f"(longest: {longest[0]}, {longest[1]} lines)")


if __name__ == "__main__":
    main()
