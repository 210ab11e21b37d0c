//! Cache layout, hashing and the `.verified` stamps that let `ensure` skip re-hashing.
//!
//! Layout of a model directory `<cache>/<id>/`:
//! - `<name>`: a verified model file (only ever created by an atomic rename);
//! - `.<name>.verified`: stamp `v1 size=.. mtime_ns=.. sha256=.. stamped_ns=..` written after
//!   the file was hashed; while size and mtime are unchanged the file is trusted;
//! - `.lock`: advisory lock held while fetching;
//! - `<name>.XXXXXX.partial`, `.fetch-XXXXXX/`: temporary, removed on success or failure.
//!
//! Racy stamps: file systems take timestamps from a coarse clock, so a write right after the
//! file was hashed could keep the same mtime. As in git's "racy index" rule, a stamp taken less
//! than [`RACY_WINDOW`] after the file's mtime is not trusted (the file is hashed again and
//! re-stamped). Extracted files are back-dated by more than the window, so any later write
//! changes their mtime and the stamp is usable right away.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Result, io_err};
use crate::manifest::ModelFile;

/// A stamp is trusted only if taken at least this long after the file's mtime.
pub(crate) const RACY_WINDOW: Duration = Duration::from_secs(3);

/// How much older than "now" an extracted file's mtime is set.
pub(crate) const BACKDATE: Duration = Duration::from_secs(10);

const BUF_SIZE: usize = 1 << 20;

/// State of one cached file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Present with the expected size and SHA-256.
    Ok,
    /// Not present.
    Missing,
    /// Present with the wrong size (truncated or otherwise damaged).
    WrongSize {
        /// Size found on disk.
        found: u64,
    },
    /// Right size, wrong content.
    WrongHash {
        /// SHA-256 found on disk.
        found: String,
    },
}

impl FileStatus {
    /// `true` for [`FileStatus::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, FileStatus::Ok)
    }

    /// Human description of a problem against the expected file, `None` if OK.
    pub fn problem(&self, expected: &ModelFile) -> Option<String> {
        match self {
            FileStatus::Ok => None,
            FileStatus::Missing => Some("missing".to_owned()),
            FileStatus::WrongSize { found } => Some(format!(
                "wrong size (truncated or damaged): expected {} bytes, found {found}",
                expected.size
            )),
            FileStatus::WrongHash { found } => Some(format!(
                "corrupt: expected sha256 {}, found {found}",
                expected.sha256
            )),
        }
    }
}

/// Result of the cheap check (no hashing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Quick {
    /// Size matches and a trusted stamp vouches for the content.
    Stamped,
    /// Size matches but the content must be hashed.
    NeedsHash,
    /// Definitely bad.
    Bad(FileStatus),
}

pub(crate) fn stamp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.verified"))
}

fn nanos(t: SystemTime) -> Option<u128> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_nanos())
}

fn mtime_ns(meta: &Metadata) -> Option<u128> {
    meta.modified().ok().and_then(nanos)
}

#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
    sha256: String,
    stamped_ns: u128,
}

impl Stamp {
    fn render(&self) -> String {
        format!(
            "v1 size={} mtime_ns={} sha256={} stamped_ns={}\n",
            self.size, self.mtime_ns, self.sha256, self.stamped_ns
        )
    }

    fn parse(text: &str) -> Option<Stamp> {
        let mut words = text.split_whitespace();
        if words.next()? != "v1" {
            return None;
        }
        let (mut size, mut mtime, mut sha, mut stamped) = (None, None, None, None);
        for w in words {
            let (k, v) = w.split_once('=')?;
            match k {
                "size" => size = v.parse().ok(),
                "mtime_ns" => mtime = v.parse().ok(),
                "sha256" => sha = Some(v.to_owned()),
                "stamped_ns" => stamped = v.parse().ok(),
                _ => {}
            }
        }
        Some(Stamp {
            size: size?,
            mtime_ns: mtime?,
            sha256: sha?,
            stamped_ns: stamped?,
        })
    }

    fn trusted_for(&self, file: &ModelFile, meta: &Metadata) -> bool {
        let Some(mtime) = mtime_ns(meta) else {
            return false;
        };
        self.size == file.size
            && self.size == meta.len()
            && self.sha256 == file.sha256
            && self.mtime_ns == mtime
            && self.stamped_ns >= mtime.saturating_add(RACY_WINDOW.as_nanos())
    }
}

/// Cheap check of `dir/name`: existence, size, stamp.
pub(crate) fn quick_check(dir: &Path, file: &ModelFile) -> Quick {
    let path = dir.join(&file.name);
    let meta = match fs::metadata(&path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Quick::Bad(FileStatus::Missing),
        Err(_) => return Quick::Bad(FileStatus::Missing),
    };
    if meta.len() != file.size {
        return Quick::Bad(FileStatus::WrongSize { found: meta.len() });
    }
    let stamp = fs::read_to_string(stamp_path(dir, &file.name))
        .ok()
        .and_then(|t| Stamp::parse(&t));
    match stamp {
        Some(s) if s.trusted_for(file, &meta) => Quick::Stamped,
        _ => Quick::NeedsHash,
    }
}

/// Records that `dir/name` was hashed and matched. Best effort: failures only cost a re-hash.
pub(crate) fn write_stamp(dir: &Path, file: &ModelFile) {
    let path = dir.join(&file.name);
    let Ok(meta) = fs::metadata(&path) else {
        return;
    };
    let (Some(mtime_ns), Some(stamped_ns)) = (mtime_ns(&meta), nanos(SystemTime::now())) else {
        return;
    };
    let stamp = Stamp {
        size: meta.len(),
        mtime_ns,
        sha256: file.sha256.clone(),
        stamped_ns,
    };
    let write = || -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".stamp.")
            .suffix(".partial")
            .tempfile_in(dir)?;
        tmp.write_all(stamp.render().as_bytes())?;
        tmp.persist(stamp_path(dir, &file.name))
            .map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::debug!("cannot write stamp for {}: {e}", path.display());
    }
}

pub(crate) fn remove_stamp(dir: &Path, name: &str) {
    let _ = fs::remove_file(stamp_path(dir, name));
}

/// Lowercase hex encoding.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Which side of [`copy_hashing`] failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Streams `reader` into `sink` (if any) while hashing; reads at most `limit` bytes.
/// Returns (bytes read, hex sha256). `on_progress` gets the byte count of each chunk.
pub(crate) fn copy_hashing(
    reader: &mut impl Read,
    mut sink: Option<&mut dyn Write>,
    limit: u64,
    mut on_progress: impl FnMut(u64),
) -> Result<(u64, String), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    let mut reader = reader.take(limit);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        if let Some(sink) = sink.as_mut() {
            sink.write_all(chunk).map_err(CopyError::Write)?;
        }
        total += n as u64;
        on_progress(n as u64);
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Hashes a whole file.
pub(crate) fn hash_file(path: &Path, on_progress: impl FnMut(u64)) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    copy_hashing(&mut f, None, u64::MAX, on_progress).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => io_err("read", path)(e),
    })
}

/// Best-effort fsync of a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip() {
        let s = Stamp {
            size: 3,
            mtime_ns: 5,
            sha256: "ab".into(),
            stamped_ns: 9,
        };
        assert_eq!(Stamp::parse(&s.render()), Some(s));
        assert_eq!(Stamp::parse("v2 size=1"), None);
        assert_eq!(Stamp::parse("v1 size=1 mtime_ns=2"), None);
        assert_eq!(Stamp::parse(""), None);
    }

    #[test]
    fn hashing() -> Result<(), CopyError> {
        let mut out = Vec::new();
        let (n, h) = copy_hashing(&mut &b"abc"[..], Some(&mut out), 10, |_| {})?;
        assert_eq!((n, out.as_slice()), (3, &b"abc"[..]));
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (n, _) = copy_hashing(&mut &b"abcdef"[..], None, 4, |_| {})?;
        assert_eq!(n, 4);
        Ok(())
    }
}
