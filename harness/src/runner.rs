//! Runs one command under an allocator `.so` with a time limit and captures what
//! happened: output, exit code or signal, or a time-out.
//!
//! The preload is set only in the child's environment; the harness itself never runs
//! on the allocator under test. Every run gets its own process group, so a time-out
//! also ends whatever the command started.
//!
//! The time limit holds whatever the command does: its input is a file, not a pipe the
//! harness would block writing to when the command never reads it, and its output goes
//! to files, which never fill up the way a pipe does. What a caller sets for a stretch
//! of runs (a check's [`Limits`]: a deadline shared by all its runs, a ceiling on
//! output, the runs that crashed or hung) lives with the thread that runs them, so
//! the checks need not pass it along. [`end_children_on_signals`] makes a harness
//! that is interrupted end every process group it started before it dies.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Run {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The allocator to preload, or `None` for the C library's own.
    pub preload: Option<PathBuf>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    /// Send stderr into the same stream as stdout, so the two keep their order (for
    /// transcripts in which the allocator's output interleaves the program's).
    pub merge_stderr: bool,
}

impl Run {
    pub fn new(program: impl Into<OsString>) -> Run {
        Run {
            program: program.into(),
            args: Vec::new(),
            preload: None,
            env: Vec::new(),
            cwd: None,
            stdin: Vec::new(),
            timeout: Duration::from_secs(60),
            merge_stderr: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Run {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Run {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn preload(mut self, lib: Option<&Path>) -> Run {
        self.preload = lib.map(Path::to_path_buf);
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Run {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Run {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Run {
        self.stdin = bytes.into();
        self
    }

    pub fn timeout(mut self, limit: Duration) -> Run {
        self.timeout = limit;
        self
    }

    pub fn merge_stderr(mut self) -> Run {
        self.merge_stderr = true;
        self
    }

    /// Runs the command. `Err` only when it could not be started at all.
    pub fn run(&self) -> std::io::Result<Outcome> {
        let limits = LIMITS.with(|l| l.borrow().clone());
        // The thread's deadline can only shorten this run's own limit.
        let timeout = match limits.deadline {
            Some(deadline) => self
                .timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.timeout,
        };
        // Input from an unlinked file: the command reads it or not, as it likes, and
        // the harness never waits on it. Output goes to unlinked files rather than
        // pipes: no reader threads, no deadlock on a full pipe, and a merged stream
        // keeps its order.
        let mut stdin_file = scratch_file()?;
        stdin_file.write_all(&self.stdin)?;
        stdin_file.rewind()?;
        let mut stdout_file = scratch_file()?;
        let mut stderr_file = scratch_file()?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .process_group(0)
            .stdin(Stdio::from(stdin_file));
        if let Some(bytes) = limits.output {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            // SAFETY: runs in the forked child before exec; setrlimit is
            // async-signal-safe and touches only the child's own limits.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        command.stdout(stdout_file.try_clone()?);
        command.stderr(if self.merge_stderr {
            stdout_file.try_clone()?
        } else {
            stderr_file.try_clone()?
        });
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        // The harness may itself run under a preload (e.g. `just phase1 run`); the child
        // gets exactly the allocator asked for.
        command.env_remove("LD_PRELOAD");
        if let Some(lib) = &self.preload {
            command.env("LD_PRELOAD", lib);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }

        let started = Instant::now();
        let mut child = command.spawn()?;
        let pid = child.id() as libc::pid_t;
        let _registered = LiveGroup::register(pid);
        // Reaped with wait4 rather than std's wait, to learn the child's peak memory.
        let (ending, usage) = loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: waits without blocking for our own child, writing into locals.
            let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == pid {
                let ending = if libc::WIFEXITED(status) {
                    Ending::Exited(libc::WEXITSTATUS(status))
                } else if libc::WIFSIGNALED(status) {
                    Ending::Signalled(libc::WTERMSIG(status))
                } else {
                    Ending::Exited(-1)
                };
                // Whatever the command started and left behind (a forked child that
                // is stuck on the lock of the allocator under test, say) goes with it:
                // a check must not leave processes running.
                // SAFETY: killpg only sends a signal; the group is the child's own.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
                break (ending, Some(usage));
            }
            if reaped < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if started.elapsed() >= timeout {
                // SAFETY: killpg only sends a signal; the group is the child's own.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
                let _ = child.wait();
                break (Ending::TimedOut(timeout), None);
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let elapsed = started.elapsed();
        let outcome = Outcome {
            ending,
            stdout: read_all(&mut stdout_file)?,
            stderr: read_all(&mut stderr_file)?,
            elapsed,
            peak_rss_kib: usage.map(|u| u.ru_maxrss.max(0) as u64),
        };
        if self.preload.is_some() && !matches!(outcome.ending, Ending::Exited(_)) {
            LIMITS.with(|l| {
                l.borrow_mut().troubles.push(Trouble {
                    command: self.shell_command(),
                    gdb: self.gdb_command(),
                    ending: outcome.ending,
                    stdin_bytes: self.stdin.len(),
                })
            });
        }
        Ok(outcome)
    }

    /// The command as one line a person can paste into a shell to run it again alone:
    /// folder, preload, environment, program and arguments, each quoted.
    pub fn shell_command(&self) -> String {
        let mut words = Vec::new();
        if let Some(dir) = &self.cwd {
            words.push(format!("cd {} &&", quote(dir.as_os_str())));
        }
        if let Some(lib) = &self.preload {
            words.push(format!("LD_PRELOAD={}", quote(lib.as_os_str())));
        }
        for (key, value) in &self.env {
            words.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
        words.push(quote(&self.program));
        words.extend(self.args.iter().map(|a| quote(a)));
        words.join(" ")
    }

    /// The same run under gdb. `startup-with-shell off`: gdb otherwise starts the
    /// program through `/bin/sh`, which would run on the preloaded library too and
    /// may crash before the program is reached.
    pub fn gdb_command(&self) -> String {
        let mut words = Vec::new();
        if let Some(dir) = &self.cwd {
            words.push(format!("cd {} &&", quote(dir.as_os_str())));
        }
        words.push("gdb -q -ex 'set startup-with-shell off'".to_string());
        if let Some(lib) = &self.preload {
            let setting = format!(
                "set environment LD_PRELOAD={}",
                lib.as_os_str().to_string_lossy()
            );
            words.push(format!("-ex {}", quote(setting.as_ref())));
        }
        for (key, value) in &self.env {
            let setting = format!(
                "set environment {}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            );
            words.push(format!("-ex {}", quote(setting.as_ref())));
        }
        words.push("-ex run --args".to_string());
        words.push(quote(&self.program));
        words.extend(self.args.iter().map(|a| quote(a)));
        words.join(" ")
    }
}

/// `word` as the shell reads it back: bare when it is made of safe characters, in
/// single quotes otherwise.
fn quote(word: &std::ffi::OsStr) -> String {
    let text = word.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// What a stretch of runs on one thread shares (see [`with_limits`]).
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// No run may go on past this instant, whatever its own time limit.
    pub deadline: Option<Instant>,
    /// The most bytes a run may write to any one file, its output included
    /// (`RLIMIT_FSIZE`: beyond it the kernel sends `SIGXFSZ`).
    pub output: Option<u64>,
    troubles: Vec<Trouble>,
}

impl Limits {
    pub fn new(deadline: Option<Instant>, output: Option<u64>) -> Limits {
        Limits {
            deadline,
            output,
            troubles: Vec::new(),
        }
    }
}

/// A run under a preloaded library that crashed or hung: how to run it again.
#[derive(Clone, Debug)]
pub struct Trouble {
    /// The command line, for a shell.
    pub command: String,
    /// The same under gdb.
    pub gdb: String,
    pub ending: Ending,
    /// How much input the harness gave it (not part of `command`).
    pub stdin_bytes: usize,
}

thread_local! {
    static LIMITS: RefCell<Limits> = RefCell::new(Limits::default());
}

/// Runs `body` with `limits` applying to every [`Run`] it makes on this thread, and
/// returns what it returned with the runs under a preload that crashed or hung.
pub fn with_limits<T>(limits: Limits, body: impl FnOnce() -> T) -> (T, Vec<Trouble>) {
    let saved = LIMITS.with(|l| l.replace(limits));
    let result = body();
    let used = LIMITS.with(|l| l.replace(saved));
    (result, used.troubles)
}

/// The process groups of the runs in progress, for [`end_children_on_signals`]; 0 is
/// a free slot. More runs at once than slots only leaves the extra ones unlisted.
static LIVE_GROUPS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

/// A slot of [`LIVE_GROUPS`], freed when dropped.
struct LiveGroup(Option<&'static AtomicI32>);

impl LiveGroup {
    fn register(group: libc::pid_t) -> LiveGroup {
        let slot = LIVE_GROUPS.iter().find(|slot| {
            slot.compare_exchange(0, group, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        LiveGroup(slot)
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

extern "C" fn end_children_and_die(signal: libc::c_int) {
    for slot in &LIVE_GROUPS {
        let group = slot.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: killpg is async-signal-safe; the group is one this process made.
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    }
    // SAFETY: signal and raise are async-signal-safe: die of the same signal, as if
    // the harness had not caught it, so the shell sees why it ended.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

/// From now on SIGINT, SIGTERM and SIGHUP first end every process group this process
/// started (and still runs), then end the process as they would have.
pub fn end_children_on_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: an all-zero sigaction is valid; the handler only calls
        // async-signal-safe functions and reads atomics.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = end_children_and_die as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn scratch_file() -> std::io::Result<std::fs::File> {
    let dir = std::env::temp_dir();
    for attempt in 0..100u32 {
        let path = dir.join(format!(
            "mymalloc-run-{}-{attempt}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                let _ = std::fs::remove_file(&path);
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a scratch file"))
}

fn read_all(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signalled(i32),
    TimedOut(Duration),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    /// The child's `ru_maxrss`, unless it timed out. Linux carries it across `execve`, so
    /// it is at least the harness's own resident set when the child was started: an
    /// upper bound, not the child's own peak (a program reports that from `VmHWM`).
    pub peak_rss_kib: Option<u64>,
}

impl Outcome {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.ending {
            Ending::Exited(code) => Some(code),
            _ => None,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.ending == Ending::Exited(0)
    }
}

/// "exit 0", "exit 3: error: double free detected at 0x10", "crashed with SIGSEGV",
/// "timed out after 10 s": what a person needs to know about a run, in one line.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ending {
            Ending::Exited(code) => {
                write!(f, "exit {code}")?;
                let stderr = self.stderr_text();
                match stderr.lines().rev().find(|line| !line.trim().is_empty()) {
                    Some(last) if code != 0 => write!(f, ": {}", last.trim()),
                    _ => Ok(()),
                }
            }
            Ending::Signalled(libc::SIGXFSZ) => {
                write!(f, "was stopped for writing too much output (SIGXFSZ)")
            }
            Ending::Signalled(signal) => write!(f, "crashed with {}", signal_name(signal)),
            Ending::TimedOut(limit) => write!(f, "timed out after {} s", seconds(limit)),
        }
    }
}

/// A time limit in seconds, as a person writes it: `30`, `0.2`.
pub fn seconds(limit: Duration) -> String {
    let tenths = (limit.as_secs_f64() * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0}")
    } else {
        format!("{tenths:.1}")
    }
}

pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code() {
        let outcome = Run::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .run()
            .unwrap();
        assert_eq!(outcome.ending, Ending::Exited(3));
        assert_eq!(outcome.stdout_text(), "out\n");
        assert!(outcome.peak_rss_kib.is_some_and(|kib| kib > 0));
        assert_eq!(outcome.to_string(), "exit 3: err");
    }

    #[test]
    fn names_the_signal_of_a_crash() {
        let outcome = Run::new("sh").args(["-c", "kill -SEGV $$"]).run().unwrap();
        assert_eq!(outcome.to_string(), "crashed with SIGSEGV");
    }

    #[test]
    fn a_hang_is_cut_off_at_the_limit_with_its_children() {
        let outcome = Run::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap();
        assert_eq!(outcome.ending, Ending::TimedOut(Duration::from_millis(200)));
        assert!(outcome.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn what_the_command_leaves_running_is_ended_with_it() {
        let outcome = Run::new("sh")
            .args(["-c", "sleep 30 & echo $!"])
            .run()
            .unwrap();
        assert_eq!(outcome.ending, Ending::Exited(0));
        let straggler = outcome.stdout_text().trim().to_string();
        std::thread::sleep(Duration::from_millis(200));
        // Gone, or dead and waiting for init to reap it ("Z" in its stat line).
        let stat = std::fs::read_to_string(format!("/proc/{straggler}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        assert!(
            matches!(state, None | Some('Z')),
            "sleep {straggler} still runs: {stat}"
        );
    }

    /// A program that never reads its input, given more than a pipe holds, still ends
    /// at its time limit (it used to block the harness writing the input).
    #[test]
    fn a_program_that_never_reads_its_input_still_times_out() {
        let outcome = Run::new("sleep")
            .arg("30")
            .stdin(vec![b'x'; 4 << 20])
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap();
        assert_eq!(outcome.ending, Ending::TimedOut(Duration::from_millis(300)));
    }

    #[test]
    fn the_threads_deadline_shortens_every_run_and_its_output_limit_holds() {
        let deadline = Instant::now() + Duration::from_millis(300);
        let (outcome, troubles) = with_limits(Limits::new(Some(deadline), Some(1 << 20)), || {
            let endless = Run::new("yes").run().unwrap();
            let slow = Run::new("sleep").arg("30").run().unwrap();
            (endless, slow)
        });
        assert_eq!(outcome.0.ending, Ending::Signalled(libc::SIGXFSZ));
        assert!(outcome.0.stdout.len() <= 1 << 20);
        assert!(matches!(outcome.1.ending, Ending::TimedOut(_)));
        assert!(troubles.is_empty(), "no preload, nothing recorded");
    }

    #[test]
    fn a_crash_under_a_preload_is_recorded_with_its_commands() {
        let (_, troubles) = with_limits(Limits::default(), || {
            Run::new("sh")
                .args(["-c", "kill -SEGV $$"])
                .preload(Some(Path::new("/no such/lib.so")))
                .cwd("/tmp")
                .run()
                .unwrap()
        });
        assert_eq!(troubles.len(), 1);
        assert_eq!(
            troubles[0].command,
            "cd /tmp && LD_PRELOAD='/no such/lib.so' sh -c 'kill -SEGV $$'"
        );
        assert!(troubles[0].gdb.contains("-ex 'set startup-with-shell off'"));
        assert!(
            troubles[0]
                .gdb
                .contains("-ex 'set environment LD_PRELOAD=/no such/lib.so'")
        );
    }

    #[test]
    fn merged_output_keeps_its_order() {
        let outcome = Run::new("sh")
            .args(["-c", "echo 1; echo 2 >&2; echo 3"])
            .merge_stderr()
            .run()
            .unwrap();
        assert_eq!(outcome.stdout_text(), "1\n2\n3\n");
    }
}
