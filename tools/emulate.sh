#!/usr/bin/env bash
# Run the processor-dependent slice of the tests as the processors and
# compilers the wheels meet would run it, whatever processor this machine has.
#
#   bash tools/emulate.sh setup               # Debian's qemu-user, clang, aarch64 cross tools
#   bash tools/emulate.sh x86 Haswell avx2    # x86-64 with AVX2, no AVX-512 (qemu-x86_64)
#   bash tools/emulate.sh x86 Nehalem baseline  # x86-64 with SSE2 only
#   bash tools/emulate.sh aarch64             # cross-compiled, run under qemu-aarch64
#   bash tools/emulate.sh clang               # built by Clang (macOS's compiler)
#   bash tools/emulate.sh plain               # no vector extensions: the route MSVC takes
#
# x86 tests the installed cmlp (PYTHON=..., default python3, with the test
# requirements) on an emulated processor and checks that import picked the
# variant named; aarch64, clang and plain build cmlp from this checkout into a
# temporary folder put first on PYTHONPATH, leaving the installed one alone.
# Each prints cmlp.show_config() first, so the log says what ran.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}

# Every kernel and every path that depends on the processor: the notebook,
# finite differences, the variants' bit-equality and the recorded digests,
# products through both routes, the sigmoid's edges, the optimisers, fit and
# train_epoch, the model files, the vector kernels' C on its own, and the
# ensemble's kernels (the tiny-network one is built per variant).
SLICE=(tests/test_notebook.py tests/test_gradients.py tests/test_variants.py
       tests/test_same_bits_everywhere.py tests/test_products.py tests/test_numerics.py
       tests/test_optim.py tests/test_training.py tests/test_train_epoch.py
       tests/test_files.py tests/test_vector_kernels_c.py tests/test_ensemble.py)
# A child interpreter would run on the host's processor (x86) or not at all
# (aarch64, without a binfmt_misc entry), so those tests are left out.
MARKERS="not slow and not spawns_python"

# qemu warns once per thread about CPUID bits TCG does not emulate; harmless.
quiet_qemu() { grep -v "TCG doesn't support requested feature" >&2 || true; }

slice() {  # slice <emulator words...>: the slice under that emulator
    "$@" -c "import cmlp; cmlp.show_config()"
    "$@" -m pytest -q -p no:cacheprovider -m "$MARKERS" "${SLICE[@]}"
}

# build <folder> [VAR=value...]: cmlp from a clean copy of this checkout,
# compiled by pip as any install is (the build requirements of pyproject.toml
# in an isolated environment), with the given compiler settings.
build() {
    local into=$1; shift
    mkdir -p "$into/src"
    cp -r "$root/src" "$root/setup.py" "$root/pyproject.toml" "$root/README.md" \
        "$root/LICENSE" "$into/src/"
    # Cython's output (a .c beside each .pyx) and built modules, so that this build makes its own.
    local pyx
    for pyx in "$into"/src/src/cmlp/*.pyx; do rm -f "${pyx%.pyx}.c"; done
    find "$into/src" -name '*.so' -delete
    env "$@" "$python" -m pip install -q --no-deps --target "$into/site" "$into/src"
    # The linker's start files carry GCC's name too: Clang's, when present, is the compiler.
    local comment
    comment=$(readelf -p .comment "$into"/site/cmlp/_kernels*.so)
    echo "built by: $(grep -o -m1 'clang version.*' <<< "$comment" || grep -o -m1 'GCC:.*' <<< "$comment")"
}

setup() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo dpkg --add-architecture arm64
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        qemu-user clang gcc-aarch64-linux-gnu libc6-dev-arm64-cross libpython3.11-dev:arm64 \
        > /dev/null
}

x86() {
    local cpu=$1 expected=$2
    CMLP_EXPECT_VARIANT=$expected CMLP_TEST_EMULATOR="qemu-x86_64 -cpu $cpu" \
        slice qemu-x86_64 -cpu "$cpu" "$(command -v "$python")" 2> >(quiet_qemu)
}

aarch64() {
    local work
    work=$(mktemp -d)
    # Debian installs libpython3.11 for arm64 beside the host's interpreter but
    # not python3.11 itself: a three-line embedding main is an aarch64 python.
    printf '#include <Python.h>\nint main(int c, char **v) { return Py_BytesMain(c, v); }\n' \
        > "$work/pymain.c"
    aarch64-linux-gnu-gcc -O2 -I/usr/include/aarch64-linux-gnu/python3.11 \
        -I/usr/include/python3.11 "$work/pymain.c" -o "$work/python3" \
        -L/usr/lib/aarch64-linux-gnu -lpython3.11
    # NumPy, SciPy and the test requirements as the aarch64 wheels users get.
    "$python" -m pip install -q --target "$work/deps" --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp --abi cp311 \
        numpy scipy threadpoolctl "pytest>=7" "hypothesis>=6"
    # The cross compiler builds the extension against Debian's aarch64 Python
    # headers and the aarch64 NumPy's, named for the aarch64 interpreter.
    build "$work/cmlp" CC=aarch64-linux-gnu-gcc LDSHARED="aarch64-linux-gnu-gcc -shared" \
        SETUPTOOLS_EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so \
        CFLAGS="-I/usr/include/aarch64-linux-gnu/python3.11 -I/usr/include/python3.11 -I$work/deps/numpy/_core/include"
    # Starting a thread hangs under qemu-aarch64 7.2 (a trivial
    # threading.Thread().start() spins for ever): one OpenBLAS thread, and
    # the tests that start threads left out, and so is pytest's faulthandler
    # timeout, whose watchdog is a thread; OpenMP's regions keep to one thread.
    PYTEST_ADDOPTS="-o faulthandler_timeout=0" OMP_THREAD_LIMIT=1 \
    MARKERS="$MARKERS and not starts_threads" QEMU_LD_PREFIX=/usr/aarch64-linux-gnu LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu \
        OPENBLAS_NUM_THREADS=1 PYTHONPATH="$work/cmlp/site:$work/deps" \
        CMLP_EXPECT_VARIANT=baseline CMLP_TEST_CC=aarch64-linux-gnu-gcc \
        CMLP_TEST_EMULATOR=qemu-aarch64 slice qemu-aarch64 "$work/python3"
    rm -rf "$work"
}

clang_build() {
    local work
    work=$(mktemp -d)
    build "$work" CC=clang LDSHARED="clang -shared"
    PYTHONPATH="$work/site" CMLP_TEST_CC=clang slice "$python"
    rm -rf "$work"
}

plain() {
    local work
    work=$(mktemp -d)
    # Without vector extensions, and only the baseline variant at run time:
    # what an MSVC build runs (MSVC has neither the extensions nor the x86
    # target attributes the other variants are compiled with).
    build "$work" CFLAGS="-DCMLP_NO_VECTOR_EXTENSIONS"
    PYTHONPATH="$work/site" CMLP_VECTOR_VARIANT=baseline CMLP_EXPECT_VARIANT=baseline \
        slice "$python"
    rm -rf "$work"
}

case "${1:-}" in
    setup) setup ;;
    x86) x86 "$2" "$3" ;;
    aarch64) aarch64 ;;
    clang) clang_build ;;
    plain) plain ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
esac
