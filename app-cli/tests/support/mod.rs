//! Running the `nexus` binary as a user would, shared by the CLI test files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The models cache, populated (once) through the project's fetch step.
pub fn models_dir() -> PathBuf {
    let gguf = nexus_testing::models::chat_gguf();
    let _ = nexus_testing::models::embedding_dir();
    gguf.parent()
        .and_then(Path::parent)
        .expect("cache layout <cache>/<id>/<file>")
        .to_path_buf()
}

/// `nexus` with this data directory and the test models.
pub fn nexus(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus"));
    c.env("NEXUS_DATA_DIR", data)
        .env("NEXUS_MODELS_DIR", models_dir())
        .env_remove("NEXUS_ENGINE")
        .stdin(Stdio::null());
    c
}

/// Runs `nexus ARGS`.
pub fn run(data: &Path, args: &[&str]) -> Output {
    nexus(data).args(args).output().expect("run nexus")
}

/// Runs `nexus ARGS` for commands that never touch the models (the models directory is an
/// empty folder inside the data directory).
pub fn run_without_models(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .env("NEXUS_DATA_DIR", data)
        .env("NEXUS_MODELS_DIR", data.join("no-models"))
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("run nexus")
}

/// Runs `nexus ARGS` with `input` on standard input.
pub fn run_with_input(data: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = nexus(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output of a successful run (panics with both outputs otherwise).
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The exit code of a failed run.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Parses standard output as JSON.
pub fn json(o: Output) -> serde_json::Value {
    let out = ok(o);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Every file under `dir` (recursively) with its bytes.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

/// Whether `haystack` holds `needle` (ASCII case-insensitive).
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}
