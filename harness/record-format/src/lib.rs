//! # record-format: one allocation call, as `malloc-recorder` writes it
//!
//! The recorder (`harness/recorder`, preloaded into a program by `harness record`)
//! appends one [`Record`] per allocation call to its file; the harness reads the file
//! back (`harness::threaded_trace::read_records`) and turns the records into a
//! threaded trace. Both sides use this crate, so the layout and the kinds' numbers are
//! written once.
//!
//! On disk a record is [`Record::BYTES`] bytes: its six fields in order, each a
//! native-endian `u64` (the file is read on the machine that wrote it).
//!
//! Encoding is on the recorder's `malloc` path, so it allocates nothing: `no_std`,
//! and [`Record::to_bytes`] returns an array by value.

#![no_std]

/// One call: what was called, by which thread, on what, and what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// [`Kind`] as its number ([`Kind::code`]).
    pub kind: u64,
    /// `pthread_self()` of the caller: distinct among live threads.
    pub thread: u64,
    /// The block passed in (`free`, `realloc`), or 0.
    pub old: u64,
    /// Bytes asked for (`calloc`: the product; `u64::MAX` if it overflows).
    pub size: u64,
    /// Alignment asked for (memalign family), or 0.
    pub align: u64,
    /// The block returned, or 0.
    pub result: u64,
}

/// What [`Record::kind`] means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Kind {
    Malloc = 1,
    Free = 2,
    Calloc = 3,
    Realloc = 4,
    /// `memalign`, `aligned_alloc` and `posix_memalign`.
    Memalign = 5,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Malloc,
        Kind::Free,
        Kind::Calloc,
        Kind::Realloc,
        Kind::Memalign,
    ];

    /// The number a record holds for this kind.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The kind numbered `code`, if any.
    pub fn from_code(code: u64) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

impl Record {
    /// A record's size in the file.
    pub const BYTES: usize = 6 * 8;

    /// The record as the file holds it.
    pub fn to_bytes(&self) -> [u8; Record::BYTES] {
        let mut bytes = [0u8; Record::BYTES];
        let fields = [
            self.kind,
            self.thread,
            self.old,
            self.size,
            self.align,
            self.result,
        ];
        for (room, field) in bytes.chunks_exact_mut(8).zip(fields) {
            room.copy_from_slice(&field.to_ne_bytes());
        }
        bytes
    }

    /// The record that [`Record::to_bytes`] wrote as `bytes`.
    pub fn from_bytes(bytes: &[u8; Record::BYTES]) -> Record {
        let mut fields = [0u64; 6];
        for (field, word) in fields.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut buffer = [0u8; 8];
            buffer.copy_from_slice(word);
            *field = u64::from_ne_bytes(buffer);
        }
        let [kind, thread, old, size, align, result] = fields;
        Record {
            kind,
            thread,
            old,
            size,
            align,
            result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let record = Record {
            kind: Kind::Realloc.code(),
            thread: 0x7f00_0000_1234,
            old: 0x5555_0000_0010,
            size: 100,
            align: 0,
            result: u64::MAX,
        };
        let bytes = record.to_bytes();
        assert_eq!(Record::from_bytes(&bytes), record);
        assert_eq!(bytes[..8], 4u64.to_ne_bytes(), "the kind comes first");
        assert_eq!(bytes[40..], u64::MAX.to_ne_bytes(), "the result last");
    }

    #[test]
    fn kinds_keep_their_numbers() {
        let codes = Kind::ALL.map(Kind::code);
        assert_eq!(
            codes,
            [1, 2, 3, 4, 5],
            "the files already written use these"
        );
        assert_eq!(Kind::from_code(3), Some(Kind::Calloc));
        assert_eq!(Kind::from_code(0), None);
        assert_eq!(Kind::from_code(6), None);
    }
}
