//! Runs one command under an allocator `.so` with a time limit and captures what
//! happened: output, exit code or signal, or a time-out.
//!
//! The preload is set only in the child's environment; the harness itself never runs
//! on the allocator under test. Every run gets its own process group, so a time-out
//! also ends whatever the command started.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
        let outcome = self.run_unrecorded()?;
        RECORDED.with_borrow_mut(|recorded| {
            if let Some(runs) = recorded {
                runs.push((self.clone(), outcome.clone()));
            }
        });
        Ok(outcome)
    }

    /// The command as one would type it in a shell to repeat it: the folder, the
    /// variables set for it, the program and its arguments (standard input not shown).
    pub fn shell_command(&self) -> String {
        let mut words = Vec::new();
        if let Some(dir) = &self.cwd {
            words.push(format!("cd {} &&", shell_quote(&dir.to_string_lossy())));
        }
        if let Some(lib) = &self.preload {
            words.push(format!(
                "LD_PRELOAD={}",
                shell_quote(&lib.to_string_lossy())
            ));
        }
        for (key, value) in &self.env {
            let value = shell_quote(&value.to_string_lossy());
            words.push(format!("{}={value}", key.to_string_lossy()));
        }
        words.push(shell_quote(&self.program.to_string_lossy()));
        words.extend(self.args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        words.join(" ")
    }

    fn run_unrecorded(&self) -> std::io::Result<Outcome> {
        // Output goes to unlinked temporary files rather than pipes: no reader threads,
        // no deadlock on a full pipe, and a merged stream keeps its order.
        let mut stdout_file = scratch_file()?;
        let mut stderr_file = scratch_file()?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .process_group(0)
            .stdin(Stdio::piped());
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
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading its input closes the pipe: not an error.
            let _ = stdin.write_all(&self.stdin);
        }
        let pid = child.id() as libc::pid_t;
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
            if started.elapsed() >= self.timeout {
                // SAFETY: killpg only sends a signal; the group is the child's own.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
                let _ = child.wait();
                break (Ending::TimedOut(self.timeout), None);
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let elapsed = started.elapsed();
        Ok(Outcome {
            ending,
            stdout: read_all(&mut stdout_file)?,
            stderr: read_all(&mut stderr_file)?,
            elapsed,
            peak_rss_kib: usage.map(|u| u.ru_maxrss.max(0) as u64),
        })
    }
}

thread_local! {
    /// The runs made by this thread while [`recording`] is on.
    static RECORDED: std::cell::RefCell<Option<Vec<(Run, Outcome)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Calls `f`, and returns with its result every run that it made on this thread, in
/// order: what a check ran, so that a failure can show the command to repeat it.
pub fn recording<R>(f: impl FnOnce() -> R) -> (R, Vec<(Run, Outcome)>) {
    let outer = RECORDED.replace(Some(Vec::new()));
    let result = f();
    let runs = RECORDED.replace(outer).unwrap_or_default();
    (result, runs)
}

/// `word` quoted for `sh` when it holds anything but plain characters.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./=:@%+,-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
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
            Ending::Signalled(signal) => write!(f, "crashed with {}", signal_name(signal)),
            Ending::TimedOut(limit) => write!(f, "timed out after {} s", limit.as_secs_f64()),
        }
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

    #[test]
    fn runs_are_recorded_with_a_line_to_repeat_them() {
        let ((), runs) = recording(|| {
            let _ = Run::new("sh")
                .args(["-c", "exit 4"])
                .env("MALLOC_DEBUG", "1")
                .run();
        });
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0.shell_command(), "MALLOC_DEBUG=1 sh -c 'exit 4'");
        assert_eq!(runs[0].1.ending, Ending::Exited(4));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
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
