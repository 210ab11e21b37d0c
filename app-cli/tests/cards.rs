//! `nexus card import|export`, run as a user would (no model needed).

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::{ok, run_without_models as run};

const V3_FULL: &str = include_str!("../../core/companion/tests/card_fixtures/v3_full.json");
const V2_FULL: &str = include_str!("../../core/companion/tests/card_fixtures/v2_full.json");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must fail with `code`, returning its stderr.
fn fails(o: Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn exported_json(data: &Path, name: &str, out: &Path) -> Value {
    ok(run(
        data,
        &[
            "card",
            "export",
            name,
            "--format",
            "json",
            "-o",
            path_str(out),
            "--force",
        ],
    ));
    serde_json::from_slice(&std::fs::read(out).expect("read export")).expect("JSON card")
}

#[test]
fn cards_import_and_export_in_every_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let card = tmp.path().join("seraphine.json");
    std::fs::write(&card, V3_FULL).expect("write card");

    let out = ok(run(&home, &["card", "import", path_str(&card)]));
    assert!(
        out.contains("Imported Seraphine") && out.contains("V3 JSON card"),
        "{out}"
    );
    assert!(out.contains("5 lorebook entries"), "{out}");
    let shown: Value = serde_json::from_str(&ok(run(
        &home,
        &["companion", "show", "Seraphine", "--json"],
    )))
    .expect("show --json");
    assert_eq!(shown["personality"], "gentle, protective, wise");
    assert_eq!(shown["speaking_style"], "soft and slow");

    let reference = exported_json(&home, "Seraphine", &tmp.path().join("ref.json"));
    assert_eq!(reference["spec"], "chara_card_v3");
    let original: Value = serde_json::from_str(V3_FULL).expect("fixture");
    assert_eq!(
        reference["data"], original["data"],
        "JSON export keeps every field"
    );
    assert_eq!(reference["x_top_unknown"], original["x_top_unknown"]);

    for format in ["png", "charx", "json"] {
        let file = tmp.path().join(format!("export.{format}"));
        let msg = ok(run(
            &home,
            &[
                "card",
                "export",
                "seraphine",
                "--format",
                format,
                "-o",
                path_str(&file),
            ],
        ));
        assert!(msg.contains("Exported Seraphine"), "{msg}");
        let bytes = std::fs::read(&file).expect("exported file");
        match format {
            "png" => assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n")),
            "charx" => assert!(bytes.starts_with(b"PK")),
            _ => assert!(bytes.starts_with(b"{")),
        }
        // Into a fresh data directory, and back out as JSON: the same card.
        let other = tmp.path().join(format!("home-{format}"));
        let imported: Value = serde_json::from_str(&ok(run(
            &other,
            &["card", "import", path_str(&file), "--json"],
        )))
        .expect("import --json");
        assert_eq!(imported["name"], "Seraphine");
        assert_eq!(imported["spec"], "chara_card_v3");
        assert_eq!(imported["format"], format);
        let again = exported_json(
            &other,
            "Seraphine",
            &tmp.path().join(format!("{format}.json")),
        );
        assert_eq!(again, reference, "{format} round trip");
    }

    // The output format follows the file extension when --format is not given.
    let by_ext = tmp.path().join("by-extension.charx");
    ok(run(
        &home,
        &["card", "export", "Seraphine", "-o", path_str(&by_ext)],
    ));
    assert!(std::fs::read(&by_ext).expect("charx").starts_with(b"PK"));
}

#[test]
fn name_conflicts_and_bad_files_are_clear_errors_with_exit_code_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let card = tmp.path().join("v2.json");
    std::fs::write(&card, V2_FULL).expect("write card");
    ok(run(&home, &["card", "import", path_str(&card)]));

    let err = fails(run(&home, &["card", "import", path_str(&card)]), 2);
    assert!(
        err.contains("already exists") && err.contains("--name NEW"),
        "{err}"
    );
    let out = ok(run(
        &home,
        &["card", "import", path_str(&card), "--name", "Sera Two"],
    ));
    assert!(out.contains("Imported Sera Two"), "{out}");

    // A damaged PNG: export one, then cut it short and flip a byte of another copy.
    let png = tmp.path().join("sera.png");
    ok(run(
        &home,
        &["card", "export", "Sera Two", "-o", path_str(&png)],
    ));
    let bytes = std::fs::read(&png).expect("png");
    let truncated = tmp.path().join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let err = fails(run(&home, &["card", "import", path_str(&truncated)]), 2);
    assert!(err.contains("error: the PNG image is damaged"), "{err}");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x20;
    let corrupt = tmp.path().join("corrupt.png");
    std::fs::write(&corrupt, &flipped).expect("write");
    let err = fails(run(&home, &["card", "import", path_str(&corrupt)]), 2);
    assert!(err.contains("CRC"), "{err}");

    let not_a_card = tmp.path().join("notes.txt");
    std::fs::write(&not_a_card, "just some notes").expect("write");
    let err = fails(run(&home, &["card", "import", path_str(&not_a_card)]), 2);
    assert!(err.contains("not a character card"), "{err}");
    let wrong_spec = tmp.path().join("lorebook.json");
    std::fs::write(
        &wrong_spec,
        r#"{"spec": "lorebook_v3", "data": {"entries": []}}"#,
    )
    .expect("write");
    let err = fails(run(&home, &["card", "import", path_str(&wrong_spec)]), 2);
    assert!(err.contains("unsupported card format"), "{err}");
    let err = fails(
        run(
            &home,
            &["card", "import", path_str(&tmp.path().join("missing.png"))],
        ),
        2,
    );
    assert!(err.contains("cannot read"), "{err}");

    // Nothing half-imported: still exactly two companions.
    let list = ok(run(&home, &["companion", "list"]));
    assert_eq!(list.lines().count(), 2, "{list}");

    // Export refuses to overwrite, and an unknown companion is exit code 3.
    let err = fails(
        run(&home, &["card", "export", "Sera Two", "-o", path_str(&png)]),
        2,
    );
    assert!(err.contains("--force"), "{err}");
    fails(
        run(&home, &["card", "export", "Nobody", "-o", path_str(&png)]),
        3,
    );
    let err = fails(
        run(&home, &["card", "export", "Sera Two", "--format", "gif"]),
        2,
    );
    assert!(err.contains("gif"), "{err}");
}
