# mymalloc's front door. Every recipe is a thin wrapper: it prints the cargo or harness
# command it runs, and that command works the same without just (see README.md).
#
#   just test                        every test in the workspace
#   just demo                        build phase 1, show its demo, run ls under it
#   just phase1 test|build|demo|bench
#   just phase1 run -- CMD ARGS...   CMD under phase 1's allocator
#   just phase 1 build               the same, for any registered phase
#   just bench                       every phase against glibc and others (harness bench)
#   just grade LIB.so N              grade any allocator on phase N's rubric
#
# `phase2` ... `phase5` work the same way for every phase in the registry of phases
# (harness/src/phases.rs; `cargo run -p harness --bin harness -- phases` lists it).

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

# A phase's recipes: test | build | demo | bench | run -- CMD..., e.g. `just phase 2 build`.
phase number action *args:
    @{{just_executable()}} _phase "$@"

# Phase 1: test | build | demo | bench | run -- CMD...
phase1 action *args:
    @{{just_executable()}} _phase 1 "$@"

# Phase 2: test | build | demo | bench | run -- CMD...
phase2 action *args:
    @{{just_executable()}} _phase 2 "$@"

# Phase 3: test | build | demo | bench | run -- CMD...
phase3 action *args:
    @{{just_executable()}} _phase 3 "$@"

# Phase 4: test | build | demo | bench | run -- CMD...
phase4 action *args:
    @{{just_executable()}} _phase 4 "$@"

# Phase 5: test | build | demo | bench | run -- CMD...
phase5 action *args:
    @{{just_executable()}} _phase 5 "$@"

# Build the book (docs/) into docs/book; needs mdbook (`cargo install mdbook`).
book:
    mdbook build docs

# One recipe behind `phase N` and phase1 ... phase5. What a phase's packages are
# called and where its .so is comes from the registry of phases
# (harness/src/phases.rs), read with `harness phases N`; folder names are not
# guessed, so other crates beside the phases (a student's) change nothing here.
_phase number action *args:
    #!/usr/bin/env bash
    set -euo pipefail
    shift 2
    number={{quote(number)}}
    action={{quote(action)}}
    harness() { cargo run --quiet --release -p harness --bin harness -- "$@"; }
    registered=$(harness phases | cut -f1)
    if ! grep -qx -- "$number" <<<"$registered"; then
        echo "just: phase $number is not in the registry of phases (it has:" $registered")" >&2
        exit 2
    fi
    package='' policy='' lib=''
    while IFS=$'\t' read -r key value; do
        case "$key" in
            package) package=$value ;;
            policy) policy=$value ;;
            lib) lib=$value ;;
        esac
    done < <(harness phases "$number")
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
            # The .so package has no tests of its own: they are the policy's.
            show cargo test -p "$policy"
            # The harness's integration tests (tests/*.rs): those about this phase
            # (named phaseN_...) and those that run on each registered phase
            # (named each_phase_...), narrowed to this one by HARNESS_PHASE. Only the
            # integration tests: a binary's own test target would take the filters
            # as its arguments.
            show env HARNESS_PHASE="$number" cargo test -p harness --test '*' -- "phase$number" each_phase
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
            # bench_alloc is built beside the phase's .so (target/release/).
            bench_alloc="$(dirname "$lib")/bench_alloc"
            show env LD_PRELOAD="$lib" "$bench_alloc" --small 1000000
            echo "glibc:"
            show "$bench_alloc" --small 1000000
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
