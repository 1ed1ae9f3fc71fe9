//! Is this file an allocator the dynamic loader can preload here? Answered from the
//! file's bytes alone (no `dlopen`: loading a student's library into the grader would
//! run its constructors, and its `malloc`, inside the grader).
//!
//! The loader ignores a library it cannot preload (wrong class or machine) with one
//! warning on stderr and runs the program on glibc's malloc. Every check would then
//! pass on glibc's behalf, so the grader refuses such a file before grading it.

use std::path::Path;

/// ELF identification and header fields, from the System V ABI (`<elf.h>`).
const MAGIC: &[u8; 4] = b"\x7fELF";
const CLASS_64: u8 = 2;
const DATA_LITTLE_ENDIAN: u8 = 1;
/// `e_type` of a shared object (also of a position-independent executable).
const ET_DYN: u16 = 3;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const SYMBOL_SIZE: usize = 24;

/// `e_machine` of the machine the grader runs on.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: (u16, &str) = (62, "x86-64");
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: (u16, &str) = (183, "AArch64");
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_MACHINE: (u16, &str) = (0, "this machine");

/// The functions an allocator must define for programs to use it at all.
pub const REQUIRED: &[&str] = &["malloc", "free", "calloc", "realloc"];

/// The rest of the family, and what happens to a program when the library does not
/// define one: the dynamic loader finds glibc's, which runs on glibc's heap.
pub const FAMILY: &[(&str, &str)] = &[
    (
        "posix_memalign",
        "glibc's runs: its blocks come from glibc's heap, and your free later gets a pointer it never gave out",
    ),
    (
        "aligned_alloc",
        "glibc's runs: its blocks come from glibc's heap, and your free later gets a pointer it never gave out",
    ),
    (
        "memalign",
        "glibc's runs: its blocks come from glibc's heap, and your free later gets a pointer it never gave out",
    ),
    (
        "valloc",
        "glibc's runs: its blocks come from glibc's heap, and your free later gets a pointer it never gave out",
    ),
    (
        "pvalloc",
        "glibc's runs: its blocks come from glibc's heap, and your free later gets a pointer it never gave out",
    ),
    (
        "malloc_usable_size",
        "glibc's runs on your blocks and reads a chunk header that is not there: wrong sizes, or a crash",
    ),
    (
        "reallocarray",
        "glibc's checks the product and calls your realloc: harmless, but the phase asks for it",
    ),
];

/// The functions of [`FAMILY`] the library does not define, each with its consequence
/// (empty when the symbols cannot be listed).
pub fn missing_exports(path: &Path) -> Vec<(&'static str, &'static str)> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let elf = Elf { bytes: &bytes };
    match elf.defined_symbols() {
        Ok(Some(defined)) => FAMILY
            .iter()
            .filter(|(name, _)| !defined.iter().any(|d| d == name))
            .copied()
            .collect(),
        _ => Vec::new(),
    }
}

/// Why a file cannot be graded, in words an instructor can act on.
pub fn check_allocator(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let elf = Elf { bytes: &bytes };
    if bytes.len() < 64 || &bytes[..4] != MAGIC {
        return Err(format!(
            "not a shared object: it does not start with the ELF magic number (starts with {:?})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(16)])
        ));
    }
    if bytes[4] != CLASS_64 || bytes[5] != DATA_LITTLE_ENDIAN {
        return Err("not a 64-bit little-endian ELF file: it cannot be preloaded here".into());
    }
    let kind = elf.u16(16)?;
    if kind != ET_DYN {
        let what = match kind {
            1 => "a relocatable object (.o), not a shared object: link it with -shared",
            2 => "an executable, not a shared object",
            4 => "a core dump",
            _ => "not a shared object",
        };
        return Err(what.into());
    }
    let machine = elf.u16(18)?;
    if machine != HOST_MACHINE.0 {
        return Err(format!(
            "built for another processor (ELF machine {machine}); this machine needs {}",
            HOST_MACHINE.1
        ));
    }
    match elf.defined_symbols()? {
        // Stripped of section headers: the symbols cannot be listed from here; the
        // loader's own check (a trial run) still applies.
        None => Ok(()),
        Some(defined) => {
            let missing: Vec<&str> = REQUIRED
                .iter()
                .copied()
                .filter(|name| !defined.iter().any(|d| d == name))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "a shared object, but not an allocator: it does not export {}",
                    missing.join(", ")
                ))
            }
        }
    }
}

struct Elf<'a> {
    bytes: &'a [u8],
}

impl Elf<'_> {
    fn slice(&self, at: usize, len: usize) -> Result<&[u8], String> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| "a truncated or damaged ELF file".to_string())
    }

    fn u16(&self, at: usize) -> Result<u16, String> {
        let b = self.slice(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, at: usize) -> Result<u32, String> {
        let b = self.slice(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&self, at: usize) -> Result<usize, String> {
        let b = self.slice(at, 8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(word)).map_err(|_| "an ELF offset out of range".into())
    }

    /// The names of the global and weak symbols the dynamic symbol table defines;
    /// `None` when the file has no section headers to find that table by.
    fn defined_symbols(&self) -> Result<Option<Vec<String>>, String> {
        let table = self.u64(0x28)?;
        let entry_size = usize::from(self.u16(0x3a)?);
        let count = usize::from(self.u16(0x3c)?);
        if table == 0 || count == 0 {
            return Ok(None);
        }
        let header = |index: usize| table + index * entry_size;
        for index in 0..count {
            let at = header(index);
            if self.u32(at + 4)? != SHT_DYNSYM {
                continue;
            }
            let (offset, size) = (self.u64(at + 24)?, self.u64(at + 32)?);
            let strings_at = header(self.u32(at + 40)? as usize);
            let (strings, strings_size) = (self.u64(strings_at + 24)?, self.u64(strings_at + 32)?);
            let names = self.slice(strings, strings_size)?;
            let mut defined = Vec::new();
            for symbol in self.slice(offset, size)?.chunks_exact(SYMBOL_SIZE) {
                let name_at = u32::from_le_bytes([symbol[0], symbol[1], symbol[2], symbol[3]]);
                let binding = symbol[4] >> 4;
                let section = u16::from_le_bytes([symbol[6], symbol[7]]);
                if section == SHN_UNDEF || !matches!(binding, STB_GLOBAL | STB_WEAK) {
                    continue;
                }
                let name = names.get(name_at as usize..).unwrap_or(&[]);
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                defined.push(String::from_utf8_lossy(&name[..end]).into_owned());
            }
            return Ok(Some(defined));
        }
        Ok(Some(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mymalloc-elf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn text_is_not_a_shared_object() {
        let path = write("notes.so", b"this is not a library, just text\n");
        let problem = check_allocator(&path).unwrap_err();
        assert!(problem.starts_with("not a shared object"), "{problem}");
    }

    #[test]
    fn an_executable_without_malloc_is_refused() {
        // The grader's own test binary is an ELF file of this machine (a PIE, so
        // ET_DYN, exporting no malloc of its own).
        let me = std::env::current_exe().unwrap();
        let problem = check_allocator(&me).unwrap_err();
        assert!(
            problem.contains("not an allocator") || problem.contains("executable"),
            "{problem}"
        );
    }

    #[test]
    fn a_truncated_header_is_refused_not_read_past() {
        let mut bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        bytes.truncate(80);
        let path = write("truncated.so", &bytes);
        assert!(check_allocator(&path).is_err());
    }
}
