//! A student's path through the book: `harness new` makes a starter, and `harness
//! check` runs a phase's stages on it. The starters are built here from fresh copies,
//! as a student gets them; the reference phases' stages are in `rubric.rs`.
//!
//! Test names start with the phase they check (`phase1_…`).

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use harness::phases;

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn harness(args: &[&str]) -> Ran {
    let output = Command::cargo_bin("harness")
        .expect("the harness binary")
        .args(args)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("harness runs");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn new_starter(dir: &Path, lang: &str) -> PathBuf {
    let starter = dir.join("my-malloc");
    let made = harness(&["new", starter.to_str().unwrap(), "--lang", lang]);
    assert_eq!(made.code, Some(0), "harness new: {}", made.stderr);
    starter
}

fn check(args: &[&str]) -> Ran {
    let mut all = vec!["check"];
    all.extend(args);
    harness(&all)
}

/// What the handout promises a fresh starter prints: stage 1 fails, naming the step
/// to write and the section that explains it.
fn assert_fails_at_stage_1(ran: &Ran, step_line: &str) {
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    let out = &ran.stdout;
    assert!(
        out.contains("stage  1/") && out.contains(" FAIL api/alignment"),
        "{out}"
    );
    assert!(
        out.contains(" failed: api/alignment (every block is 16-byte aligned)"),
        "{out}"
    );
    assert!(out.contains(step_line), "{out}");
    assert!(out.contains("--only api/alignment"), "{out}");
    assert!(
        out.contains("read:      docs/src/ch01-sbrk-freelist.md#blocks-and-their-headers"),
        "{out}"
    );
    assert!(
        !out.contains("stage  2/"),
        "stops at the first failure:\n{out}"
    );
}

#[test]
fn phase1_rust_starter_builds_and_fails_at_stage_1_saying_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let starter = new_starter(dir.path(), "rust");
    let ran = check(&["--phase", "1", starter.to_str().unwrap()]);
    assert_fails_at_stage_1(
        &ran,
        "my-malloc: chapter 1, step 1 is not written yet: block_size_for in src/block.rs \
         (see \"Blocks and their headers\")",
    );
}

#[test]
fn phase1_c_starter_builds_and_fails_at_stage_1_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let starter = new_starter(dir.path(), "c");
    let ran = check(&["--phase", "1", starter.to_str().unwrap()]);
    assert_fails_at_stage_1(
        &ran,
        "my-malloc: chapter 1, step 1 is not written yet: mm_alloc in mymalloc.c \
         (see \"Blocks and their headers\")",
    );
    assert!(starter.join("libmymalloc.so").is_file());
}

/// The starter's heap with every phase-1 step filled in by the reference policy: each
/// method hands the call to `sbrk_freelist::FreeListHeap`. Proves that a correct
/// policy in the starter's frame passes every stage (the frame adds nothing that fails).
const FILLED_IN_HEAP: &str = r#"
use core::ptr::NonNull;

use preload_kit::{Config, Fault, Heap, Location, Out, Stats};
use sbrk_freelist::FreeListHeap;

pub struct MyHeap(FreeListHeap);

impl Heap for MyHeap {
    const NAME: &'static str = "my-malloc";
    fn new(config: &Config) -> Self {
        MyHeap(FreeListHeap::new(config))
    }
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size, align)
    }
    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.0.free(ptr)
    }
    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        self.0.usable_size(ptr)
    }
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        self.0.realloc(ptr, size)
    }
    fn locate(&self, addr: usize) -> Location {
        self.0.locate(addr)
    }
    fn dump_blocks(&self, out: &mut Out) {
        self.0.dump_blocks(out)
    }
    fn stats(&self) -> Stats {
        self.0.stats()
    }
    fn check(&self) -> Result<(), Fault> {
        self.0.check()
    }
}
"#;

#[test]
fn phase1_starter_filled_in_with_the_reference_policy_passes_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let starter = new_starter(dir.path(), "rust");
    let policy = phases::workspace_root().join("phases/phase1-sbrk-freelist");
    let manifest = starter.join("Cargo.toml");
    let mut cargo_toml = std::fs::read_to_string(&manifest).unwrap();
    cargo_toml = cargo_toml.replace(
        "[dependencies]\n",
        &format!(
            "[dependencies]\nsbrk-freelist = {{ path = {:?} }}\n",
            policy.display().to_string()
        ),
    );
    std::fs::write(&manifest, cargo_toml).unwrap();
    std::fs::write(starter.join("src/heap.rs"), FILLED_IN_HEAP).unwrap();
    let ran = check(&["--phase", "1", "--no-timing", starter.to_str().unwrap()]);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("every stage run passed"),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("FAIL"), "{}", ran.stdout);
}

#[test]
fn check_says_what_it_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let ran = check(&["--phase", "1", dir.path().to_str().unwrap()]);
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .contains("neither a crate (Cargo.toml) nor a C folder (Makefile)"),
        "{}",
        ran.stderr
    );
    let ran = check(&["--phase", "1"]);
    assert_eq!(ran.code, Some(2));
    let ran = check(&["--phase", "1", "--only", "api/nothing", "x"]);
    assert_eq!(ran.code, Some(2));
}

/// `docs/src/handout.md` shows every stage between two markers: what `harness check
/// --list` prints (regenerate it with that command).
#[test]
fn the_stages_in_the_handout_are_the_catalogue() {
    let page = phases::workspace_root().join("docs/src/handout.md");
    let text = std::fs::read_to_string(&page).expect("docs/src/handout.md exists");
    let begin = "<!-- harness check --list: begin -->\n";
    let end = "<!-- harness check --list: end -->";
    let start = text.find(begin).expect("the begin marker") + begin.len();
    let stop = text[start..].find(end).expect("the end marker") + start;
    let generated = harness::student::stages::markdown();
    assert_eq!(
        &text[start..stop],
        generated,
        "docs/src/handout.md's stages are out of date: replace them with \
         `cargo run -p harness --bin harness -- check --list`"
    );
    let listed = harness(&["check", "--list"]);
    assert_eq!(
        (listed.code, listed.stdout.as_str()),
        (Some(0), generated.as_str())
    );
}

/// The templates are the files under `harness/starters/`, copied as they are (the
/// kit's path aside).
#[test]
fn a_new_starter_is_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let starter = new_starter(dir.path(), "rust");
    let template = phases::workspace_root().join("harness/starters/rust");
    for file in [
        "src/lib.rs",
        "src/steps.rs",
        "src/block.rs",
        "src/heap.rs",
        ".gitignore",
    ] {
        assert_eq!(
            std::fs::read_to_string(starter.join(file)).unwrap(),
            std::fs::read_to_string(template.join(file)).unwrap(),
            "{file}"
        );
    }
    let manifest = std::fs::read_to_string(starter.join("Cargo.toml")).unwrap();
    let kit = phases::workspace_root().join("phases/preload-kit");
    assert!(
        manifest.contains(&format!("path = {:?}", kit.display().to_string())),
        "{manifest}"
    );
}

/// `--watch` checks again after a save: a change to the C file starts a second round.
#[test]
fn phase1_watch_checks_again_when_a_file_changes() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let starter = new_starter(dir.path(), "c");
    let log = dir.path().join("watch.log");
    let mut child = Command::cargo_bin("harness")
        .unwrap()
        .args([
            "check",
            "--phase",
            "1",
            "--watch",
            starter.to_str().unwrap(),
        ])
        .env_remove("LD_PRELOAD")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rounds = |log: &Path| {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(log) {
            let _ = file.read_to_string(&mut text);
        }
        text.matches("(watching ").count()
    };
    let wait_for = |n: usize| {
        let start = Instant::now();
        while rounds(&log) < n && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(100));
        }
        rounds(&log)
    };
    let first = wait_for(1);
    // Modification times can be coarse: make sure the next write is seen as newer.
    std::thread::sleep(Duration::from_millis(1100));
    let source = starter.join("mymalloc.c");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text + "\n/* saved again */\n").unwrap();
    let second = wait_for(2);
    let _ = child.kill();
    let _ = child.wait();
    let output = std::fs::read_to_string(&log).unwrap();
    assert_eq!((first, second), (1, 2), "{output}");
    assert_eq!(
        output.matches("failed: api/alignment").count(),
        2,
        "{output}"
    );
}

/// Replaces `from` by `to` in the starter's file `name`; the test fails if the starter
/// no longer has `from` (its steps changed shape, and this test must follow).
fn write_step(starter: &Path, name: &str, from: &str, to: &str) {
    let path = starter.join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{name} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// A student's way through chapter 1, in the starter's own files: the steps' bodies
/// written as the chapter asks, everything given left as it is. After steps 1 and 2
/// malloc works (stage 1, and a real program) and the stage that step 3 is for fails,
/// naming step 3; after steps 3 and 4 every stage passes. So the starter's given code (the pointer check, the
/// walk, realloc, alloc's outline) is right, and the stages come in the steps' order.
#[test]
fn phase1_starter_steps_written_in_order_pass_their_stages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let starter = new_starter(dir.path(), "rust");
    let path = starter.to_str().unwrap();
    write_step(&starter, "src/block.rs", "use crate::steps;\n", "");
    write_step(
        &starter,
        "src/block.rs",
        "    let _ = size;\n    steps::not_written(&steps::BLOCK_SIZE)\n",
        "    let size = size.checked_add(HEADER_SIZE)?.checked_next_multiple_of(BLOCK_ALIGN)?;
    (size <= isize::MAX as usize).then_some(size.max(MIN_BLOCK))\n",
    );
    write_step(
        &starter,
        "src/heap.rs",
        "        let _ = (size, align);\n        steps::not_written(&steps::GROW)\n",
        "        // Room for the block and the largest gap before it, in one region.
        if !self.arena.make_room(size.checked_add(align)?.checked_add(MIN_BLOCK)?) {
            return None;
        }
        let top = self.arena.newest()?.top;
        let payload = (top + HEADER_SIZE).next_multiple_of(align);
        let mut gap = payload - HEADER_SIZE - top;
        if gap != 0 && gap < MIN_BLOCK {
            gap += align;
        }
        if gap > 0 {
            let addr = self.arena.carve(gap)?.as_ptr() as usize;
            // SAFETY: the arena just carved `gap` bytes at `addr`, 16-aligned.
            let gap_block = unsafe { Block::at(addr) };
            gap_block.write_header(gap, false);
        }
        let addr = self.arena.carve(size)?.as_ptr() as usize;
        // SAFETY: the arena just carved `size` bytes at `addr`, 16-aligned.
        let block = unsafe { Block::at(addr) };
        block.write_header(size, false);
        Some(block)\n",
    );
    // Stage by stage: without reuse, a run of the threads/fork stage can grow to
    // gigabytes and time out on a loaded machine, so the stages are run one by one.
    let ran = check(&["--phase", "1", "--only", "api/alignment", path]);
    assert_eq!(ran.code, Some(0), "{}", ran.stdout);
    let ran = check(&["--phase", "1", "--only", "programs/gcc", path]);
    assert_eq!(ran.code, Some(0), "{}", ran.stdout);
    let ran = check(&["--phase", "1", "--only", "misuse/double-free", path]);
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    assert!(
        ran.stdout
            .contains("my-malloc: chapter 1, step 3 is not written yet: MyHeap::free"),
        "{}",
        ran.stdout
    );

    write_step(
        &starter,
        "src/heap.rs",
        "        let _ = ptr;\n        let _ = steps::not_written::<()>(&steps::FREE);\n        Ok(())\n",
        "        let block = self.block_of(ptr)?;
        if !block.is_used() {
            return Err(Fault::DoubleFree { addr: ptr.as_ptr() as usize });
        }
        block.set_used(false);
        block.set_next_free(self.free_list);
        self.free_list = Some(block);
        Ok(())\n",
    );
    write_step(
        &starter,
        "src/heap.rs",
        "        let _ = (size, align);\n        steps::not_written(&steps::FIRST_FIT)\n",
        "        let mut previous: Option<Block> = None;
        let mut current = self.free_list;
        while let Some(block) = current {
            let next = block.next_free();
            let aligned = (block.payload().as_ptr() as usize).is_multiple_of(align);
            if block.size() >= size && aligned {
                match previous {
                    None => self.free_list = next,
                    Some(previous) => previous.set_next_free(next),
                }
                return Some(block);
            }
            previous = Some(block);
            current = next;
        }
        None\n",
    );
    let ran = check(&["--phase", "1", "--no-timing", path]);
    assert_eq!(ran.code, Some(0), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("every stage run passed"),
        "{}",
        ran.stdout
    );
}
