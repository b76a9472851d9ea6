#!/usr/bin/env bash
# Runs `xpand train` on every case of tests/cli/bad/*.yaml. Each case's leading comment lines say
#   # expect: TEXT     (repeatable) TEXT must appear in stderr (file errors name FILE:LINE)
#   # exit: N          the required exit status: 2 config/CLI problem, 1 data problem
#   # args: ARGS       extra arguments after `train CONFIG --out DIR` (@WORK@ = the work dir)
#   # config: PATH     train this path instead of the case file (@WORK@ = the work dir, @SRC@ the source)
#   # setup: NAME      prepare a fixture first (corrupt-idx: an MNIST dir with a truncated image file;
#                      corrupt-cifar: CIFAR-10 / CIFAR-100 binary dirs with a short file, a bad label;
#                      collapsed-model: @WORK@/model.h5 from `xpand collapse` of a 3-step run)
#   # argv: ARGS       run `xpand ARGS` instead of train (any subcommand; @WORK@, @SRC@ substituted)
#   # stdout: TEXT     (repeatable) TEXT must appear in stdout
# and no case may leave a run file (*.h5) in the output directory.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

BAD="$SRC/tests/cli/bad"
OUT="$WORK/out"
mkdir -p "$OUT"

# An MNIST-style directory: valid labels and test files, train-images-idx3-ubyte cut short
# (its header promises 100 28x28 images, the file holds 1000 bytes of pixels).
setup_corrupt_idx() {
  local dir="$WORK/corrupt-idx"
  mkdir -p "$dir"
  "$PYTHON" - "$dir" <<'PY'
import os, struct, sys
d = sys.argv[1]
def idx(name, dims, payload):
    with open(os.path.join(d, name), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, len(dims)) + struct.pack(">" + "I" * len(dims), *dims))
        f.write(bytes(payload))
idx("train-images-idx3-ubyte", (100, 28, 28), 1000)  # truncated: needs 78400 bytes
idx("train-labels-idx1-ubyte", (100,), 100)
idx("t10k-images-idx3-ubyte", (10, 28, 28), 7840)
idx("t10k-labels-idx1-ubyte", (10,), 10)
PY
}

# CIFAR binary directories: CIFAR-10 with test_batch.bin cut short (3000 bytes, not a whole 3073-byte
# record), CIFAR-100 whose train.bin's second record has fine label 100.
setup_corrupt_cifar() {
  "$PYTHON" - "$WORK" <<'PY'
import os, sys
w = sys.argv[1]
ten, hundred = os.path.join(w, "corrupt-cifar"), os.path.join(w, "corrupt-cifar100")
os.makedirs(ten, exist_ok=True)
os.makedirs(hundred, exist_ok=True)
record = lambda labels: bytes(labels) + bytes(3072)
for i in range(1, 6):
    open(os.path.join(ten, f"data_batch_{i}.bin"), "wb").write(record([i]) * 2)
open(os.path.join(ten, "test_batch.bin"), "wb").write((record([0]) * 2)[:3000])
open(os.path.join(hundred, "train.bin"), "wb").write(record([1, 5]) + record([2, 100]))
open(os.path.join(hundred, "test.bin"), "wb").write(record([1, 5]))
PY
}

# A collapsed model: a 3-step run of a small MLP on the teacher task, then `xpand collapse`.
setup_collapsed_model() {
  [ -f "$WORK/model.h5" ] && return
  "$XPAND" --log-level warn train "$SRC/configs/nets/quickstart-mlp.yaml" --out "$WORK/fixture" \
    --set data.name=teacher --set "model.widths=[32,16,10]" --set train.max_steps=3 >/dev/null ||
    fail "collapsed-model fixture: train failed"
  "$XPAND" collapse "$WORK"/fixture/runs/*.h5 -o "$WORK/model.h5" >/dev/null || fail "collapsed-model fixture: collapse"
}

failures=()
n=0
shopt -s nullglob
cases=("$BAD"/*.yaml)
[ ${#cases[@]} -gt 0 ] || fail "no cases in $BAD"

for file in "${cases[@]}"; do
  name=$(basename "$file" .yaml)
  n=$((n + 1))
  expects=()
  stdout_expects=()
  argv=()
  code=""
  args=()
  config="$file"
  setup=""
  first=$(head -n 1 "$file")
  case "$first" in "# expect: "* | "# stdout: "*) ;; *) fail "$name: first line must be '# expect: ...' or '# stdout: ...', got '$first'" ;; esac
  while IFS= read -r line; do
    case "$line" in
      "# expect: "*) expects+=("${line#"# expect: "}") ;;
      "# exit: "*) code=${line#"# exit: "} ;;
      "# args: "*) read -r -a more <<<"${line#"# args: "}"; args+=("${more[@]//@WORK@/$WORK}") ;;
      "# config: "*) config=${line#"# config: "}; config=${config//@WORK@/$WORK}; config=${config//@SRC@/$SRC} ;;
      "# setup: "*) setup=${line#"# setup: "} ;;
      "# argv: "*) read -r -a more <<<"${line#"# argv: "}"; more=("${more[@]//@WORK@/$WORK}"); argv+=("${more[@]//@SRC@/$SRC}") ;;
      "# stdout: "*) stdout_expects+=("${line#"# stdout: "}") ;;
      "#"*) ;;
      *) break ;;
    esac
  done <"$file"
  [ -n "$code" ] || fail "$name: no '# exit: N' header"
  case "$setup" in
    "") ;;
    corrupt-idx) setup_corrupt_idx ;;
    corrupt-cifar) setup_corrupt_cifar ;;
    collapsed-model) setup_collapsed_model ;;
    *) fail "$name: unknown setup '$setup'" ;;
  esac

  if [ ${#argv[@]} -gt 0 ]; then
    step "$name: xpand ${argv[*]} (expect exit $code)"
    run_xpand "$WORK/$name.stdout" "$WORK/$name.stderr" "${argv[@]}"
  else
    step "$name: xpand train $(basename "$config") --out OUT ${args[*]:-} (expect exit $code)"
    run_xpand "$WORK/$name.stdout" "$WORK/$name.stderr" train "$config" --out "$OUT" "${args[@]}"
  fi
  problems=()
  [ "$RC" -eq "$code" ] || problems+=("exit status $RC, expected $code")
  for e in "${expects[@]}"; do
    grep -qF -- "$e" "$WORK/$name.stderr" || problems+=("stderr lacks '$e'")
  done
  for e in "${stdout_expects[@]}"; do
    grep -qF -- "$e" "$WORK/$name.stdout" || problems+=("stdout lacks '$e'")
  done
  if grep -qE 'terminate called|Segmentation|Aborted|core dumped' "$WORK/$name.stderr"; then
    problems+=("crash output in stderr")
  fi
  leftovers=$(find "$OUT" -name '*.h5*' | sort)
  if [ -n "$leftovers" ]; then
    problems+=("left run files: $(echo $leftovers)")
    find "$OUT" -name '*.h5*' -delete
  fi
  if [ ${#problems[@]} -eq 0 ]; then
    ok "exit $RC; stderr: $(head -c 300 "$WORK/$name.stderr" | tr '\n' ' ')"
  else
    for p in "${problems[@]}"; do echo "    FAILED: $p" >&2; done
    echo "    stderr was:" >&2
    show "$WORK/$name.stderr"
    failures+=("$name")
  fi
done

echo
if [ ${#failures[@]} -gt 0 ]; then
  fail "${#failures[@]} of $n bad-config cases failed: ${failures[*]}"
fi
echo "PASS: bad_configs ($n cases)"
