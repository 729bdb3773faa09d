#!/usr/bin/env bash
# scripts/test-all.sh: the whole test suite of libdeferred, as CI runs it.
#
# Installs what is missing, generates the build system, then, each in its
# own out-of-tree build directory (build-test-*):
#   a. plain:      ../configure && make -j2 check, then
#                  scripts/check-install.sh (make install into a scratch
#                  directory, outside programs built with pkg-config alone)
#   b. sanitizers: --enable-sanitizers (ASan + UBSan, clang if present),
#                  make check with leak detection on
#   c. valgrind:   make check-valgrind in the plain build
#   d. tsan:       --enable-tsan, make check
#   e. distcheck:  make distcheck in the plain build
#   f. bench:      make bench BENCH_ARGS=--quick in the plain build, when
#                  bench/deferred-bench.c exists
#   g. fuzz:       make fuzz-run: each libFuzzer harness (fuzz/) for
#                  FUZZ_SECONDS (default 60) seconds on its seed corpus,
#                  when clang's fuzzer runtime is present (else skipped);
#                  a crash fails the stage, a time-out only warns; with a
#                  fixed seed and at most FUZZ_RUNS (600000) runs, so that
#                  a run is reproducible (FUZZ_SEED=0: a random campaign)
# After each "make check" it prints every t/*.log and examples/*.log, so
# that the Check summaries are visible.  Every stage runs even when an
# earlier one failed; the script exits non-zero if any failed.
#
# Environment: JOBS (default 2) is the make parallelism; STAGES (default
# "a b c d e f g") picks the stages to run; FUZZ_SECONDS (default 60) is
# the time of each fuzz harness in stage g.
set -euo pipefail

cd "$(dirname "$0")/.."
top=$(pwd)
jobs=${JOBS:-2}
stages=${STAGES:-a b c d e f g}
fuzz_seconds=${FUZZ_SECONDS:-60}
# The fuzz stage is reproducible: a fixed seed and a bounded number of
# runs (a slower machine stops at FUZZ_SECONDS, on a prefix of the same
# inputs).  FUZZ_SEED=0 makes it a random campaign instead.
fuzz_seed=${FUZZ_SEED:-1}
fuzz_runs=${FUZZ_RUNS:-600000}
if test "$fuzz_seed" = 0; then
    fuzz_args=
else
    fuzz_args="-seed=$fuzz_seed -runs=$fuzz_runs"
fi

echo "== test-all: installing what is missing"
scripts/install-deps.sh

if test -f "$top/config.status"; then
    echo "test-all: the source tree is configured in place; out-of-tree builds" >&2
    echo "test-all: need it clean: run 'make distclean' in $top first." >&2
    exit 1
fi

echo "== test-all: autoreconf -fi"
autoreconf -fi

# The compiler for the sanitizer builds: clang when present, else gcc.
if command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1; then
    san_cc=clang
    san_cxx=clang++
else
    san_cc=gcc
    san_cxx=g++
fi

results=()
failed_stages=0
check_logs=()

# print_logs DIR: show the logs of the tests run in build directory DIR.
print_logs() {
    local dir=$1 f
    shopt -s nullglob
    for f in "$dir"/t/*.log "$dir"/examples/*.log; do
        case $f in *.valgrind.log) continue ;; esac
        echo "----- ${f#"$top"/} -----"
        cat "$f"
    done
    if test -f "$dir/test-suite.log" && grep -q '^# FAIL: *[1-9]\|^# ERROR: *[1-9]' "$dir/test-suite.log"; then
        echo "----- ${dir#"$top"/}/test-suite.log -----"
        cat "$dir/test-suite.log"
    fi
    shopt -u nullglob
}

# configure_in DIR ARGS...: a fresh build directory configured with ARGS.
configure_in() {
    local dir=$1
    shift
    rm -rf "$dir" && mkdir -p "$dir" && (cd "$dir" && ../configure "$@")
}

# make_check DIR [ENV...]: make check in DIR, then print the logs.  When a
# sanitizer runtime cannot map its shadow memory (kernels with a high
# vm.mmap_rnd_bits), it runs the tests again with ASLR off.
make_check() {
    local dir=$1 status=0
    shift
    (cd "$dir" && env "$@" make -j"$jobs" check) || status=$?
    if test "$status" -ne 0 &&
        grep -l -E 'unexpected memory mapping|Shadow memory range interleaves|DEADLYSIGNAL' \
            "$dir"/t/*.log "$dir"/examples/*.log >/dev/null 2>&1; then
        echo "test-all: a sanitizer could not map its memory: again with ASLR off (setarch -R)"
        status=0
        (cd "$dir" && env "$@" setarch "$(uname -m)" -R make -j"$jobs" check) || status=$?
    fi
    print_logs "$dir"
    check_logs+=("$dir")
    return "$status"
}

# run_stage NAME FUNCTION: run a stage, time it and record the outcome.
run_stage() {
    local name=$1 fn=$2 start end status=0
    echo
    echo "== test-all: stage $name"
    start=$(date +%s)
    "$fn" || status=$?
    end=$(date +%s)
    if test "$status" -eq 0; then
        results+=("PASS  $name  ($((end - start)) s)")
    else
        results+=("FAIL  $name  ($((end - start)) s, exit status $status)")
        failed_stages=$((failed_stages + 1))
    fi
    echo "== test-all: stage $name: $(test "$status" -eq 0 && echo passed || echo FAILED) in $((end - start)) s"
}

plain=$top/build-test-plain
asan=$top/build-test-asan
tsan=$top/build-test-tsan
fuzzdir=$top/build-test-fuzz

stage_plain() {
    configure_in "$plain" && make_check "$plain" &&
        CC=${CC:-cc} scripts/check-install.sh "$plain"
}
stage_sanitizers() {
    configure_in "$asan" --enable-sanitizers CC="$san_cc" CXX="$san_cxx" &&
        make_check "$asan" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
}
stage_valgrind() {
    test -f "$plain/Makefile" || { echo "test-all: no plain build to run valgrind in" >&2; return 1; }
    (cd "$plain" && make -j"$jobs" check-valgrind)
}
stage_tsan() {
    configure_in "$tsan" --enable-tsan CC="$san_cc" CXX="$san_cxx" &&
        make_check "$tsan" TSAN_OPTIONS=halt_on_error=1
}
stage_distcheck() {
    test -f "$plain/Makefile" || { echo "test-all: no plain build to run distcheck in" >&2; return 1; }
    (cd "$plain" && make -j"$jobs" distcheck)
}
stage_bench() {
    test -f "$plain/Makefile" || { echo "test-all: no plain build to run the benchmark in" >&2; return 1; }
    (cd "$plain" && make bench BENCH_ARGS=--quick)
}

# fuzzer_runtime: true when clang links -fsanitize=fuzzer (its libFuzzer
# runtime is installed).
fuzzer_runtime() {
    local tmp status=0
    command -v clang >/dev/null 2>&1 || return 1
    tmp=$(mktemp -d) || return 1
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return (int)(n && !d[0]); }' \
        > "$tmp/t.c"
    clang -fsanitize=fuzzer,address,undefined "$tmp/t.c" -o "$tmp/t" >/dev/null 2>&1 || status=1
    rm -rf "$tmp"
    return "$status"
}
# Each harness runs FUZZ_SECONDS seconds (make fuzz-run bounds each run's
# wall clock at twice that plus a minute).  make fuzz-run exits non-zero
# on a crash only: a time-out is a warning.  The crashing input is kept in
# build-test-fuzz/fuzz/artifacts/<harness>/ and its log printed.
stage_fuzz() {
    local status=0
    configure_in "$fuzzdir" FUZZ_CC=clang && (cd "$fuzzdir" && make -j"$jobs" fuzz) || return 1
    (cd "$fuzzdir" && make fuzz-run FUZZ_SECONDS="$fuzz_seconds" FUZZ_ARGS="$fuzz_args") || status=$?
    if test "$status" -ne 0 &&
        grep -l -E 'unexpected memory mapping|Shadow memory range interleaves' \
            "$fuzzdir"/fuzz/fuzz-*.log >/dev/null 2>&1; then
        echo "test-all: the sanitizer could not map its memory: again with ASLR off (setarch -R)"
        status=0
        (cd "$fuzzdir" && setarch "$(uname -m)" -R make fuzz-run FUZZ_SECONDS="$fuzz_seconds" FUZZ_ARGS="$fuzz_args") || status=$?
    fi
    return "$status"
}

for s in $stages; do
    case $s in
        a) run_stage "a. plain make check" stage_plain ;;
        b) run_stage "b. ASan+UBSan make check ($san_cc)" stage_sanitizers ;;
        c) run_stage "c. make check-valgrind" stage_valgrind ;;
        d) run_stage "d. TSan make check ($san_cc)" stage_tsan ;;
        e) run_stage "e. make distcheck" stage_distcheck ;;
        f)
            if test -f "$top/bench/deferred-bench.c"; then
                run_stage "f. make bench BENCH_ARGS=--quick" stage_bench
            else
                results+=("SKIP  f. bench (bench/deferred-bench.c does not exist yet)")
            fi
            ;;
        g)
            if fuzzer_runtime; then
                run_stage "g. make fuzz-run FUZZ_SECONDS=$fuzz_seconds (clang libFuzzer)" stage_fuzz
            else
                echo
                echo "== test-all: stage g. fuzz: SKIPPED: clang with its libFuzzer runtime is not installed"
                results+=("SKIP  g. fuzz (clang's libFuzzer runtime is not installed)")
            fi
            ;;
        *) echo "test-all: unknown stage '$s' (stages are a b c d e f g)" >&2; exit 2 ;;
    esac
done

# Add up the Check summaries ("100%: Checks: N, Failures: F, Errors: E")
# of every make check run.
checks=0
bad=0
for dir in "${check_logs[@]}"; do
    for f in "$dir"/t/*.log; do
        case $f in *.valgrind.log) continue ;; esac
        test -f "$f" || continue
        while read -r n fl er; do
            checks=$((checks + n))
            bad=$((bad + fl + er))
        done < <(sed -n 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' "$f")
    done
done

echo
echo "== test-all: summary"
for r in "${results[@]}"; do
    echo "  $r"
done
echo "  Check tests over ${#check_logs[@]} make check runs: $checks run, $bad failed or errored"
if test "$failed_stages" -ne 0; then
    echo "test-all: $failed_stages stage(s) FAILED"
fi
echo "checks: $((checks - bad)) passed, $bad failed"
test "$failed_stages" -eq 0 && test "$bad" -eq 0
