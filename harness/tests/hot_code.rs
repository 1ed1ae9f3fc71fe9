//! Phase 5's `.so` is linked with the code a run executes first
//! (`phases/phase5-thread-heaps/preload/hot-code.txt`, given to `lld` by its build
//! script), which keeps that code in the first 64 KiB of the library: the kernel maps
//! file pages in 64 KiB blocks around each fault, so code placed so costs a run about
//! 28 KiB less resident memory (chapter 5, *What is left*). The list holds mangled
//! names, whose hashes change with the crates' build settings and dependencies, and a
//! name the linker does not find is skipped without a word. This test says so instead,
//! with the names to write in their place.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// The list's names, in order: its lines that are not comments or blank.
fn listed_names(list: &Path) -> Vec<String> {
    std::fs::read_to_string(list)
        .unwrap_or_else(|e| panic!("{}: {e}", list.display()))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The library's function symbols and their addresses, in address order (`nm -n`).
fn functions_by_address(lib: &Path) -> Vec<(u64, String)> {
    let output = Command::new("nm")
        .args(["-n", "--defined-only"])
        .arg(lib)
        .output()
        .expect("nm runs (binutils)");
    assert!(output.status.success(), "nm {} failed", lib.display());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (address, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            let address = u64::from_str_radix(address, 16).ok()?;
            matches!(kind, "t" | "T").then(|| (address, name.to_owned()))
        })
        .collect()
}

/// A legacy-mangled name without its hash (`...17h0123456789abcdefE` -> `...`).
fn without_hash(name: &str) -> &str {
    match name.len().checked_sub(20) {
        Some(cut) if name[cut..].starts_with("17h") && name.ends_with('E') => &name[..cut],
        _ => name,
    }
}

/// Whether `lld` linked the library (it signs `.comment`); the list is given only to it.
fn linked_by_lld(lib: &Path) -> bool {
    let output = Command::new("readelf")
        .args(["-p", ".comment"])
        .arg(lib)
        .output()
        .expect("readelf runs (binutils)");
    String::from_utf8_lossy(&output.stdout).contains("Linker: LLD")
}

#[test]
fn phase5_is_linked_with_its_hot_code_first() {
    harness::phases::build_all().expect("the phases build");
    let lib = harness::phases::phase(5)
        .expect("phase 5 is registered")
        .lib_path();
    if !linked_by_lld(&lib) {
        println!(
            "{} was not linked by lld: no ordering to check",
            lib.display()
        );
        return;
    }
    let list = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../phases/phase5-thread-heaps/preload/hot-code.txt");
    let listed = listed_names(&list);
    let functions = functions_by_address(&lib);

    let present: HashSet<&str> = functions.iter().map(|(_, name)| name.as_str()).collect();
    let stale: Vec<String> = listed
        .iter()
        .filter(|name| !present.contains(name.as_str()))
        .map(|name| {
            let renamed = functions
                .iter()
                .map(|(_, f)| f)
                .find(|f| without_hash(f) == without_hash(name) && f.as_str() != name);
            match renamed {
                Some(new) => format!("  {name}\n    -> {new}"),
                None => format!("  {name}\n    -> (no such function now: remove it)"),
            }
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{} names in {} that the build no longer has (their code is no longer placed \
         first); write these in their place:\n{}",
        stale.len(),
        list.display(),
        stale.join("\n")
    );

    // The listed functions come first: every function at an address of its own (not
    // an alias of a listed one, as `__libc_malloc` is of `malloc`) lies after all of
    // them, but the C runtime's `_init` and `_fini`, which its sections place first.
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let listed_addresses: HashSet<u64> = functions
        .iter()
        .filter(|(_, name)| listed_set.contains(name.as_str()))
        .map(|(address, _)| *address)
        .collect();
    let last_listed = listed_addresses.iter().copied().max().unwrap_or(0);
    let before_the_end: Vec<&str> = functions
        .iter()
        .filter(|(address, name)| {
            *address < last_listed
                && !listed_addresses.contains(address)
                && !matches!(name.as_str(), "_init" | "_fini")
        })
        .map(|(_, name)| name.as_str())
        .collect();
    assert!(
        before_the_end.is_empty(),
        "functions not in the list placed among the listed ones in {}: {before_the_end:?}",
        lib.display()
    );
}
