#!/usr/bin/env bash
# Build llama.cpp's own tools into DEST/bin (make tools): by default llama-imatrix, llama-quantize and
# llama-perplexity. The sources are the llama.cpp vendored in the installed llama-cpp-python's own sdist, so
# the tools run the same llama.cpp commit as the in-process quantizer. The shared libraries of the installed
# llama_cpp package are copied into DEST/lib and linked, so only the tools themselves compile. Tools already
# in DEST/bin are kept: a cache made before a tool joined the list compiles just the new one.
# Usage: build.sh DEST PYTHON [TOOL...]
set -euo pipefail
dest=$1
python=$2
shift 2
if [ $# -gt 0 ]; then wanted=("$@"); else wanted=(llama-imatrix llama-quantize llama-perplexity); fi
version=$("$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
missing=()
for tool in "${wanted[@]}"; do
    [ -x "$dest/bin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    [ -f "$dest/BUILD_INFO" ] || printf 'llama-cpp-python %s\n' "$version" >"$dest/BUILD_INFO"
    echo "$dest: ${wanted[*]} already built"
    exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
libs=$("$python" -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / "lib")')
work=$(mktemp -d)
trap 'rm -rf "$work" "$dest.partial"' EXIT
started=$(date +%s)

# Only this package as an sdist: its build dependencies may come as wheels (faster, and no cmake from source).
"$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"

rm -rf "$dest.partial"
if [ -d "$dest/bin" ]; then cp -a "$dest" "$dest.partial"; fi
mkdir -p "$dest.partial/lib" "$dest.partial/bin"
cp -a "$libs"/lib*.so* "$dest.partial/lib/"
# llama-common ships beside the package (scikit-build installs it under the prefix's lib/).
if [ ! -e "$dest.partial/lib/libllama-common.so" ]; then
    common=$("$python" -c 'import sys, pathlib; print(next(iter(sorted(pathlib.Path(sys.prefix).rglob("libllama-common.so*"))), ""))')
    [ -n "$common" ] || { echo "error: libllama-common.so not found in $libs or $("$python" -c 'import sys; print(sys.prefix)')" >&2; exit 1; }
    cp -a "$(dirname "$common")"/libllama-common.so* "$dest.partial/lib/"
fi

tools=$(IFS=';'; echo "${missing[*]}")
cmake -S "$here" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_SRC="$src" -DTOOLS="$tools" \
    -DLLAMA_LIBS="$dest.partial/lib" -DCMAKE_INSTALL_PREFIX="$dest.partial" >"$work/cmake.log"
cmake --build "$work/build" -j "${JOBS:-$(nproc)}"
cmake --install "$work/build" >/dev/null
[ -f "$dest.partial/BUILD_INFO" ] || printf 'llama-cpp-python %s\n' "$version" >"$dest.partial/BUILD_INFO"
printf 'built %s in %ss\n' "${missing[*]}" "$(( $(date +%s) - started ))" >>"$dest.partial/BUILD_INFO"
rm -rf "$dest"
mv "$dest.partial" "$dest"
cat "$dest/BUILD_INFO"
