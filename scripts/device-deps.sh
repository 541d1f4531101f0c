#!/usr/bin/env bash
# Gathers what the GPU build needs from this machine's Debian packages into .device-deps/ (ignored by git),
# for scripts/device-check.sh on the GPU machine, which has a compiler, CMake, ninja and the CUDA toolkit
# but none of Debian's -dev packages and no network. Run it here, on the tree to be checked, before the
# device check, and carry .device-deps along with the working tree.
#
# What goes in (a prefix laid out like /usr, so CMAKE_PREFIX_PATH=.device-deps finds it):
#   - whole: the headers of nlohmann-json, CLI11, fmt, gtest/gmock, pcre2, utf8proc, xxhash; the static
#     libraries of pcre2-8, utf8proc, gtest and gmock; fmt's shared library (Debian ships no libfmt.a: the
#     build tree's RPATH finds it); the packages' own CMake config files and rewritten pkg-config files;
#   - Boost (180 MB of headers) only in part: the headers the build includes, listed by running the
#     preprocessor (-M) over every C++ unit of a configured tree (the GPU build's: no Google Benchmark),
#     plus the whole folders of the libraries whose includes depend on the compiler (Asio, Beast, config,
#     ...), since the GPU machine's g++ may be another version than this one's.
# It fails when a unit includes a header of a package that is neither gathered nor part of the compiler's
# own set (libc6-dev, linux-libc-dev, libstdc++), when a tree configured against the prefix alone does not
# preprocess (checked with a --sysroot that holds only those), or when the result is over the size the
# device tool carries. Usage: scripts/device-deps.sh [OUT_DIR]   (default .device-deps)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.device-deps}
ARCH=x86_64-linux-gnu
MAX_BYTES=$((40 * 1024 * 1024))  # leaves the working tree room in the device tool's 64 MiB

scan=$(mktemp -d /tmp/device-deps-scan.XXXXXX)
trap 'rm -rf "$scan"' EXIT

for p in libfmt-dev libcli11-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev libxxhash-dev libgtest-dev \
  libgmock-dev libboost1.81-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { echo "device-deps: package $p is not installed here (scripts/deps.sh installs it)" >&2; exit 1; }
done

rm -rf "$OUT"
mkdir -p "$OUT"
# copy PATH...: each /usr/X into $OUT/X (links kept as links, folders whole).
copy() {
  local src rel
  for src in "$@"; do
    [ -e "$src" ] || { echo "device-deps: missing $src" >&2; exit 1; }
    rel=${src#/usr/}
    mkdir -p "$OUT/$(dirname "$rel")"
    cp -a "$src" "$OUT/$rel"
  done
}

copy /usr/include/nlohmann /usr/share/cmake/nlohmann_json
copy /usr/include/CLI /usr/share/cmake/CLI11
copy /usr/include/fmt /usr/lib/$ARCH/cmake/fmt /usr/lib/$ARCH/libfmt.so /usr/lib/$ARCH/libfmt.so.9 \
  /usr/lib/$ARCH/libfmt.so.9.1.0
copy /usr/include/gtest /usr/include/gmock /usr/lib/$ARCH/cmake/GTest \
  /usr/lib/$ARCH/libgtest.a /usr/lib/$ARCH/libgtest_main.a /usr/lib/$ARCH/libgmock.a /usr/lib/$ARCH/libgmock_main.a
copy /usr/include/pcre2.h /usr/lib/$ARCH/libpcre2-8.a
copy /usr/include/utf8proc.h /usr/lib/$ARCH/libutf8proc.a
copy /usr/include/xxhash.h /usr/include/xxh3.h
copy /usr/lib/$ARCH/cmake/Boost-1.81.0 /usr/lib/$ARCH/cmake/boost_headers-1.81.0 \
  /usr/lib/$ARCH/cmake/BoostDetectToolset-1.81.0.cmake

# pkg-config files that point into the prefix wherever it lies (static libraries only are there). The
# top-level CMakeLists.txt finds the same libraries without pkg-config where there is none.
mkdir -p "$OUT/lib/$ARCH/pkgconfig"
for pc in libpcre2-8 libutf8proc; do
  # shellcheck disable=SC2016  # ${pcfiledir} and ${prefix} are pkg-config's, written as they are
  sed -e 's|^prefix=.*|prefix=${pcfiledir}/../../..|' -e 's|^libdir=.*|libdir=${prefix}/lib/'$ARCH'|' \
    -e 's|^includedir=.*|includedir=${prefix}/include|' "/usr/lib/$ARCH/pkgconfig/$pc.pc" \
    >"$OUT/lib/$ARCH/pkgconfig/$pc.pc"
done

# The headers every C++ unit of the GPU build includes: configure a scratch tree as device-check.sh does
# (its compile_commands.json), then ask the preprocessor.
cmake -S . -B "$scan/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLP_BUILD_BENCH=OFF >"$scan/configure.log" 2>&1 ||
  { cat "$scan/configure.log" >&2; exit 1; }
python3 - "$scan/build/compile_commands.json" "$scan/headers.txt" <<'EOF'
import json, os, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
units = json.load(open(sys.argv[1]))

def headers(e):
    args = e["arguments"] if "arguments" in e else shlex.split(e["command"])
    if "nvcc" in os.path.basename(args[0]):
        return set()  # CUDA units include the toolkit's headers and ours, which the GPU machine has
    cmd, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif a != "-c":
            cmd.append(a)
    r = subprocess.run(cmd + ["-M"], cwd=e["directory"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"device-deps: preprocessing {e['file']} failed:\n{r.stderr[:2000]}")
    return {t for t in r.stdout.replace("\\\n", " ").split() if t.startswith("/usr/")}

found = set()
with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
    for h in ex.map(headers, units):
        found |= h
open(sys.argv[2], "w").write("".join(p + "\n" for p in sorted(found)))
print(f"device-deps: {len(units)} units include {len(found)} headers from /usr")
EOF

# Every header outside the gathered ones must come with the compiler on any Linux machine.
grep -v -E "^/usr/include/(boost|nlohmann|CLI|fmt|gtest|gmock)/|^/usr/include/(pcre2|utf8proc|xxhash|xxh3)\.h$|^/usr/include/c\+\+/|^/usr/lib/gcc/|^/usr/local/cuda" \
  "$scan/headers.txt" >"$scan/other.txt" || true
bad=""
while read -r h; do
  pkg=$(dpkg -S "$(realpath "$h")" 2>/dev/null | head -1 | cut -d: -f1) || pkg="?"
  case "$pkg" in
    libc6-dev | linux-libc-dev | libstdc++-*-dev | libgcc-*-dev) ;;
    *) bad+="  $h ($pkg)"$'\n' ;;
  esac
done <"$scan/other.txt"
if [ -n "$bad" ]; then
  printf 'device-deps: headers of packages not gathered (add them to this script):\n%s' "$bad" >&2
  exit 1
fi

# Boost: the headers found, plus whole folders of the libraries whose includes vary with the compiler.
{
  grep "^/usr/include/boost/" "$scan/headers.txt"
  for d in asio beast config predef core detail type_traits system mp11 smart_ptr utility static_string \
    optional intrusive move; do
    find "/usr/include/boost/$d" -type f
  done
} | sort -u | sed 's|^/usr/||' | tar -C /usr -cf - -T - | tar -C "$OUT" -xf -

# Check: a tree configured against $OUT alone (no pkg-config, /usr ignored) preprocesses every C++ unit with
# a system root that holds only the compiler's own headers (libc, the kernel's, libstdc++) besides $OUT.
root="$scan/sysroot"
for p in libc6-dev linux-libc-dev "libstdc++-$(gcc -dumpversion | cut -d. -f1)-dev"; do
  dpkg -L "$p" | grep -E '^/usr/include/' || true
done | while read -r f; do
  if [ -f "$f" ]; then mkdir -p "$root$(dirname "$f")" && ln -sf "$f" "$root$f"; fi
done
cmake -S . -B "$scan/check" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLP_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$PWD/$OUT" -DCMAKE_LIBRARY_ARCHITECTURE=$ARCH -DCMAKE_IGNORE_PREFIX_PATH=/usr \
  -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON \
  >"$scan/check.log" 2>&1 || { cat "$scan/check.log" >&2; exit 1; }
python3 - "$scan/check/compile_commands.json" "$root" "$PWD/$OUT" <<'EOF2'
import json, os, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
units, root, prefix = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]

def check(e):
    args = e["arguments"] if "arguments" in e else shlex.split(e["command"])
    if "nvcc" in os.path.basename(args[0]):
        return ""
    cmd, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif a != "-c":
            cmd.append(a)
    r = subprocess.run(cmd + ["--sysroot=" + root, "-isystem", prefix + "/include", "-E", "-o", "/dev/null"],
                       cwd=e["directory"], capture_output=True, text=True)
    return f"{e['file']}:\n{r.stderr[:1000]}" if r.returncode else ""

with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
    errors = [x for x in ex.map(check, units) if x]
if errors:
    sys.exit("device-deps: units that do not preprocess from the prefix alone:\n" + "\n".join(errors))
print(f"device-deps: checked: {len(units)} units preprocess from {prefix} and the compiler's own headers")
EOF2

bytes=$(du -sb "$OUT" | cut -f1)
files=$(find "$OUT" -type f | wc -l)
echo "device-deps: $OUT holds $files files, $((bytes / 1024 / 1024)) MiB ($bytes bytes)"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
  echo "device-deps: over $((MAX_BYTES / 1024 / 1024)) MiB: the device tool carries 64 MiB with the tree" >&2
  exit 1
fi
