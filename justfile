# mymalloc's front door. Every recipe is a thin wrapper: it prints the cargo or harness
# command it runs, and that command works the same without just (see README.md).
#
#   just test                        every test in the workspace
#   just demo                        build phase 1, show its demo, run ls under it
#   just phase1 test|build|demo|bench
#   just phase1 run -- CMD ARGS...   CMD under phase 1's allocator
#   just bench                       every phase against glibc and others (harness bench)
#   just grade LIB.so N              grade any allocator on phase N's rubric
#
# `phase2` and `phase3` work the same way once their crates (phases/phase2-*/,
# phases/phase3-*/) are in the workspace.

set positional-arguments

# List the recipes.
default:
    @just --list --unsorted

# Every test in the workspace: the phases' unit tests, the kit, the harness, the book's transcripts.
test:
    cargo test --workspace

# Build phase 1, run the demo under it (with its debug log) and ls beside glibc's.
demo:
    cargo run --release -p harness --bin harness -- demo

# Benchmark every phase against glibc (and jemalloc, mimalloc, tcmalloc where installed); see docs/benchmarks.md.
bench *args:
    cargo run --release -p harness --bin harness -- bench "$@"

# Grade any allocator .so on phase N's rubric, e.g. `just grade target/release/libphase1_sbrk_freelist.so 1`.
grade lib phase:
    cargo run --release -p harness --bin harness -- grade --lib {{quote(lib)}} --phase {{quote(phase)}}

# Phase 1 (sbrk, free list, first fit): test | build | demo | bench | run -- CMD...
phase1 action *args:
    @{{just_executable()}} _phase 1 "$@"

# Phase 2 (split and coalesce): test | build | demo | bench | run -- CMD...
phase2 action *args:
    @{{just_executable()}} _phase 2 "$@"

# Phase 3 (mmap for large blocks, debug mode): test | build | demo | bench | run -- CMD...
phase3 action *args:
    @{{just_executable()}} _phase 3 "$@"

# Build the book (docs/) into docs/book; needs mdbook (`cargo install mdbook`).
book:
    mdbook build docs

# One recipe behind phase1, phase2, phase3. The phase's crate is the one folder
# phases/phaseN-*/, so a new phase needs no change here.
_phase number action *args:
    #!/usr/bin/env bash
    set -euo pipefail
    shift 2
    number={{quote(number)}}
    action={{quote(action)}}
    shopt -s nullglob
    crates=(phases/phase"$number"-*/Cargo.toml)
    if [ "${#crates[@]}" -ne 1 ]; then
        echo "just: phase $number is not in this tree yet (no phases/phase$number-*/)" >&2
        exit 2
    fi
    # The folder holds the policy library (its own package name) and, in preload/,
    # the .so's package, named like the folder.
    package=$(basename "$(dirname "${crates[0]}")")
    policy=$(sed -n 's/^name = "\(.*\)"$/\1/p' "${crates[0]}" | head -n 1)
    target=${CARGO_TARGET_DIR:-target}
    case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
    lib="$target/release/lib${package//-/_}.so"
    # Prints the command as one could type it, then runs it.
    show() {
        local line='$' word quote="'\\''"
        for word in "$@"; do
            if [[ $word =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then line+=" $word"
            else line+=" '${word//\'/$quote}'"; fi
        done
        printf '%s\n' "$line" >&2
        "$@"
    }
    case "$action" in
        test)
            show cargo test -p "$policy"
            # The harness's integration tests (tests/*.rs) name each test after its
            # phase. Only those: a binary's own test target would take the filter
            # as its arguments.
            show cargo test -p harness --test '*' -- "phase$number"
            ;;
        build)
            show cargo build --release -p "$package"
            ;;
        demo)
            show cargo run --release -p harness --bin harness -- demo --phase "$number"
            ;;
        bench)
            show cargo build --release -p "$package" -p harness --bin bench_alloc
            echo "$package:"
            show env LD_PRELOAD="$lib" "$target/release/bench_alloc" --small 1000000
            echo "glibc:"
            show "$target/release/bench_alloc" --small 1000000
            ;;
        run)
            # `just phase1 run ls` is taken to mean `just phase1 run -- ls`.
            if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then set -- -- "$@"; fi
            show cargo run --quiet --release -p harness --bin harness -- run --phase "$number" "$@"
            ;;
        *)
            echo "just: phase$number: unknown action '$action' (test, build, demo, bench, run -- CMD...)" >&2
            exit 2
            ;;
    esac
