//! CHARX: a zip archive with the V3 card as `card.json` at its root and the card's assets as
//! files (referenced from `data.assets[].uri` as `embeded://path/in/zip`).
//!
//! Reading is defensive: at most [`MAX_ENTRIES`] entries, each at most [`MAX_ENTRY_BYTES`]
//! and all together at most [`MAX_TOTAL_BYTES`] uncompressed; an entry larger than
//! [`RATIO_FLOOR`] must not claim to expand more than [`MAX_RATIO`] times (zip bombs); every
//! entry is read through a reader limited to its declared size, so a lying header cannot make
//! us read (or allocate) more. Entry names must be plain relative paths ([`check_name`]).

use std::io::{Cursor, Read, Write};

use nexus_store::CompanionAsset;
use zip::ZipArchive;
use zip::write::{SimpleFileOptions, ZipWriter};

use crate::cards::{CardError, MAX_ASSET_BYTES, MAX_CARD_BYTES};

/// Most entries (files and folders) in one archive.
pub const MAX_ENTRIES: usize = 1_000;
/// Largest uncompressed file in an archive.
pub const MAX_ENTRY_BYTES: u64 = MAX_ASSET_BYTES as u64;
/// Largest uncompressed total of an archive.
pub const MAX_TOTAL_BYTES: u64 = MAX_CARD_BYTES as u64;
/// Largest accepted compression ratio of one entry above [`RATIO_FLOOR`] bytes.
pub const MAX_RATIO: u64 = 100;
/// Entries up to this size may have any ratio (a small, very repetitive JSON file is fine).
pub const RATIO_FLOOR: u64 = 1 << 20;

/// Name of the card inside the archive.
pub const CARD_JSON: &str = "card.json";

/// The files of a CHARX archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// The bytes of `card.json`.
    pub card_json: Vec<u8>,
    /// Every other file: `(path, bytes)`, in archive order.
    pub files: Vec<(String, Vec<u8>)>,
}

fn bad(message: impl Into<String>) -> CardError {
    CardError::Charx(message.into())
}

/// Checks that an archive path is a plain relative path: no absolute paths, drive letters,
/// backslashes, `.` or `..` components, empty components, control characters, and at most
/// [`CompanionAsset::MAX_NAME_CHARS`] characters (the store's rules, a bit stricter). Such names
/// are refused rather than "cleaned up".
pub fn check_name(name: &str) -> Result<(), CardError> {
    let unsafe_path = || CardError::UnsafePath(name.chars().take(200).collect());
    if name.is_empty()
        || name.chars().count() > CompanionAsset::MAX_NAME_CHARS
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains(':')
        || name.chars().any(char::is_control)
    {
        return Err(unsafe_path());
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(unsafe_path());
    }
    Ok(())
}

/// Reads a CHARX archive.
pub fn read(bytes: &[u8]) -> Result<Contents, CardError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(CardError::TooLarge(format!(
            "the archive has {} entries (at most {MAX_ENTRIES})",
            archive.len()
        )));
    }
    let mut total = 0u64;
    let mut card_json = None;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("entry {i} cannot be read: {e}")))?;
        let name = entry.name().to_owned();
        check_name(&name)?;
        if entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            return Err(CardError::UnsafePath(name));
        }
        let size = entry.size();
        let packed = entry.compressed_size().max(1);
        if size > MAX_ENTRY_BYTES {
            return Err(CardError::TooLarge(format!(
                "{name} is {size} bytes uncompressed (at most {MAX_ENTRY_BYTES})"
            )));
        }
        if size > RATIO_FLOOR && size / packed > MAX_RATIO {
            return Err(CardError::TooLarge(format!(
                "{name} expands {} times (at most {MAX_RATIO}): a zip bomb?",
                size / packed
            )));
        }
        total += size;
        if total > MAX_TOTAL_BYTES {
            return Err(CardError::TooLarge(format!(
                "the archive holds more than {MAX_TOTAL_BYTES} bytes uncompressed"
            )));
        }
        // Never trust the declared size: read at most that much plus one byte to notice a lie.
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut entry)
            .take(size + 1)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{name} cannot be decompressed: {e}")))?;
        if data.len() as u64 != size {
            return Err(bad(format!(
                "{name} does not have the size its header declares"
            )));
        }
        if name == CARD_JSON {
            card_json = Some(data);
        } else {
            files.push((name, data));
        }
    }
    let card_json = card_json.ok_or_else(|| {
        CardError::NotACard(format!(
            "the archive has no {CARD_JSON} at its root, so it is not a CHARX card"
        ))
    })?;
    Ok(Contents { card_json, files })
}

/// Writes a CHARX archive: `card.json` (deflated) and the files (stored as they are when they
/// are already compressed media, deflated otherwise).
pub fn write(card_json: &[u8], files: &[(&str, &[u8])]) -> Result<Vec<u8>, CardError> {
    let write_err = |e: zip::result::ZipError| CardError::Write(format!("CHARX archive: {e}"));
    let io_err = |e: std::io::Error| CardError::Write(format!("CHARX archive: {e}"));
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(CARD_JSON, deflated).map_err(write_err)?;
    zip.write_all(card_json).map_err(io_err)?;
    for (name, bytes) in files {
        check_name(name)?;
        let options = if is_compressed_media(name) {
            stored
        } else {
            deflated
        };
        zip.start_file(*name, options).map_err(write_err)?;
        zip.write_all(bytes).map_err(io_err)?;
    }
    Ok(zip.finish().map_err(write_err)?.into_inner())
}

fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_compressed_media(name: &str) -> bool {
    matches!(
        extension(name).as_str(),
        "png" | "jpg" | "jpeg" | "webp" | "gif" | "avif" | "mp3" | "ogg" | "mp4" | "webm"
    )
}

/// The media type of a file, from its extension.
pub fn media_type(name: &str) -> &'static str {
    match extension(name).as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "avif" => "image/avif",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "json" => "application/json",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_round_trips() {
        let bytes = write(
            b"{\"a\":1}",
            &[
                ("assets/icon/images/main.png", b"png bytes"),
                ("x_meta/1.json", b"{}"),
            ],
        )
        .expect("write");
        let contents = read(&bytes).expect("read");
        assert_eq!(contents.card_json, b"{\"a\":1}");
        assert_eq!(
            contents.files,
            vec![
                (
                    "assets/icon/images/main.png".to_owned(),
                    b"png bytes".to_vec()
                ),
                ("x_meta/1.json".to_owned(), b"{}".to_vec()),
            ]
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        for name in [
            "../evil",
            "a/../../b",
            "/etc/passwd",
            "C:/x",
            "a\\b",
            "a//b",
            "./a",
            "a/./b",
            "",
            "a\nb",
        ] {
            assert!(
                matches!(check_name(name), Err(CardError::UnsafePath(_))),
                "{name:?}"
            );
        }
        for name in [
            "card.json",
            "assets/icon/images/main.png",
            "dir/",
            "ünï/c.png",
        ] {
            check_name(name).expect(name);
        }
    }

    fn raw_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        // The writer refuses unsafe names, so tests build hostile archives directly.
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            zip.start_file(*name, options).expect("start");
            zip.write_all(bytes).expect("write");
        }
        zip.finish().expect("finish").into_inner()
    }

    #[test]
    fn hostile_archives_are_clear_errors() {
        let traversal = raw_zip(&[("card.json", b"{}"), ("../../outside.png", b"x")]);
        assert!(matches!(read(&traversal), Err(CardError::UnsafePath(_))));

        let no_card = raw_zip(&[("other.json", b"{}")]);
        assert!(matches!(read(&no_card), Err(CardError::NotACard(_))));

        // 10 MB of zeros compresses to about 10 KB: refused by ratio before inflating.
        let zeros = vec![0u8; 10 << 20];
        let bomb = raw_zip(&[("card.json", b"{}"), ("assets/bomb.bin", &zeros)]);
        let err = read(&bomb).expect_err("bomb");
        assert!(matches!(err, CardError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("zip bomb"), "{err}");

        let many: Vec<(String, Vec<u8>)> = (0..=MAX_ENTRIES)
            .map(|i| (format!("f{i}"), Vec::new()))
            .collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let err = read(&raw_zip(&refs)).expect_err("too many");
        assert!(err.to_string().contains("entries"), "{err}");

        assert!(matches!(
            read(b"PK\x03\x04garbage"),
            Err(CardError::Charx(_))
        ));
    }

    #[test]
    fn a_lying_size_header_is_caught() {
        let mut bytes = raw_zip(&[("card.json", b"{\"name\":\"a long enough text\"}")]);
        // Patch the uncompressed size in the central directory (and local header) to 3.
        let cd = bytes
            .windows(4)
            .rposition(|w| w == b"PK\x01\x02")
            .expect("central directory");
        bytes[cd + 24..cd + 28].copy_from_slice(&3u32.to_le_bytes());
        bytes[22..26].copy_from_slice(&3u32.to_le_bytes());
        assert!(read(&bytes).is_err());
    }
}
